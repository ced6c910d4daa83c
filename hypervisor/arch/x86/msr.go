package x86

import (
	"encoding/binary"

	"github.com/vmctl/vmctl/hypervisor/kvm"
)

// MSR indices (arch/x86/include/asm/msr-index.h).
const (
	msrIA32TSC        = 0x10
	msrSysenterCS     = 0x174
	msrSysenterESP    = 0x175
	msrSysenterEIP    = 0x176
	msrMiscEnable     = 0x1a0
	msrMTRRDefType    = 0x2ff
	msrSTAR           = 0xc0000081
	msrLSTAR          = 0xc0000082
	msrCSTAR          = 0xc0000083
	msrSyscallMask    = 0xc0000084
	msrKernelGSBase   = 0xc0000102
	miscEnableFastStr = 1 << 0
	mtrrEnable        = 1 << 11
	mtrrTypeWriteBack = 6
)

// BootMSRs are the MSR values every vCPU starts with: syscall MSRs cleared,
// fast strings on, and MTRRs enabled with write-back as the default type
// (without it Linux treats all RAM as uncached and boots very slowly).
func BootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: msrSysenterCS}, {Index: msrSysenterESP}, {Index: msrSysenterEIP},
		{Index: msrSTAR}, {Index: msrCSTAR}, {Index: msrKernelGSBase},
		{Index: msrSyscallMask}, {Index: msrLSTAR},
		{Index: msrIA32TSC},
		{Index: msrMiscEnable, Data: miscEnableFastStr},
		{Index: msrMTRRDefType, Data: mtrrEnable | mtrrTypeWriteBack},
	}
}

// Local APIC register offsets, delivery modes and the mask bit
// (arch/x86/include/asm/apicdef.h).
const (
	apicLVTLINT0   = 0x350
	apicLVTLINT1   = 0x360
	apicModeMask   = 0x700
	apicModeNMI    = 0x4 << 8
	apicModeExtINT = 0x7 << 8
	apicLVTMasked  = 1 << 16
)

// BootLAPIC returns l wired as a PC in virtual-wire mode (MP spec 1.4,
// section 3.6.2.2): on the boot CPU LINT0 delivers ExtINT, unmasked (the
// legacy PIC's output, which the guest needs until it switches to the
// IOAPIC); on the others it is masked so that a PIC interrupt reaches one
// CPU only. LINT1 delivers NMI, its mask left as KVM set it, as
// Firecracker does. KVM's own reset programs LINT0 the same way
// (arch/x86/kvm/lapic.c, kvm_lapic_reset).
func BootLAPIC(l kvm.LAPICState, bsp bool) kvm.LAPICState {
	set := func(off int, mode, mask uint32) {
		v := binary.LittleEndian.Uint32(l.Regs[off:])
		binary.LittleEndian.PutUint32(l.Regs[off:], v&^(apicModeMask|mask)|mode|mask)
	}
	if bsp {
		v := binary.LittleEndian.Uint32(l.Regs[apicLVTLINT0:])
		binary.LittleEndian.PutUint32(l.Regs[apicLVTLINT0:], v&^(apicModeMask|apicLVTMasked)|apicModeExtINT)
	} else {
		set(apicLVTLINT0, apicModeExtINT, apicLVTMasked)
	}
	set(apicLVTLINT1, apicModeNMI, 0)
	return l
}
