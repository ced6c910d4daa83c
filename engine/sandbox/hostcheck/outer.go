package hostcheck

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Kind names an outer hypervisor: the one this host runs under, if any.
type Kind string

const (
	// BareMetal is a host that runs under no hypervisor.
	BareMetal  Kind = "none"
	VirtualBox Kind = "VirtualBox"
	VMware     Kind = "VMware"
	HyperV     Kind = "Hyper-V"
	KVM        Kind = "KVM"
	// QEMUTCG is QEMU emulating the CPU itself, without KVM under it.
	QEMUTCG   Kind = "QEMU (TCG)"
	Xen       Kind = "Xen"
	Parallels Kind = "Parallels"
	Bhyve     Kind = "bhyve"
	// Unknown is a hypervisor that CPUID shows but neither CPUID's
	// signature nor DMI names.
	Unknown Kind = "an unknown hypervisor"
)

// The signatures of CPUID leaf 0x40000000 (EBX, ECX, EDX, trailing NULs
// cut), as each hypervisor's source spells them.
var signatures = map[string]Kind{
	"KVMKVMKVM":    KVM,
	"TCGTCGTCGTCG": QEMUTCG,
	"VMwareVMware": VMware,
	"VBoxVBoxVBox": VirtualBox,
	"Microsoft Hv": HyperV, // also KVM and others with Hyper-V enlightenments: DMI tells them apart
	"XenVMMXenVMM": Xen,
	" lrpepyh  vr": Parallels,
	"bhyve bhyve ": Bhyve,
}

// DMI is what the firmware's SMBIOS tables say of the machine, as Linux
// exports them under /sys/class/dmi/id. Every field is empty on a machine
// without the tables (a microVM) or where the file cannot be read.
type DMI struct {
	SysVendor, ProductName, BIOSVendor, BoardVendor string
}

// readDMI reads dir's SMBIOS strings.
func readDMI(dir string) DMI {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return DMI{SysVendor: read("sys_vendor"), ProductName: read("product_name"),
		BIOSVendor: read("bios_vendor"), BoardVendor: read("board_vendor")}
}

func (d DMI) empty() bool { return d == DMI{} }

// kind names the hypervisor DMI says the machine is, or "" where DMI does
// not name one (bare metal, or no tables).
func (d DMI) kind() Kind {
	has := func(s string) bool {
		for _, f := range []string{d.SysVendor, d.ProductName, d.BIOSVendor, d.BoardVendor} {
			if strings.Contains(strings.ToLower(f), strings.ToLower(s)) {
				return true
			}
		}
		return false
	}
	switch {
	case has("innotek") || has("VirtualBox"):
		return VirtualBox
	case has("VMware"):
		return VMware
	case strings.HasPrefix(d.SysVendor, "Microsoft") && d.ProductName == "Virtual Machine":
		return HyperV
	case d.SysVendor == "QEMU" || has("KVM"):
		return KVM // QEMU's machines: CPUID tells KVM from TCG
	case has("Xen"):
		return Xen
	case has("Parallels"):
		return Parallels
	case has("bhyve"):
		return Bhyve
	}
	return ""
}

func (d DMI) String() string {
	if d.empty() {
		return "no DMI table"
	}
	var parts []string
	for _, f := range []string{d.SysVendor, d.ProductName} {
		if f != "" {
			parts = append(parts, f)
		}
	}
	if len(parts) == 0 {
		parts = append(parts, d.BIOSVendor, d.BoardVendor)
	}
	return "DMI " + strings.TrimSpace(strings.Join(parts, " "))
}

// CPUIDFunc executes CPUID for a leaf and subleaf.
type CPUIDFunc func(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// cpuidFacts is what CPUID says of a hypervisor and of the CPU.
type cpuidFacts struct {
	known bool // CPUID could be asked
	// hypervisor is leaf 1's ECX bit 31, set by every hypervisor that
	// wants its guests to know.
	hypervisor bool
	// signature is leaf 0x40000000's vendor string; with Hyper-V
	// enlightenments KVM puts "Microsoft Hv" there and its own at
	// 0x40000100, which kvmSignature holds.
	signature, kvmSignature string
	// vendor is the CPU's, from leaf 0: "GenuineIntel", "AuthenticAMD".
	vendor string
}

func readCPUID(cpuid CPUIDFunc) cpuidFacts {
	if cpuid == nil {
		return cpuidFacts{}
	}
	f := cpuidFacts{known: true}
	_, b, c, d := cpuid(0, 0)
	f.vendor = registers(b, d, c)
	_, _, c, _ = cpuid(1, 0)
	if f.hypervisor = c&(1<<31) != 0; !f.hypervisor {
		return f // the hypervisor leaves hold no hypervisor's data
	}
	_, b, c, d = cpuid(0x4000_0000, 0)
	f.signature = registers(b, c, d)
	if f.signature == "Microsoft Hv" {
		_, b, c, d = cpuid(0x4000_0100, 0)
		f.kvmSignature = registers(b, c, d)
	}
	return f
}

// registers spells three registers as the 12 characters they hold,
// without trailing NULs.
func registers(regs ...uint32) string {
	b := make([]byte, 0, 12)
	for _, r := range regs {
		b = binary.LittleEndian.AppendUint32(b, r)
	}
	return strings.TrimRight(string(b), "\x00")
}

// Outer is the hypervisor this host runs under.
type Outer struct {
	Kind Kind
	// DMI is what the firmware says of the machine.
	DMI DMI
	// Evidence says what named it: the CPUID signature and DMI strings.
	Evidence string
}

func (o Outer) String() string {
	name := string(o.Kind)
	if o.Kind == BareMetal {
		name = "none (bare metal)"
	}
	return name + " (" + o.Evidence + ")"
}

// detectOuter names the outer hypervisor. DMI names the product where it
// has tables (VirtualBox shows KVM's or Hyper-V's CPUID signature when its
// paravirtualization interface says so); CPUID names it otherwise, and
// tells KVM from TCG under QEMU's machines.
func detectOuter(dmi DMI, id cpuidFacts) Outer {
	var ev []string
	switch {
	case !id.known:
		ev = append(ev, "no CPUID")
	case !id.hypervisor:
		ev = append(ev, "no CPUID hypervisor bit")
	case id.signature == "":
		ev = append(ev, "CPUID hypervisor bit, no signature")
	default:
		ev = append(ev, fmt.Sprintf("CPUID signature %q", id.signature))
	}
	ev = append(ev, dmi.String())
	o := Outer{DMI: dmi, Evidence: strings.Join(ev, "; ")}
	byCPUID := signatures[id.signature]
	if id.kvmSignature == "KVMKVMKVM" {
		byCPUID = KVM
	}
	switch byDMI := dmi.kind(); {
	case byDMI == KVM && byCPUID == QEMUTCG:
		o.Kind = QEMUTCG
	case byDMI != "":
		o.Kind = byDMI
	case byCPUID != "":
		o.Kind = byCPUID
	case id.hypervisor:
		o.Kind = Unknown
	default:
		o.Kind = BareMetal
	}
	return o
}
