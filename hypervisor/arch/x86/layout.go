// Package x86 knows the x86-64 PC platform as the VMM presents it: where
// RAM, boot structures and device windows sit in guest physical memory
// (e820), the GDT and identity page tables for the 64-bit Linux entry, the
// CPUID, MSR and local APIC values each vCPU starts with, and the MP table
// that describes several vCPUs and the IOAPIC to the guest.
//
// It writes its structures into guest memory through memory.Memory and
// returns register values as kvm types; it issues no ioctls itself and
// does not load kernels (package loader does).
package x86

import (
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/memory"
)

// Guest physical memory map. Everything below 1 MiB that the boot needs
// sits in the first 640 KiB of RAM, which e820 reports as usable only
// after the kernel has read it; the kernel itself loads at 1 MiB.
const (
	GDTAddr      = 0x500  // boot GDT, gdtEntries * 8 bytes
	IDTAddr      = 0x520  // empty IDT: the kernel installs its own
	ZeroPageAddr = 0x7000 // struct boot_params
	BootStack    = 0x8ff0 // initial RSP, below the page tables
	PML4Addr     = 0x9000
	PDPTAddr     = 0xa000
	PDAddr       = 0xb000 // identityGiB page directories, one page each
	CmdlineAddr  = 0x20000
	CmdlineMax   = 0x10000 // room reserved for the command line
	EBDAAddr     = 0x9fc00 // MP table; Linux scans 639-640 KiB for it
	HighRAMStart = 0x100000
	KernelAddr   = HighRAMStart // where the protected-mode kernel goes

	// The hole below 4 GiB holds device windows, not RAM.
	MMIOHoleStart = 0xc0000000
	MMIOHoleEnd   = 1 << 32
	// VirtioMMIOBase is the first virtio-mmio window; each device gets
	// VirtioMMIOStride bytes (it uses 0x200 of them).
	VirtioMMIOBase   = 0xd0000000
	VirtioMMIOStride = 0x1000
	IOAPICAddr       = 0xfec00000
	LAPICAddr        = 0xfee00000
	// Intel VMX needs three pages for its real-mode TSS and one for an
	// identity page table, outside RAM and device windows.
	TSSAddr         = 0xfffbd000
	IdentityMapAddr = 0xfffbc000
)

// MinRAM is the least guest RAM the layout accepts: boot structures, the
// kernel and its decompression room need a few MiB.
const MinRAM = 16 << 20

// RAMRanges splits size bytes of guest RAM around the MMIO hole: up to
// MMIOHoleStart below 4 GiB, the rest from 4 GiB.
func RAMRanges(size uint64) ([]memory.Range, error) {
	if size < MinRAM || size%(2<<20) != 0 {
		return nil, fmt.Errorf("guest memory %d MiB: must be at least %d MiB and a multiple of 2 MiB", size>>20, MinRAM>>20)
	}
	if size > 1<<40 {
		return nil, fmt.Errorf("guest memory %d MiB: more than 1 TiB", size>>20)
	}
	low := min(size, MMIOHoleStart)
	r := []memory.Range{{GPA: 0, Size: low}}
	if size > low {
		r = append(r, memory.Range{GPA: MMIOHoleEnd, Size: size - low})
	}
	return r, nil
}

// E820 entry types, as in arch/x86/include/asm/e820/types.h.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry mirrors struct boot_e820_entry, arch/x86/include/uapi/asm/bootparam.h
// (packed: 20 bytes in the zero page).
type E820Entry struct {
	Addr uint64
	Size uint64
	Type uint32
}

// E820 returns the memory map the guest sees for RAM laid out by
// RAMRanges: usable low RAM up to the EBDA, the legacy BIOS/VGA area
// reserved, then RAM from 1 MiB and above 4 GiB.
func E820(ram []memory.Range) ([]E820Entry, error) {
	if len(ram) == 0 || ram[0].GPA != 0 || ram[0].Size < MinRAM {
		return nil, fmt.Errorf("e820: low RAM must start at 0 and hold at least %d MiB", MinRAM>>20)
	}
	m := []E820Entry{
		{Addr: 0, Size: EBDAAddr, Type: E820RAM},
		{Addr: EBDAAddr, Size: HighRAMStart - EBDAAddr, Type: E820Reserved},
		{Addr: HighRAMStart, Size: ram[0].Size - HighRAMStart, Type: E820RAM},
	}
	for _, r := range ram[1:] {
		m = append(m, E820Entry{Addr: r.GPA, Size: r.Size, Type: E820RAM})
	}
	return m, nil
}
