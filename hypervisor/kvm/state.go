package kvm

import (
	"encoding/binary"
	"fmt"
)

// State ioctls: what a snapshot reads from a paused VM and writes into a new
// one. The structs are kept opaque where the VMM never looks inside them:
// they go from one KVM_GET to the matching KVM_SET unchanged, on the same
// host kernel (a snapshot's identity includes the host).
const (
	kvmGetIRQChip    = 0xC208AE62
	kvmSetIRQChip    = 0x8208AE63
	kvmSetClock      = 0x4030AE7B
	kvmGetClock      = 0x8030AE7C
	kvmGetPIT2       = 0x8070AE9F
	kvmSetPIT2       = 0x4070AEA0
	kvmGetVCPUEvents = 0x8040AE9F
	kvmSetVCPUEvents = 0x4040AEA0
	kvmGetDebugRegs  = 0x8080AEA1
	kvmSetDebugRegs  = 0x4080AEA2
	kvmGetXSave      = 0x9000AEA4
	kvmSetXSave      = 0x5000AEA5
	kvmGetXCRs       = 0x8188AEA6
	kvmSetXCRs       = 0x4188AEA7
)

// IRQ chip IDs for IRQChip (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// IRQChip mirrors struct kvm_irqchip: one of the in-kernel PICs or the
// IOAPIC, its state opaque.
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// PITState mirrors struct kvm_pit_state2 (opaque).
type PITState struct {
	Data [112]byte
}

// ClockData mirrors struct kvm_clock_data, include/uapi/linux/kvm.h.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// VCPUEvents mirrors struct kvm_vcpu_events (opaque): pending exceptions,
// interrupts, NMIs and SMIs, and the interrupt shadow.
type VCPUEvents struct {
	Data [64]byte
}

// DebugRegs mirrors struct kvm_debugregs (opaque).
type DebugRegs struct {
	Data [128]byte
}

// XSave mirrors struct kvm_xsave: the legacy 4 KiB XSAVE area (opaque).
type XSave struct {
	Region [4096]byte
}

// XCRs mirrors struct kvm_xcrs (opaque).
type XCRs struct {
	Data [392]byte
}

// Count is nr_xcrs: how many registers the struct holds. A host without
// XSAVE reports none, and refuses KVM_SET_XCRS altogether.
func (x XCRs) Count() uint32 { return binary.LittleEndian.Uint32(x.Data[:4]) }

// IRQChip reads the state of the in-kernel chip id (IRQChip*).
func (vm *VM) IRQChip(id uint32) (IRQChip, error) {
	c := IRQChip{ChipID: id}
	_, err := ioctlPtr(vm.fd, kvmGetIRQChip, &c)
	return c, wrap(fmt.Sprintf("KVM_GET_IRQCHIP %d", id), err)
}

// SetIRQChip writes the state of the in-kernel chip c.ChipID.
func (vm *VM) SetIRQChip(c IRQChip) error {
	_, err := ioctlPtr(vm.fd, kvmSetIRQChip, &c)
	return wrap(fmt.Sprintf("KVM_SET_IRQCHIP %d", c.ChipID), err)
}

// PIT reads the in-kernel PIT's state.
func (vm *VM) PIT() (PITState, error) {
	var p PITState
	_, err := ioctlPtr(vm.fd, kvmGetPIT2, &p)
	return p, wrap("KVM_GET_PIT2", err)
}

// SetPIT writes the in-kernel PIT's state.
func (vm *VM) SetPIT(p PITState) error {
	_, err := ioctlPtr(vm.fd, kvmSetPIT2, &p)
	return wrap("KVM_SET_PIT2", err)
}

// Clock reads the VM's kvmclock.
func (vm *VM) Clock() (ClockData, error) {
	var c ClockData
	_, err := ioctlPtr(vm.fd, kvmGetClock, &c)
	return c, wrap("KVM_GET_CLOCK", err)
}

// SetClock sets the VM's kvmclock to clock nanoseconds, so the guest's
// clocksource continues from where a saved guest left it.
func (vm *VM) SetClock(clock uint64) error {
	c := ClockData{Clock: clock}
	_, err := ioctlPtr(vm.fd, kvmSetClock, &c)
	return wrap("KVM_SET_CLOCK", err)
}

// Events reads the vCPU's pending events.
func (v *VCPU) Events() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctlPtr(v.fd, kvmGetVCPUEvents, &e)
	return e, wrap("KVM_GET_VCPU_EVENTS", err)
}

// SetEvents writes the vCPU's pending events.
func (v *VCPU) SetEvents(e VCPUEvents) error {
	_, err := ioctlPtr(v.fd, kvmSetVCPUEvents, &e)
	return wrap("KVM_SET_VCPU_EVENTS", err)
}

// DebugRegs reads the vCPU's debug registers.
func (v *VCPU) DebugRegs() (DebugRegs, error) {
	var d DebugRegs
	_, err := ioctlPtr(v.fd, kvmGetDebugRegs, &d)
	return d, wrap("KVM_GET_DEBUGREGS", err)
}

// SetDebugRegs writes the vCPU's debug registers.
func (v *VCPU) SetDebugRegs(d DebugRegs) error {
	_, err := ioctlPtr(v.fd, kvmSetDebugRegs, &d)
	return wrap("KVM_SET_DEBUGREGS", err)
}

// XSave reads the vCPU's extended (FPU, SSE, AVX) state.
func (v *VCPU) XSave() (XSave, error) {
	var x XSave
	_, err := ioctlPtr(v.fd, kvmGetXSave, &x)
	return x, wrap("KVM_GET_XSAVE", err)
}

// SetXSave writes the vCPU's extended state.
func (v *VCPU) SetXSave(x XSave) error {
	_, err := ioctlPtr(v.fd, kvmSetXSave, &x)
	return wrap("KVM_SET_XSAVE", err)
}

// XCRs reads the vCPU's extended control registers (XCR0).
func (v *VCPU) XCRs() (XCRs, error) {
	var x XCRs
	_, err := ioctlPtr(v.fd, kvmGetXCRs, &x)
	return x, wrap("KVM_GET_XCRS", err)
}

// SetXCRs writes the vCPU's extended control registers.
func (v *VCPU) SetXCRs(x XCRs) error {
	_, err := ioctlPtr(v.fd, kvmSetXCRs, &x)
	return wrap("KVM_SET_XCRS", err)
}
