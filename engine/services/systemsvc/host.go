package systemsvc

import (
	"os/exec"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
)

// HostConfig is what ProbeHost reports besides what it finds.
type HostConfig struct {
	// Kernel and Initrd are the guest kernel and the guest image.
	Kernel, Initrd string
	// QEMU is the qemu-system-x86_64 binary; empty means look it up in PATH.
	QEMU string
}

// Host describes how this host runs VMs.
type Host struct {
	Hypervisor string // the driver auto picks; empty if none can run
	Accel      string
	Reason     string // why auto picks it, or why there is none
	KVM        string // what /dev/kvm can do
	QEMU       string // the QEMU binary, or why there is none
	Kernel     string
	Initrd     string
}

// ProbeHost reports the hypervisor choice for this host and the guest
// files.
func ProbeHost(cfg HostConfig) Host {
	h := Host{Kernel: cfg.Kernel, Initrd: cfg.Initrd}
	if ok, why := sandbox.KVMCapability(); ok {
		h.KVM = "can run full guests"
	} else {
		h.KVM = why
	}
	choice, err := sandbox.Choose("auto")
	if err != nil {
		h.Reason = err.Error()
		return h
	}
	h.Hypervisor, h.Accel, h.Reason = choice.Driver, choice.Accel, choice.Reason
	if choice.Driver == "qemu" {
		if _, err := qemu.New(qemu.Options{Binary: cfg.QEMU, Accel: choice.Accel}); err != nil {
			h.QEMU = err.Error()
		} else if cfg.QEMU != "" {
			h.QEMU = cfg.QEMU
		} else if p, err := exec.LookPath("qemu-system-x86_64"); err == nil {
			h.QEMU = p
		}
	}
	return h
}
