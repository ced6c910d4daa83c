package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/memory"
)

// Boot GDT: the Linux 64-bit boot protocol wants __BOOT_CS at 0x10 and
// __BOOT_DS at 0x18; a TSS at 0x20 keeps VMX entry checks happy.
var gdt = [...]uint64{
	0,
	0,
	gdtEntry(0xa09b, 0, 0xfffff), // 0x10: code, 64-bit, present, execute/read, accessed
	gdtEntry(0xc093, 0, 0xfffff), // 0x18: data, 32-bit, present, read/write, accessed
	gdtEntry(0x808b, 0, 0xfffff), // 0x20: TSS, present, busy
}

const (
	codeSelector = 0x10
	dataSelector = 0x18
	tssSelector  = 0x20
)

// gdtEntry encodes a segment descriptor from the access byte and flags
// nibble (flags = flags<<12 | access, as the SDM draws them), base and limit.
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 | uint64(flags&0xf0ff)<<40 |
		uint64(limit&0xf0000)<<32 | uint64(base&0xffffff)<<16 | uint64(limit&0xffff)
}

// segment decodes descriptor d into the form KVM_SET_SREGS takes, so the
// hidden segment state always matches what the GDT in memory says.
func segment(d uint64, selector uint16) kvm.Segment {
	access := uint8(d >> 40)
	flags := uint8(d>>52) & 0xf
	limit := uint32(d&0xffff) | uint32(d>>32)&0xf0000
	if flags&0x8 != 0 {
		limit = limit<<12 | 0xfff
	}
	return kvm.Segment{
		Base:     (d>>16)&0xffffff | (d>>56)<<24,
		Limit:    limit,
		Selector: selector,
		Type:     access & 0xf,
		S:        access >> 4 & 1,
		DPL:      access >> 5 & 3,
		Present:  access >> 7,
		AVL:      flags & 1,
		L:        flags >> 1 & 1,
		DB:       flags >> 2 & 1,
		G:        flags >> 3 & 1,
	}
}

// identityGiB is how much the boot page tables map 1:1: all of the low
// 4 GiB, so the kernel, zero page, command line and initrd are reachable
// wherever they sit below the MMIO hole.
const identityGiB = 4

// Control register and EFER bits used for the 64-bit entry.
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10
)

// WriteBootTables writes the GDT, an empty IDT and identity-mapping page
// tables (2 MiB pages) into guest memory.
func WriteBootTables(mem memory.Memory) error {
	for i, d := range gdt {
		if err := mem.WriteUint64(GDTAddr+uint64(i)*8, d); err != nil {
			return fmt.Errorf("write boot GDT: %w", err)
		}
	}
	if err := mem.WriteUint64(IDTAddr, 0); err != nil {
		return fmt.Errorf("write boot IDT: %w", err)
	}
	return writePageTables(mem)
}

func writePageTables(mem memory.Memory) error {
	const present, writable, huge = 1, 2, 0x80
	pml4, err := mem.Slice(PML4Addr, 4096)
	if err != nil {
		return fmt.Errorf("boot page tables: %w", err)
	}
	clear(pml4)
	binary.LittleEndian.PutUint64(pml4, PDPTAddr|present|writable)
	pdpt, err := mem.Slice(PDPTAddr, 4096)
	if err != nil {
		return fmt.Errorf("boot page tables: %w", err)
	}
	clear(pdpt)
	for g := uint64(0); g < identityGiB; g++ {
		pdAddr := PDAddr + g*4096
		binary.LittleEndian.PutUint64(pdpt[g*8:], pdAddr|present|writable)
		pd, err := mem.Slice(pdAddr, 4096)
		if err != nil {
			return fmt.Errorf("boot page tables: %w", err)
		}
		for i := uint64(0); i < 512; i++ {
			binary.LittleEndian.PutUint64(pd[i*8:], (g<<30|i<<21)|present|writable|huge)
		}
	}
	return nil
}

// LongModeSregs returns s changed for the 64-bit boot entry: paging with
// the boot page tables, long mode, flat boot segments from the boot GDT.
func LongModeSregs(s kvm.Sregs) kvm.Sregs {
	s.GDT = kvm.DTable{Base: GDTAddr, Limit: uint16(len(gdt)*8 - 1)}
	s.IDT = kvm.DTable{Base: IDTAddr, Limit: 7}
	s.CS = segment(gdt[codeSelector/8], codeSelector)
	data := segment(gdt[dataSelector/8], dataSelector)
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = segment(gdt[tssSelector/8], tssSelector)
	s.CR3 = PML4Addr
	s.CR4 |= cr4PAE
	s.CR0 |= cr0PE | cr0ET | cr0PG
	s.EFER |= eferLME | eferLMA
	return s
}

// BootRegs returns the registers for the 64-bit Linux entry: RSI points at
// the zero page, interrupts are off.
func BootRegs(entry uint64) kvm.Regs {
	return kvm.Regs{RIP: entry, RSI: ZeroPageAddr, RSP: BootStack, RBP: BootStack, RFLAGS: 2}
}

// BootFPU is the x87/SSE state after FNINIT and with default MXCSR.
func BootFPU() kvm.FPU { return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80} }
