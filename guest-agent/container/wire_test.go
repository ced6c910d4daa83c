package container

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/seccomp"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// fullSpec sets every field the init reads, and some it does not.
func fullSpec() *specs.Spec {
	umask, uid, gid := uint32(0o22), uint32(7), uint32(8)
	mode := os.FileMode(0o620)
	oom := -500
	return &specs.Spec{
		Version: specs.Version, Hostname: "box", Domainname: "example",
		Root: &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Terminal: true, Args: []string{"sh", "-c", "echo ü\x01"}, Env: []string{"PATH=/bin", "A="},
			Cwd:  "/work",
			User: specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{1, 1 << 31}, Umask: &umask, Username: "www:staff"},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: 1 << 40, Soft: 1024},
			},
			Capabilities:    &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_KILL"}, Effective: []string{"CAP_CHOWN"}},
			NoNewPrivileges: true, OOMScoreAdj: &oom,
			ConsoleSize: &specs.Box{Height: 24, Width: 80},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec"}},
			{Destination: "/data", Type: "bind", Source: "/run/v", Options: []string{"rbind", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces:        []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/x"}},
			RootfsPropagation: "rslave",
			Devices: []specs.LinuxDevice{
				{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode, UID: &uid, GID: &gid},
				{Path: "/dev/sda", Type: "b", Major: 8, Minor: 0},
			},
			Sysctl:        map[string]string{"net.ipv4.ip_forward": "1", "kernel.msgmax": "8192"},
			MaskedPaths:   []string{"/proc/kcore"},
			ReadonlyPaths: []string{"/proc/sys"},
			Resources:     &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: new(int64)}},
		},
	}
}

// initView is fullSpec as the init sees it: the fields it reads, nothing else.
func initView() *specs.Spec {
	s := fullSpec()
	s.Version = ""
	s.Root = &specs.Root{Readonly: true}
	s.Process.Capabilities.Effective = nil
	s.Process.ConsoleSize = nil
	s.Linux.Resources = nil
	return s
}

// testFilter is a filter with every field set, at their widest.
func testFilter() *seccomp.Filter {
	return &seccomp.Filter{Flags: 6, Program: []unix.SockFilter{
		{Code: 0x20, K: 4}, {Code: 0x15, Jt: 1, Jf: 0, K: 0xc000003e}, {Code: 0xffff, Jt: 255, Jf: 255, K: 0xffffffff}}}
}

func TestWireRoundTrip(t *testing.T) {
	minimal := &specs.Spec{Process: &specs.Process{Args: []string{"true"}}, Linux: &specs.Linux{}}
	tests := []struct {
		name string
		in   syncMsg
		want syncMsg
	}{
		{"start", syncMsg{Type: msgStart}, syncMsg{Type: msgStart}},
		{"error", syncMsg{Type: msgError, Kind: "not_found", Msg: "exec: \"x\": not found"},
			syncMsg{Type: msgError, Kind: "not_found", Msg: "exec: \"x\": not found"}},
		{"ready without marks", syncMsg{Type: msgReady}, syncMsg{Type: msgReady}},
		{"ready with marks", syncMsg{Type: msgReady, Mark: []trace.Mark{{Name: "a", At: 1}, {Name: "", At: -5}}},
			syncMsg{Type: msgReady, Mark: []trace.Mark{{Name: "a", At: 1}, {Name: "", At: -5}}}},
		{"config: what the init reads", syncMsg{Type: msgConfig, Cfg: initConfig{Rootfs: "/r", DevPts: "/dev/pts", Spec: fullSpec(), Trace: true, Pause: true, Reap: true,
			GroupAdd: []string{"audio", "42"}, Privileged: true, Filter: testFilter()}},
			syncMsg{Type: msgConfig, Cfg: initConfig{Rootfs: "/r", DevPts: "/dev/pts", Spec: initView(), Trace: true, Pause: true, Reap: true,
				GroupAdd: []string{"audio", "42"}, Privileged: true, Filter: testFilter()}}},
		{"exec", syncMsg{Type: msgExec, Cfg: initConfig{Spec: minimal, GroupAdd: []string{"7"}, Filter: &seccomp.Filter{}}},
			syncMsg{Type: msgExec, Cfg: initConfig{Spec: minimal, GroupAdd: []string{"7"}, Filter: &seccomp.Filter{}}}},
		{"config: minimal spec", syncMsg{Type: msgConfig, Cfg: initConfig{Spec: minimal}},
			syncMsg{Type: msgConfig, Cfg: initConfig{Spec: &specs.Spec{Process: &specs.Process{Args: []string{"true"}}, Linux: &specs.Linux{}}}}},
		{"config: incomplete spec stays incomplete", syncMsg{Type: msgConfig, Cfg: initConfig{Rootfs: "/r", Spec: &specs.Spec{}}},
			syncMsg{Type: msgConfig, Cfg: initConfig{Rootfs: "/r"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeSync(&buf, tt.in); err != nil {
				t.Fatal(err)
			}
			got, err := readSync(&buf)
			if err != nil {
				t.Fatalf("readSync: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("round trip =\n%#v\nwant\n%#v", got, tt.want)
			}
			if _, err := readSync(&buf); err != io.EOF {
				t.Errorf("readSync at the end = %v, want io.EOF", err)
			}
		})
	}
}

func TestWireMalformed(t *testing.T) {
	var good bytes.Buffer
	writeSync(&good, syncMsg{Type: msgConfig, Cfg: initConfig{Rootfs: "/r", Spec: fullSpec()}})
	frame := good.Bytes()
	tests := []struct {
		name string
		in   []byte
	}{
		{"truncated header", []byte{0, 0}},
		{"zero length", []byte{0, 0, 0, 0}},
		{"too long", []byte{0xff, 0xff, 0xff, 0xff}},
		{"truncated payload", frame[:len(frame)-3]},
		{"unknown type", []byte{0, 0, 0, 1, 'X'}},
		{"string past the end", []byte{0, 0, 0, 3, msgError, 50, 'a'}},
		{"list longer than the bytes left", []byte{0, 0, 0, 3, msgReady, 100, 0}},
		{"bad flag", []byte{0, 0, 0, 5, msgConfig, 0, 0, 7, 0}},
		{"bytes left over", []byte{0, 0, 0, 2, msgStart, 0}},
		// A filter (flag 1, flags 0, one instruction) whose jump
		// offset does not fit a byte.
		{"bad filter instruction", []byte{0, 0, 0, 16, msgConfig, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0x20, 0x80, 0x02, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := readSync(bytes.NewReader(tt.in)); !errors.Is(err, errMalformed) {
				t.Errorf("readSync(%q) = %v, want a malformed-message error", tt.in, err)
			}
		})
	}
}

func FuzzDecodeSync(f *testing.F) {
	for _, m := range []syncMsg{
		{Type: msgStart}, {Type: msgError, Kind: "k", Msg: "m"},
		{Type: msgReady, Mark: []trace.Mark{{Name: "a", At: 3}}},
		{Type: msgConfig, Cfg: initConfig{Rootfs: "/r", Spec: fullSpec()}},
		{Type: msgExec, Cfg: initConfig{Spec: fullSpec(), Privileged: true, Filter: testFilter()}},
	} {
		var buf bytes.Buffer
		writeSync(&buf, m)
		f.Add(buf.Bytes()[4:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeSync(b)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		var buf bytes.Buffer
		if err := writeSync(&buf, m); err != nil {
			t.Fatal(err)
		}
		again, err := decodeSync(buf.Bytes()[4:])
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-decode = %#v, %v; want %#v", again, err, m)
		}
	})
}
