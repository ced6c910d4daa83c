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

// Local APIC register offsets and delivery modes (arch/x86/include/asm/apicdef.h).
const (
	apicLVTLINT0   = 0x350
	apicLVTLINT1   = 0x360
	apicModeMask   = 0x700
	apicModeNMI    = 0x4 << 8
	apicModeExtINT = 0x7 << 8
)

// BootLAPIC returns l with LINT0 delivering ExtINT (the legacy PIC's
// output, as on a PC) and LINT1 delivering NMI.
func BootLAPIC(l kvm.LAPICState) kvm.LAPICState {
	set := func(off int, mode uint32) {
		v := binary.LittleEndian.Uint32(l.Regs[off:])
		binary.LittleEndian.PutUint32(l.Regs[off:], v&^apicModeMask|mode)
	}
	set(apicLVTLINT0, apicModeExtINT)
	set(apicLVTLINT1, apicModeNMI)
	return l
}
