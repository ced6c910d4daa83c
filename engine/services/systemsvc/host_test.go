package systemsvc

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/hostcheck"
)

func TestDescribeHost(t *testing.T) {
	cfg := HostConfig{Kernel: "/g/vmlinuz", Initrd: "/g/initramfs.img"}
	native := hostcheck.Report{
		Outer: hostcheck.Outer{Kind: hostcheck.BareMetal, Evidence: "no CPUID hypervisor bit"},
		KVMOK: true, KVM: "runs full guests", VirtFlag: "vmx", Virtualization: "available (Intel VT-x, the vmx flag)",
		Choice: sandbox.Choice{Driver: "kvm", Accel: "kvm", Reason: "the native VMM (vmctl-vmm): /dev/kvm runs full guests"},
	}
	emulated := hostcheck.Report{
		Outer: hostcheck.Outer{Kind: hostcheck.VirtualBox, Evidence: "DMI innotek GmbH VirtualBox"},
		KVM:   "/dev/kvm does not exist", Virtualization: "not available: VirtualBox does not pass VT-x/AMD-V on to this VM",
		Choice: sandbox.Choice{Driver: "qemu", Accel: "tcg", Reason: "qemu with TCG software emulation: /dev/kvm does not exist"},
		Advice: `VBoxManage modifyvm "<VM>" --nested-hw-virt on`,
	}
	qemuBoth := qemuProbe{path: "/usr/bin/qemu-system-x86_64", accels: []string{"kvm", "tcg"}}
	noQEMU := qemuProbe{err: errors.New("qemu-system-x86_64 not found: install qemu-system-x86")}
	tests := []struct {
		name       string
		r          hostcheck.Report
		q          qemuProbe
		hypervisor string
		qemu       string
		reason     string
	}{
		{"native VMM", native, qemuBoth, "kvm", "/usr/bin/qemu-system-x86_64 (accelerators kvm, tcg; usable here: kvm, tcg)", "native VMM"},
		{"native VMM without QEMU", native, noQEMU, "kvm", "not found: install qemu-system-x86", "native VMM"},
		{"emulation", emulated, qemuBoth, "qemu", "(accelerators kvm, tcg; usable here: tcg)", "TCG software emulation"},
		{"no QEMU to emulate with", emulated, noQEMU, "", "not found",
			"the native VMM cannot run (/dev/kvm does not exist), nor can QEMU (qemu-system-x86_64 not found: install qemu-system-x86)"},
		{"QEMU without TCG", emulated, qemuProbe{path: "/q", accels: []string{"kvm"}}, "", "/q (accelerators kvm; usable here: none)",
			"the native VMM cannot run (/dev/kvm does not exist), and /q has no tcg accelerator"},
		{"QEMU that lists nothing", emulated, qemuProbe{path: "/q"}, "qemu", "/q", "TCG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := describeHost(cfg, tt.r, tt.q)
			if h.Hypervisor != tt.hypervisor || !strings.Contains(h.QEMU, tt.qemu) || !strings.Contains(h.Reason, tt.reason) {
				t.Errorf("describeHost() = hypervisor %q, QEMU %q, reason %q; want %q, containing %q, %q",
					h.Hypervisor, h.QEMU, h.Reason, tt.hypervisor, tt.qemu, tt.reason)
			}
			if (h.Hypervisor == "") != (h.Accel == "") {
				t.Errorf("describeHost() = hypervisor %q with accelerator %q", h.Hypervisor, h.Accel)
			}
			if h.Outer != tt.r.Outer.String() || h.Virtualization != tt.r.Virtualization || h.FastPath != tt.r.Advice ||
				h.KVM != tt.r.KVM || h.Kernel != cfg.Kernel || h.Initrd != cfg.Initrd {
				t.Errorf("describeHost() = %+v, does not carry the report %+v and %+v", h, tt.r, cfg)
			}
		})
	}
}
