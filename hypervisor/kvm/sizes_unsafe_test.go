package kvm

import (
	"testing"
	"unsafe"
)

// The ioctl numbers encode the C struct sizes; a Go mirror of a different
// size would make the kernel read or write past it.
func TestMirrorSizes(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		req  uintptr // ioctl number whose size field must match, 0 if none
		want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), kvmGetRegs, 144},
		{"kvm_segment", unsafe.Sizeof(Segment{}), 0, 24},
		{"kvm_dtable", unsafe.Sizeof(DTable{}), 0, 16},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), kvmGetSregs, 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), kvmGetFPU, 416},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), kvmGetLAPIC, 1024},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), 0, 16},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 0, 40},
		{"kvm_userspace_memory_region", unsafe.Sizeof(UserspaceMemoryRegion{}), kvmSetUserMemoryRegion, 32},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), kvmIRQLine, 8},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), kvmIRQFD, 32},
		{"kvm_ioeventfd", unsafe.Sizeof(ioeventfd{}), kvmIOEventFD, 64},
		{"kvm_pit_config", unsafe.Sizeof(pitConfig{}), kvmCreatePIT2, 64},
		{"kvm_msi", unsafe.Sizeof(MSI{}), kvmSignalMSI, 32},
		{"kvm_mp_state", unsafe.Sizeof(mpState{}), kvmGetMPState, 4},
		{"kvm_irqchip", unsafe.Sizeof(IRQChip{}), kvmGetIRQChip, 520},
		{"kvm_irqchip (set)", unsafe.Sizeof(IRQChip{}), kvmSetIRQChip, 520},
		{"kvm_pit_state2", unsafe.Sizeof(PITState{}), kvmGetPIT2, 112},
		{"kvm_pit_state2 (set)", unsafe.Sizeof(PITState{}), kvmSetPIT2, 112},
		{"kvm_clock_data", unsafe.Sizeof(ClockData{}), kvmGetClock, 48},
		{"kvm_clock_data (set)", unsafe.Sizeof(ClockData{}), kvmSetClock, 48},
		{"kvm_vcpu_events", unsafe.Sizeof(VCPUEvents{}), kvmGetVCPUEvents, 64},
		{"kvm_vcpu_events (set)", unsafe.Sizeof(VCPUEvents{}), kvmSetVCPUEvents, 64},
		{"kvm_debugregs", unsafe.Sizeof(DebugRegs{}), kvmGetDebugRegs, 128},
		{"kvm_debugregs (set)", unsafe.Sizeof(DebugRegs{}), kvmSetDebugRegs, 128},
		{"kvm_xsave", unsafe.Sizeof(XSave{}), kvmGetXSave, 4096},
		{"kvm_xsave (set)", unsafe.Sizeof(XSave{}), kvmSetXSave, 4096},
		{"kvm_xcrs", unsafe.Sizeof(XCRs{}), kvmGetXCRs, 392},
		{"kvm_xcrs (set)", unsafe.Sizeof(XCRs{}), kvmSetXCRs, 392},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("sizeof(%s) = %d, want %d", tt.name, tt.got, tt.want)
		}
		if tt.req != 0 {
			if enc := (tt.req >> 16) & 0x3fff; enc != tt.want {
				t.Errorf("ioctl %#x for %s encodes size %d, want %d", tt.req, tt.name, enc, tt.want)
			}
		}
	}
	if off := unsafe.Offsetof(Sregs{}.CR0); off != 224 {
		t.Errorf("offsetof(kvm_sregs.cr0) = %d, want 224", off)
	}
	if off := unsafe.Offsetof(FPU{}.XMM); off != 152 {
		t.Errorf("offsetof(kvm_fpu.xmm) = %d, want 152", off)
	}
}
