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
