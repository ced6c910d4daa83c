package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost builds a fake /dev/kvm, /proc/cpuinfo and /sys/module/kvm_pvm.
func fakeHost(t *testing.T, devKVM bool, flags string, pvm bool) Host {
	t.Helper()
	dir := t.TempDir()
	h := Host{
		DevKVM:    filepath.Join(dir, "kvm"),
		CPUInfo:   filepath.Join(dir, "cpuinfo"),
		PVMModule: filepath.Join(dir, "kvm_pvm"),
	}
	if devKVM {
		if err := os.WriteFile(h.DevKVM, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cpuinfo := ""
	for cpu := range 2 {
		cpuinfo += "processor\t: " + string(rune('0'+cpu)) + "\nmodel name\t: Fake CPU\nflags\t\t: " + flags + "\n\n"
	}
	if err := os.WriteFile(h.CPUInfo, []byte(cpuinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	if pvm {
		if err := os.Mkdir(h.PVMModule, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestKVMCapability(t *testing.T) {
	tests := []struct {
		name       string
		devKVM     bool
		flags      string
		pvm        bool
		wantOK     bool
		wantReason string
	}{
		{"intel", true, "fpu vme vmx sse2", false, true, "runs full guests"},
		{"amd", true, "fpu svm lm", false, true, "runs full guests"},
		{"no device", false, "fpu vmx", false, false, "does not exist"},
		{"pvm without flags", true, "fpu sse2 hypervisor", true, false, "PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag): it cannot run full guests"},
		{"pvm with flag", true, "fpu vmx", true, false, "PVM-flavoured KVM (kvm_pvm loaded): it cannot run full guests"},
		{"no flags", true, "fpu sse2", false, false, "no vmx/svm flag"},
		{"flag prefix is not the flag", true, "vmxx svm_lock", false, false, "no vmx/svm flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, tt.devKVM, tt.flags, tt.pvm)
			ok, reason := h.KVMCapability()
			if ok != tt.wantOK || !strings.Contains(reason, tt.wantReason) {
				t.Errorf("KVMCapability() = %v, %q; want %v, containing %q", ok, reason, tt.wantOK, tt.wantReason)
			}
		})
	}
}

func TestKVMCapabilityUnreadableCPUInfo(t *testing.T) {
	h := fakeHost(t, true, "vmx", false)
	h.CPUInfo = filepath.Join(t.TempDir(), "missing")
	if ok, reason := h.KVMCapability(); ok || !strings.Contains(reason, "cannot read CPU flags") {
		t.Errorf("KVMCapability() = %v, %q; want false, cannot read CPU flags", ok, reason)
	}
}

func TestChoose(t *testing.T) {
	tests := []struct {
		name       string
		hv         string
		capable    bool
		want       Choice
		wantReason string
		wantErr    string
	}{
		{"auto capable", "auto", true, Choice{Driver: "kvm", Accel: "kvm"}, "native VMM", ""},
		{"empty is auto", "", false, Choice{Driver: "qemu", Accel: "tcg"}, "TCG software emulation: ", ""},
		{"auto on pvm", "auto", false, Choice{Driver: "qemu", Accel: "tcg"}, "kvm_pvm loaded", ""},
		{"qemu capable", "qemu", true, Choice{Driver: "qemu", Accel: "kvm"}, "KVM acceleration", ""},
		{"qemu on pvm", "qemu", false, Choice{Driver: "qemu", Accel: "tcg"}, "cannot run full guests", ""},
		{"kvm capable", "kvm", true, Choice{Driver: "kvm", Accel: "kvm"}, "native VMM", ""},
		{"kvm on pvm", "kvm", false, Choice{}, "", "hypervisor kvm: " + "/"},
		{"unknown", "xen", true, Choice{}, "", `unknown hypervisor "xen": use auto, kvm or qemu`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags := "fpu vmx"
			if !tt.capable {
				flags = "fpu"
			}
			h := fakeHost(t, true, flags, !tt.capable)
			got, err := h.Choose(tt.hv)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("Choose(%q) error = %v, want prefix %q", tt.hv, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose(%q) error = %v", tt.hv, err)
			}
			if got.Driver != tt.want.Driver || got.Accel != tt.want.Accel || !strings.Contains(got.Reason, tt.wantReason) {
				t.Errorf("Choose(%q) = %+v, want driver %s accel %s, reason containing %q",
					tt.hv, got, tt.want.Driver, tt.want.Accel, tt.wantReason)
			}
		})
	}
}

func TestCanRun(t *testing.T) {
	tests := []struct {
		name    string
		c       Choice
		capable bool
		wantErr string // "": runs
	}{
		{"kvm on a capable host", Choice{Driver: "kvm", Accel: "kvm"}, true, ""},
		{"kvm on pvm", Choice{Driver: "kvm", Accel: "kvm"}, false, "hypervisor kvm: /"},
		{"qemu kvm on a capable host", Choice{Driver: "qemu", Accel: "kvm"}, true, ""},
		{"qemu kvm on pvm", Choice{Driver: "qemu", Accel: "kvm"}, false, "hypervisor qemu with KVM acceleration: /"},
		{"qemu tcg anywhere", Choice{Driver: "qemu", Accel: "tcg"}, false, ""},
		{"auto is no choice", Choice{Driver: "auto", Accel: "kvm"}, true, `unknown hypervisor "auto"`},
		{"no accelerator", Choice{Driver: "qemu"}, true, `hypervisor qemu: unknown accelerator ""`},
		{"native VMM without KVM", Choice{Driver: "kvm", Accel: "tcg"}, true, "hypervisor kvm: accelerator \"tcg\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags := "fpu vmx"
			if !tt.capable {
				flags = "fpu"
			}
			h := fakeHost(t, true, flags, !tt.capable)
			err := h.CanRun(tt.c)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CanRun(%+v) = %v, want nil", tt.c, err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n")):
				t.Errorf("CanRun(%+v) = %v, want one line starting %q", tt.c, err, tt.wantErr)
			}
		})
	}
}
