package main

import (
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/machine"
)

func TestDiskFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    machine.Disk
		wantErr bool
	}{
		{in: "a.img", want: machine.Disk{Path: "a.img"}},
		{in: "a.img,ro", want: machine.Disk{Path: "a.img", ReadOnly: true}},
		{in: "a.img,serial=root,ro", want: machine.Disk{Path: "a.img", Serial: "root", ReadOnly: true}},
		{in: ",ro", wantErr: true},
		{in: "a.img,rw", wantErr: true},
	}
	for _, tt := range tests {
		var d diskFlags
		err := d.Set(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Set(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (len(d) != 1 || d[0] != tt.want) {
			t.Errorf("Set(%q) = %+v, want %+v", tt.in, d, tt.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, exitUsage},
		{[]string{"-kernel", "k", "extra"}, exitUsage},
		{[]string{"-kernel", "k", "-vcpus", "0x"}, exitUsage},
		{[]string{"-kernel", "k", "-memory", "7"}, exitUsage},
		{[]string{"-kernel", "k", "-disk", "d,bogus"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "t0", "-mac", "zz"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "t0", "-mac", "01:00:00:00:00:01"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "t0", "-mac", "00:00:00:00:00:00"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "t0", "-mtu", "67"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "t0", "-mtu", "65536"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "t0", "-mtu", "x"}, exitUsage},
		{[]string{"-kernel", "k", "-mtu", "1500"}, exitUsage},
		{[]string{"-kernel", "k", "-mac", "02:00:00:00:00:01"}, exitUsage},
		{[]string{"-kernel", "k", "-tap", "a-name-over-15-bytes"}, exitUsage},
		{[]string{"-kernel", "k", "-log-level", "loud"}, exitUsage},
		{[]string{"-kernel", "k", "-save-to", "d"}, exitUsage},
		{[]string{"-kernel", "k", "-control", "c", "-save-state-fd", "4"}, exitUsage},
		{[]string{"-restore-state-fd", "4"}, exitUsage},
		{[]string{"-restore", "d", "-ram-fd", "4"}, exitUsage},
		{[]string{"-kernel", "k", "-control", "c", "-ram-fd", "4", "-save-state-fd", "5", "-save-to", "d"}, exitUsage},
		{[]string{"-restore", t.TempDir()}, exitSetup}, // no saved VM there
		{[]string{"-kernel", "k", "-tap", "t0", "-detached-nic"}, exitUsage},
		{[]string{"-help"}, 0},
	}
	for _, tt := range tests {
		if got := run(time.Now(), tt.args); got != tt.want {
			t.Errorf("run(%q) = %d, want %d", tt.args, got, tt.want)
		}
	}
}

// Where /dev/kvm cannot run Linux, vmctl-vmm says so and exits 3 at once.
func TestLimitedKVMExitCode(t *testing.T) {
	if machine.DefaultHost.CheckHost() == nil {
		t.Skip("this host's /dev/kvm runs full guests")
	}
	start := time.Now()
	if got := run(start, []string{"-kernel", "/nonexistent", "-console", ""}); got != exitHostKVM {
		t.Errorf("exit code %d, want %d", got, exitHostKVM)
	}
	if time.Since(start) > time.Second {
		t.Errorf("took %s to fail", time.Since(start))
	}
}

func TestShareFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    machine.Share
		wantErr bool
	}{
		{in: "/srv/data,tag=bind0", want: machine.Share{Path: "/srv/data", Tag: "bind0"}},
		{in: "/srv/data,tag=b,ro", want: machine.Share{Path: "/srv/data", Tag: "b", ReadOnly: true}},
		{in: "/srv/data", wantErr: true},
		{in: ",tag=b", wantErr: true},
		{in: "/srv/data,tag=b,rw", wantErr: true},
	}
	for _, tt := range tests {
		var f shareFlags
		err := f.Set(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Set(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (len(f) != 1 || f[0] != tt.want) {
			t.Errorf("Set(%q) = %+v, want %+v", tt.in, f, tt.want)
		}
	}
}
