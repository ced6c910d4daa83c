package sandbox

import (
	"fmt"

	"github.com/vmctl/vmctl/internal/kvmcap"
)

// Host names the files that hypervisor selection inspects (internal/kvmcap,
// the same check vmctl-vmm makes). Tests point them at fake trees.
type Host kvmcap.Host

// DefaultHost is this machine's /dev, /proc and /sys.
var DefaultHost = Host(kvmcap.Default)

// Choice is the hypervisor selected for new VMs.
type Choice struct {
	// Driver is the sandbox driver name: "kvm" (native VMM) or "qemu".
	Driver string
	// Accel is the QEMU accelerator: "kvm" or "tcg".
	Accel string
	// Reason explains the choice in one line, for `vmctl info` and logs.
	Reason string
}

// KVMCapability reports whether this machine's /dev/kvm can run full Linux
// guests and, if not, why.
func KVMCapability() (ok bool, reason string) { return DefaultHost.KVMCapability() }

// Choose selects the hypervisor for name "auto", "kvm" or "qemu" on this
// machine.
func Choose(name string) (Choice, error) { return DefaultHost.Choose(name) }

// CanRun reports why a choice made earlier cannot run on this machine now.
func CanRun(c Choice) error { return DefaultHost.CanRun(c) }

// KVMCapability reports whether h's /dev/kvm can run full Linux guests,
// and why in one line.
func (h Host) KVMCapability() (ok bool, reason string) {
	if err := kvmcap.Host(h).Check(); err != nil {
		return false, err.Error()
	}
	return true, fmt.Sprintf("%s runs full guests (hardware virtualization present)", h.DevKVM)
}

// Choose selects the hypervisor for name on h:
//   - "kvm": the native VMM; an error where KVM cannot run full guests.
//   - "qemu": QEMU, KVM-accelerated where possible, else TCG.
//   - "auto" (or ""): the native VMM where KVM can run full guests, else QEMU
//     with TCG.
func (h Host) Choose(name string) (Choice, error) {
	switch name {
	case "auto", "", "kvm", "qemu":
	default:
		return Choice{}, fmt.Errorf("unknown hypervisor %q: use auto, kvm or qemu", name)
	}
	ok, why := h.KVMCapability()
	if name == "kvm" && !ok {
		return Choice{}, fmt.Errorf("hypervisor kvm: %s", why)
	}
	if !ok {
		return Choice{Driver: "qemu", Accel: "tcg", Reason: "qemu with TCG software emulation: " + why}, nil
	}
	if name == "qemu" {
		return Choice{Driver: "qemu", Accel: "kvm", Reason: "qemu with KVM acceleration (asked for): " + why}, nil
	}
	return Choice{Driver: "kvm", Accel: "kvm", Reason: "the native VMM (vmctl-vmm): " + why}, nil
}

// CanRun reports why c, a choice made earlier (by Choose, then recorded
// with a container), cannot run on h now, or nil if it can. It does not
// choose again: a container keeps the hypervisor it was created for, as a
// docker container keeps its runtime.
func (h Host) CanRun(c Choice) error {
	switch {
	case c.Driver != "kvm" && c.Driver != "qemu":
		return fmt.Errorf("unknown hypervisor %q: want kvm or qemu", c.Driver)
	case c.Accel != "kvm" && c.Accel != "tcg":
		return fmt.Errorf("hypervisor %s: unknown accelerator %q: want kvm or tcg", c.Driver, c.Accel)
	case c.Driver == "kvm" && c.Accel != "kvm":
		return fmt.Errorf("hypervisor kvm: accelerator %q: the native VMM runs on KVM only", c.Accel)
	case c.Accel == "tcg":
		return nil // software emulation runs anywhere QEMU does
	}
	if ok, why := h.KVMCapability(); !ok {
		if c.Driver == "qemu" {
			return fmt.Errorf("hypervisor qemu with KVM acceleration: %s", why)
		}
		return fmt.Errorf("hypervisor kvm: %s", why)
	}
	return nil
}
