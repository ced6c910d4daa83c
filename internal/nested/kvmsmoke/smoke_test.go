package kvmsmoke

import (
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestRun runs the smoke guest on this machine's /dev/kvm. Tiny real-mode
// guests run on every KVM flavour vmctl meets, PVM included.
func TestRun(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm on this machine")
	}
	if os.Geteuid() != 0 {
		t.Skip("opening /dev/kvm needs root (or the kvm group)")
	}
	if err := IsKVMDevice("/dev/kvm"); err != nil {
		t.Fatalf("IsKVMDevice: %v", err)
	}
	res, err := Run("/dev/kvm")
	if err != nil {
		t.Fatalf("Run: %v (result so far %+v)", err, res)
	}
	want := Result{APIVersion: 12, Serial: "ok", Sum: sum, Stored: sum, Exits: 4}
	if res != want {
		t.Errorf("Run = %+v, want %+v", res, want)
	}
}

func TestRunBadDevice(t *testing.T) {
	if _, err := Run("/dev/null"); err == nil {
		t.Error("Run(/dev/null) succeeded, want an error")
	}
	if err := IsKVMDevice("/dev/null"); err == nil || !strings.Contains(err.Error(), "1:3") {
		t.Errorf("IsKVMDevice(/dev/null) = %v, want a wrong-device error", err)
	}
}

func TestCheck(t *testing.T) {
	good := Result{Serial: "ok", Sum: sum, Stored: sum}
	tests := []struct {
		name   string
		r      Result
		gotSum bool
		want   string // substring of the error, "" for success
	}{
		{"good", good, true, ""},
		{"no sum", good, false, "no OUT"},
		{"bad sum", Result{Serial: "ok", Sum: 1, Stored: sum}, true, "sum 0x1"},
		{"bad memory", Result{Serial: "ok", Sum: sum, Stored: 0}, true, "memory at 0x2000"},
		{"bad serial", Result{Serial: "o", Sum: sum, Stored: sum}, true, `serial "o"`},
	}
	for _, tt := range tests {
		err := check(tt.r, tt.gotSum)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: check = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestIOData(t *testing.T) {
	run := make([]byte, 4096)
	tests := []struct {
		name string
		io   ioExit
		ok   bool
	}{
		{"inside", ioExit{size: 2, count: 1, offset: 4094}, true},
		{"past end", ioExit{size: 2, count: 1, offset: 4095}, false},
		{"offset beyond", ioExit{size: 1, count: 1, offset: 1 << 40}, false},
		{"huge count", ioExit{size: 4, count: 0xffffffff, offset: 0}, false},
	}
	for _, tt := range tests {
		_, err := ioData(run, tt.io)
		if (err == nil) != tt.ok {
			t.Errorf("%s: ioData err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestStructSizes pins the mirrored kernel structs to the sizes the kernel
// encodes in the ioctl numbers.
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_userspace_memory_region", unsafe.Sizeof(memoryRegion{}), 32},
		{"kvm_regs", unsafe.Sizeof(regs{}), 144},
		{"kvm_segment", unsafe.Sizeof(segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(dtable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(sregs{}), 312},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}
