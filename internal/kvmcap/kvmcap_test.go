package kvmcap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	node := write("kvm", "")
	svm := write("svm", "processor\t: 0\nflags\t\t: fpu svm sse\n")
	vmx := write("vmx", "flags\t\t: fpu vmx\n")
	none := write("none", "flags\t\t: fpu sse2 hypervisor\n")
	pvm := write("kvm_pvm", "")
	absent := filepath.Join(dir, "absent")
	tests := []struct {
		name    string
		h       Host
		want    string
		cantRun bool
	}{
		{"svm", Host{node, svm, absent}, "", false},
		{"vmx", Host{node, vmx, absent}, "", false},
		{"no device", Host{absent, svm, absent}, "does not exist: KVM is not enabled on this host, so it cannot run full guests", true},
		{"pvm without flag", Host{node, none, pvm}, "PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag): it cannot run full guests", true},
		{"pvm with flag", Host{node, svm, pvm}, "PVM-flavoured KVM (kvm_pvm loaded): it cannot run full guests", true},
		{"no flag", Host{node, none, absent}, "no vmx/svm flag", true},
		{"no cpuinfo", Host{node, absent, absent}, "cannot read CPU flags", false},
	}
	for _, tt := range tests {
		err := tt.h.Check()
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: Check() = %v, want nil", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Check() = %v, want one line containing %q", tt.name, err, tt.want)
		}
		if got := errors.Is(err, ErrCannotRunGuests); got != tt.cantRun {
			t.Errorf("%s: errors.Is(ErrCannotRunGuests) = %v, want %v", tt.name, got, tt.cantRun)
		}
		if got, want := errors.Is(err, ErrNoDevice), tt.name == "no device"; got != want {
			t.Errorf("%s: errors.Is(ErrNoDevice) = %v, want %v", tt.name, got, want)
		}
	}
}

func TestVirtFlagAndPVM(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	absent := filepath.Join(dir, "absent")
	tests := []struct {
		cpuinfo, want string
	}{
		{"processor\t: 0\nflags\t\t: fpu vmx sse\n", "vmx"},
		{"flags\t\t: fpu svm\n", "svm"},
		{"flags\t\t: fpu sse2 hypervisor\nvmx flags\t: ept\n", ""}, // "vmx flags" lists VMX features, not the flag
		{"flags\t\t: vmxx svm_lock\n", ""},
	}
	for i, tt := range tests {
		h := Host{CPUInfo: write(fmt.Sprint("cpuinfo", i), tt.cpuinfo), PVMModule: absent}
		if got, err := h.VirtFlag(); got != tt.want || err != nil {
			t.Errorf("VirtFlag(%q) = %q, %v; want %q", tt.cpuinfo, got, err, tt.want)
		}
	}
	if _, err := (Host{CPUInfo: absent}).VirtFlag(); err == nil {
		t.Error("VirtFlag of a missing file: nil error")
	}
	if (Host{PVMModule: absent}).PVMLoaded() || !(Host{PVMModule: dir}).PVMLoaded() {
		t.Error("PVMLoaded does not follow the module's directory")
	}
}
