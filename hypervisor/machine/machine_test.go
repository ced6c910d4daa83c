package machine

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults", Config{Kernel: "k"}, ""},
		{"no kernel", Config{}, "no kernel"},
		{"too many vcpus", Config{Kernel: "k", VCPUs: 65}, "vcpus 65"},
		{"negative vcpus", Config{Kernel: "k", VCPUs: -1}, "vcpus -1"},
		{"too little memory", Config{Kernel: "k", MemoryMiB: 8}, "memory 8 MiB"},
		{"odd memory", Config{Kernel: "k", MemoryMiB: 257}, "memory 257 MiB"},
		{"disk without path", Config{Kernel: "k", Disks: []Disk{{}}}, "disk 0: no path"},
		{"long serial", Config{Kernel: "k", Disks: []Disk{{Path: "d", Serial: strings.Repeat("s", 21)}}}, "longer than 20"},
		{"reserved cid", Config{Kernel: "k", Vsock: &Vsock{CID: 2, UDSPath: "v"}}, "cid 2"},
		{"vsock without socket", Config{Kernel: "k", Vsock: &Vsock{CID: 3}}, "no unix socket"},
		{"too many disks", Config{Kernel: "k", Disks: make([]Disk, 9)}, "9 disks"},
		{"share", Config{Kernel: "k", Shares: []Share{{Path: "/d", Tag: "t", ReadOnly: true}}}, ""},
		{"share without path", Config{Kernel: "k", Shares: []Share{{Tag: "t"}}}, "share 0: no path"},
		{"share without tag", Config{Kernel: "k", Shares: []Share{{Path: "/d"}}}, "share 0: tag"},
		{"share tag twice", Config{Kernel: "k", Shares: []Share{{Path: "/d", Tag: "t"}, {Path: "/e", Tag: "t"}}}, "used twice"},
		{"too many shares", Config{Kernel: "k", Shares: make([]Share, 5)}, "5 shared directories"},
		{"NUL in cmdline", Config{Kernel: "k", Cmdline: "a\x00b"}, "NUL"},
		{"no tap name", Config{Kernel: "k", Net: &Net{}}, "tap name"},
		{"long tap name", Config{Kernel: "k", Net: &Net{Tap: strings.Repeat("t", 16)}}, "tap name"},
		{"mtu too small", Config{Kernel: "k", Net: &Net{Tap: "t0", MTU: 67}}, "mtu 67"},
		{"mtu too large", Config{Kernel: "k", Net: &Net{Tap: "t0", MTU: 65536}}, "mtu 65536"},
		{"mtu in range", Config{Kernel: "k", Net: &Net{Tap: "t0", MTU: 9000}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tt.cfg.VCPUs != 1 || tt.cfg.MemoryMiB != 256 || tt.cfg.Host != DefaultHost || tt.cfg.Log == nil {
					t.Errorf("defaults not filled: %+v", tt.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestCheckHost(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kvmNode := write("kvm", "")
	withSVM := write("cpuinfo-svm", "processor\t: 0\nflags\t\t: fpu sse2 svm lm\n")
	withVMX := write("cpuinfo-vmx", "flags\t\t: fpu vmx\n")
	without := write("cpuinfo-none", "flags\t\t: fpu sse2 lm\n")
	pvm := filepath.Join(dir, "kvm_pvm")
	if err := os.Mkdir(pvm, 0o700); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent")
	tests := []struct {
		name    string
		h       Host
		wantErr string
	}{
		{"svm", Host{kvmNode, withSVM, absent}, ""},
		{"vmx", Host{kvmNode, withVMX, absent}, ""},
		{"no kvm", Host{absent, withSVM, absent}, "does not exist"},
		{"pvm without flag", Host{kvmNode, without, pvm}, "PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag)"},
		{"pvm with flag", Host{kvmNode, withSVM, pvm}, "PVM-flavoured KVM (kvm_pvm loaded)"},
		{"no flag", Host{kvmNode, without, absent}, "no vmx/svm flag"},
		{"no cpuinfo", Host{kvmNode, absent, absent}, "cannot read CPU flags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.CheckHost()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckHost() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// guestKernel returns the project's guest kernel and initramfs, or skips.
func guestKernel(t *testing.T) (kernel, initrd string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "bin", "guest")
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.img")
	if _, err := os.Stat(kernel); err != nil {
		t.Skip("bin/guest/vmlinuz not built: run make kernel")
	}
	if _, err := os.Stat(initrd); err != nil {
		initrd = ""
	}
	return kernel, initrd
}

func needKVM(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		t.Skipf("needs a usable /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// syncBuffer is a bytes.Buffer safe for the console writer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The whole machine builds around the real guest kernel (memory, irqchip,
// devices, virtio wiring, loader, vCPUs) and obeys pause, resume and stop
// while the guest runs. Booting Linux to the end is the nested harness's
// job: this host's KVM may not get past the decompressor.
func TestMachineBuildsAndRuns(t *testing.T) {
	needKVM(t)
	kernel, initrd := guestKernel(t)
	var console syncBuffer
	var logs syncBuffer
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var nic *Net
	if os.Geteuid() == 0 {
		nic = &Net{Tap: "vmctltest0"}
		createTap(t, nic.Tap, 0)
	} else {
		t.Log("not root: running without a virtio-net tap")
	}
	m, err := New(Config{
		Net: nic, Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 reboot=k panic=-1",
		VCPUs: 2, MemoryMiB: 128, Console: &console,
		Disks: []Disk{{Path: disk, Serial: "test"}},
		Vsock: &Vsock{CID: 3, UDSPath: filepath.Join(dir, "v.sock")},
		Log:   slog.New(slog.NewTextHandler(&logs, nil)), SkipHostCheck: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, want := range []string{"virtio_mmio.device=512@0xd0000000:5", "virtio_mmio.device=512@0xd0001000:6", "virtio_mmio.device=512@0xd0002000:7"} {
		if !strings.Contains(m.Cmdline, want) {
			t.Errorf("cmdline %q lacks %q", m.Cmdline, want)
		}
	}
	if nic != nil && !strings.Contains(m.Cmdline, "virtio_mmio.device=512@0xd0003000:9") {
		t.Errorf("cmdline %q lacks the net device on IRQ 9", m.Cmdline)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); !errors.Is(err, ErrState) {
		t.Errorf("second Start = %v, want ErrState", err)
	}
	// Let it run, then exercise the lifecycle; on a KVM that cannot run
	// Linux the guest may end by itself first, which must then carry a
	// non-zero code.
	select {
	case <-m.Done():
		if r := m.Wait(); r.Reason.ExitCode() == 0 {
			t.Fatalf("VM ended on its own with %v", r)
		}
		t.Skipf("guest ended early on this KVM: %v", m.Wait())
	case <-time.After(time.Second):
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if m.State() != vcpu.Paused {
		t.Errorf("state %v after Pause", m.State())
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	if m.State() != vcpu.Running {
		t.Errorf("state %v after Resume", m.State())
	}
	m.Stop()
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("VM did not stop within 5s")
	}
	if r := m.Wait(); r.Reason != vcpu.ReasonStopped {
		t.Errorf("result %v, want stopped", r)
	}
	if err := m.Resume(); !errors.Is(err, ErrState) {
		t.Errorf("Resume after exit = %v, want ErrState", err)
	}
	if m.State() != vcpu.Exited {
		t.Errorf("state %v after Wait", m.State())
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "v.sock")); err == nil {
		t.Error("the vsock socket outlived the machine")
	}
}

// Where /dev/kvm cannot run Linux, New fails at once with one line.
func TestNewFailsFastOnLimitedKVM(t *testing.T) {
	if DefaultHost.CheckHost() == nil {
		t.Skip("this host's /dev/kvm runs full guests")
	}
	start := time.Now()
	_, err := New(Config{Kernel: "/nonexistent"})
	if !errors.Is(err, ErrKVMCannotRunGuests) && !strings.Contains(err.Error(), "/dev/kvm") {
		t.Fatalf("New = %v, want the KVM capability error", err)
	}
	if strings.Contains(err.Error(), "\n") || time.Since(start) > time.Second {
		t.Errorf("error %q (after %s): want one line, at once", err, time.Since(start))
	}
}

// A build that fails after New started making things returns the error
// (and releases what it made) rather than panicking: here /dev/kvm is
// missing, past the host check.
func TestNewFailureReturnsError(t *testing.T) {
	host := DefaultHost
	host.DevKVM = filepath.Join(t.TempDir(), "no-kvm")
	m, err := New(Config{Kernel: "/nonexistent", Host: host, SkipHostCheck: true})
	if err == nil || m != nil {
		t.Fatalf("New = %v, %v; want no machine and an error", m, err)
	}
}

func TestMACFor(t *testing.T) {
	a, b := macFor("tap0"), macFor("tap1")
	if a == b || a != macFor("tap0") {
		t.Errorf("macFor not a stable function of the name: %x %x", a, b)
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("macFor(tap0) = %x: want unicast, locally administered", a)
	}
}
