// Package hostcheck describes what this host gives vmctl's hypervisors: the
// outer hypervisor it runs under, if any (from DMI and the CPUID hypervisor
// leaf), whether hardware virtualization (VT-x/AMD-V) reaches it, what
// /dev/kvm can do, which driver auto picks and why, and, where auto falls
// back to software emulation, the setting of that outer hypervisor (or of
// the firmware, or of this host) that would give the native VMM.
//
// It reads and changes nothing else. What /dev/kvm can do is
// internal/kvmcap's answer (the check vmctl-vmm makes), the choice is
// sandbox.Choose's: this package explains them, it does not decide again.
// QEMU's presence is the caller's to add (QEMUAccelerators).
package hostcheck

import (
	"errors"
	"fmt"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/internal/kvmcap"
)

// Env is what a check reads; tests fake every part of it.
type Env struct {
	// DMIDir holds the SMBIOS strings (sys_vendor, product_name,
	// bios_vendor, board_vendor), as /sys/class/dmi/id does.
	DMIDir string
	// CPUID executes the CPUID instruction; nil where there is none.
	CPUID CPUIDFunc
	// KVM names the files of the KVM check.
	KVM sandbox.Host
}

// Default is this machine.
var Default = Env{DMIDir: "/sys/class/dmi/id", CPUID: nativeCPUID, KVM: sandbox.DefaultHost}

// Report is a check's answer; every text is one line.
type Report struct {
	Outer Outer
	// VirtFlag is the CPU's hardware virtualization flag: "vmx" (Intel
	// VT-x), "svm" (AMD-V), or "" for none.
	VirtFlag string
	// Virtualization says whether hardware virtualization reaches this
	// host (through the outer hypervisor, where there is one).
	Virtualization string
	// KVMOK is set where /dev/kvm runs full guests; KVM says what /dev/kvm
	// can do either way.
	KVMOK bool
	KVM   string
	// Choice is what auto picks (sandbox.Choose), with its reason.
	Choice sandbox.Choice
	// Advice is the setting that would let auto pick the native VMM, for a
	// host where it does not; empty where it does.
	Advice string
}

// Check describes e's host.
func (e Env) Check() (Report, error) {
	id := readCPUID(e.CPUID)
	r := Report{Outer: detectOuter(readDMI(e.DMIDir), id)}
	choice, err := e.KVM.Choose("auto")
	if err != nil {
		return Report{}, err
	}
	r.Choice = choice
	r.KVMOK, r.KVM = e.KVM.KVMCapability()
	if r.KVMOK {
		r.KVM = "runs full guests"
	}
	kc := kvmcap.Host(e.KVM)
	flag, flagErr := kc.VirtFlag()
	pvm := kc.PVMLoaded()
	r.VirtFlag = flag
	r.Virtualization = virtualization(r.Outer.Kind, flag, flagErr)
	if !r.KVMOK {
		if pvm {
			r.KVM += "; kvm_pvm (the PVM flavour of KVM) is loaded, and it runs only guest kernels built for PVM"
		}
		r.Advice = advice(r.Outer, id.vendor, flag, flagErr, pvm, kc.Check())
	}
	return r, nil
}

// extension names a CPU flag's extension.
func extension(flag string) string {
	switch flag {
	case "vmx":
		return "Intel VT-x"
	case "svm":
		return "AMD-V"
	}
	return flag
}

// virtualization says whether VT-x/AMD-V reaches this host.
func virtualization(outer Kind, flag string, flagErr error) string {
	switch {
	case flagErr != nil:
		return "unknown: cannot read CPU flags: " + flagErr.Error()
	case flag != "" && outer == BareMetal:
		return fmt.Sprintf("available (%s, the %s flag)", extension(flag), flag)
	case flag != "":
		return fmt.Sprintf("nested virtualization available (%s, the %s flag)", extension(flag), flag)
	case outer == BareMetal:
		return "not available: the CPU shows no vmx/svm flag (VT-x/AMD-V is off in the firmware, or the CPU has none)"
	}
	return fmt.Sprintf("not available: %s does not pass VT-x/AMD-V on to this VM (no vmx/svm CPU flag)", outer)
}

