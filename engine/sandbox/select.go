package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Host names the files that hypervisor selection inspects. Tests point them
// at fake trees; DefaultHost is the real machine.
type Host struct {
	// DevKVM is the KVM device node.
	DevKVM string
	// CPUInfo is read for the vmx/svm CPU flags.
	CPUInfo string
	// PVMModule exists when the PVM flavour of KVM is loaded, which runs
	// only guests built for PVM, not a stock Linux kernel.
	PVMModule string
}

// DefaultHost is this machine's /dev, /proc and /sys.
var DefaultHost = Host{
	DevKVM:    "/dev/kvm",
	CPUInfo:   "/proc/cpuinfo",
	PVMModule: "/sys/module/kvm_pvm",
}

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

// KVMCapability reports whether h's /dev/kvm can run full Linux guests. A
// /dev/kvm that opens is not enough: a host that is itself a VM may expose
// PVM-flavoured KVM, which runs tiny hand-made guests but dies on the first
// instructions of a stock kernel. Hardware virtualization shows as the vmx
// (Intel) or svm (AMD) CPU flag.
func (h Host) KVMCapability() (ok bool, reason string) {
	f, err := os.OpenFile(h.DevKVM, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, fmt.Sprintf("%s does not exist: KVM is not enabled on this host", h.DevKVM)
	case errors.Is(err, fs.ErrPermission):
		return false, fmt.Sprintf("%s is not accessible: run as root or join the kvm group", h.DevKVM)
	case err != nil:
		return false, fmt.Sprintf("%s cannot be opened: %v", h.DevKVM, err)
	}
	f.Close()

	hasVirt, err := cpuHasVirtFlag(h.CPUInfo)
	if err != nil {
		return false, fmt.Sprintf("cannot read CPU flags: %v", err)
	}
	_, err = os.Stat(h.PVMModule)
	pvm := err == nil
	switch {
	case pvm && !hasVirt:
		return false, fmt.Sprintf("%s is PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag): it cannot run full guests", h.DevKVM)
	case pvm:
		return false, fmt.Sprintf("%s is PVM-flavoured KVM (kvm_pvm loaded): it cannot run full guests", h.DevKVM)
	case !hasVirt:
		return false, fmt.Sprintf("the CPU has no vmx/svm flag (no hardware virtualization): %s cannot run full guests", h.DevKVM)
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

// cpuHasVirtFlag reports whether any "flags" line of a /proc/cpuinfo-format
// file lists vmx or svm.
func cpuHasVirtFlag(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20) // flags lines run to a few KiB
	for sc.Scan() {
		key, value, found := strings.Cut(sc.Text(), ":")
		if !found || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, flag := range strings.Fields(value) {
			if flag == "vmx" || flag == "svm" {
				return true, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return false, nil
}