// kvmModule names the KVM module of a CPU with flag, or of vendor's CPUs.
func kvmModule(flag, vendor string) string {
	switch {
	case flag == "vmx" || flag == "" && vendor == "GenuineIntel":
		return "kvm_intel"
	case flag == "svm" || flag == "" && (vendor == "AuthenticAMD" || vendor == "HygonGenuine"):
		return "kvm_amd"
	}
	return "kvm_intel (Intel) or kvm_amd (AMD)"
}

// advice is the setting that would let the native VMM run, on a host
// whose /dev/kvm cannot run full guests (kvmErr says why).
func advice(outer Outer, vendor, flag string, flagErr error, pvm bool, kvmErr error) string {
	if flagErr != nil {
		return "" // nothing to say without the CPU flags
	}
	if flag != "" {
		// Hardware virtualization is here: this host's KVM is what is missing.
		module := kvmModule(flag, vendor)
		switch {
		case pvm:
			return fmt.Sprintf("the CPU has %s but PVM's kvm_pvm holds KVM: rmmod kvm_pvm && modprobe %s", flag, module)
		case errors.Is(kvmErr, kvmcap.ErrNoDevice):
			return fmt.Sprintf("the CPU has %s: load KVM with modprobe %s", flag, module)
		}
		return "" // /dev/kvm is there but not ours to open: its reason says what to do
	}
	return outerAdvice(outer, vendor)
}

// outerAdvice is the setting of the outer hypervisor (or of the firmware)
// that shows this host VT-x/AMD-V.
func outerAdvice(outer Outer, vendor string) string {
	switch outer.Kind {
	case BareMetal:
		switch vendor {
		case "GenuineIntel":
			return "enable Intel Virtualization Technology (VT-x) in the firmware (BIOS/UEFI) setup, then reboot"
		case "AuthenticAMD", "HygonGenuine":
			return "enable SVM Mode (AMD-V) in the firmware (BIOS/UEFI) setup, then reboot"
		}
		return "enable Intel VT-x or AMD-V (SVM) in the firmware (BIOS/UEFI) setup, then reboot"
	case VirtualBox:
		return `with the VM powered off, on the host: VBoxManage modifyvm "<VM>" --nested-hw-virt on ` +
			`(GUI: Settings > System > Processor > Enable Nested VT-x/AMD-V; VirtualBox 6.1 or later, not while it runs on Windows' Hyper-V)`
	case VMware:
		return `with the VM powered off, turn on "Virtualize Intel VT-x/EPT or AMD-V/RVI" in its processor settings ` +
			`(Workstation/Fusion: Settings > Processors; in the .vmx file: vhv.enable = "TRUE"; vSphere: CPU > Expose hardware assisted virtualization to the guest OS)`
	case HyperV:
		return `with the VM off, in an elevated PowerShell on the Windows host: Set-VMProcessor -VMName "<VM>" -ExposeVirtualizationExtensions $true`
	case KVM:
		module := kvmModule("", vendor)
		s := fmt.Sprintf("on the outer host, enable nested virtualization (%s nested=1: options %s nested=1 in /etc/modprobe.d, then reload %s) "+
			"and give this VM the host's CPU: QEMU -cpu host, libvirt <cpu mode='host-passthrough'/>", module, module, module)
		if outer.DMI.empty() {
			s += "; a microVM without DMI tables (Firecracker) may offer no nested virtualization at all"
		}
		return s
	case QEMUTCG:
		return "the outer QEMU emulates the CPU: start this VM with -accel kvm -cpu host on a host with KVM, or with -cpu max under TCG (emulated AMD-V, slow)"
	case Xen:
		return "in this domain's xl config, set nestedhvm=1 (with hap=1), then restart the domain"
	case Parallels:
		return "with the VM shut down: Configure > Hardware > CPU & Memory > Advanced > Enable nested virtualization"
	case Bhyve:
		return "bhyve offers its guests no nested virtualization: run vmctl on bare metal or under a hypervisor that nests (KVM, VMware, Hyper-V, VirtualBox)"
	}
	return "expose VT-x/AMD-V (nested virtualization) to this VM in the outer hypervisor's settings"
}
