package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine fd.
type VM struct {
	fd      int
	runSize int
}

// CreateVM creates an x86 VM (machine type 0).
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl(s.fd, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	return &VM{fd: int(fd), runSize: s.runSize}, nil
}

// SupportedCPUID returns what KVM_GET_SUPPORTED_CPUID reports: every CPUID
// leaf KVM can present to a guest, with the bits it can virtualize.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	c := &cpuid2{NEnt: maxCPUIDEntries}
	if _, err := ioctlPtr(s.fd, kvmGetSupportedCPUID, c); err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	if c.NEnt > maxCPUIDEntries {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID returned %d entries, more than %d", c.NEnt, maxCPUIDEntries)
	}
	return append([]CPUIDEntry(nil), c.Entries[:c.NEnt]...), nil
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU.
func (s *System) MSRIndexList() ([]uint32, error) {
	// mirrors struct kvm_msr_list with room for the indices.
	var l struct {
		N       uint32
		Indices [1024]uint32
	}
	l.N = uint32(len(l.Indices))
	if _, err := ioctlPtr(s.fd, kvmGetMSRIndexList, &l); err != nil {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	if l.N > uint32(len(l.Indices)) {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST returned %d indices", l.N)
	}
	return append([]uint32(nil), l.Indices[:l.N]...), nil
}

// Close closes the VM fd. vCPUs must be closed first.
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	return err
}

// SetUserMemoryRegion maps host memory mem at guest physical address gpa as
// memory slot slot. mem must stay mapped for the life of the VM.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	if len(mem) == 0 || len(mem)%unix.Getpagesize() != 0 {
		return fmt.Errorf("memory slot %d: size %#x is not a non-zero multiple of the page size", slot, len(mem))
	}
	r := UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: gpa, MemorySize: uint64(len(mem)), UserspaceAddr: sliceAddr(mem)}
	if _, err := ioctlPtr(vm.fd, kvmSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d at %#x (%#x bytes): %w", slot, gpa, len(mem), err)
	}
	return nil
}

// SetTSSAddr sets the guest physical address of the three pages Intel VMX
// needs for real-mode emulation; they must not overlap RAM the guest uses.
func (vm *VM) SetTSSAddr(gpa uint32) error {
	if _, err := ioctl(vm.fd, kvmSetTSSAddr, uintptr(gpa)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR %#x: %w", gpa, err)
	}
	return nil
}

// SetIdentityMapAddr sets the guest physical address of the page Intel VMX
// uses for its identity page table in real mode.
func (vm *VM) SetIdentityMapAddr(gpa uint64) error {
	if _, err := ioctlPtr(vm.fd, kvmSetIdentityMapAddr, &gpa); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR %#x: %w", gpa, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and local APICs.
// Preconditions: no vCPU exists yet.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctl(vm.fd, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT (ports 0x40-0x43) with a dummy
// speaker port 0x61. Preconditions: CreateIRQChip succeeded.
func (vm *VM) CreatePIT2() error {
	c := pitConfig{Flags: pitSpeakerDummy}
	if _, err := ioctlPtr(vm.fd, kvmCreatePIT2, &c); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine sets the level of interrupt line gsi of the in-kernel irqchip.
// An edge-triggered pin fires on a low-to-high change.
func (vm *VM) IRQLine(gsi uint32, high bool) error {
	l := irqLevel{IRQ: gsi}
	if high {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQLine, &l); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE gsi %d: %w", gsi, err)
	}
	return nil
}

// RegisterIRQFD makes a write to eventfd efd inject an edge on gsi without
// a trip through the VMM.
func (vm *VM) RegisterIRQFD(efd int, gsi uint32) error {
	r := irqfd{FD: uint32(efd), GSI: gsi}
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("KVM_IRQFD gsi %d: %w", gsi, err)
	}
	return nil
}

// UnregisterIRQFD undoes RegisterIRQFD.
func (vm *VM) UnregisterIRQFD(efd int, gsi uint32) error {
	r := irqfd{FD: uint32(efd), GSI: gsi, Flags: irqfdFlagDeassign}
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("KVM_IRQFD deassign gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEventFD describes a guest store that KVM turns into an eventfd signal
// instead of an exit.
type IOEventFD struct {
	// FD is the eventfd to signal.
	FD int
	// Addr is the guest physical address (MMIO) or port (PIO).
	Addr uint64
	// Len is the store width in bytes: 1, 2, 4 or 8 (0 matches any width).
	Len uint32
	// PIO selects the port I/O space instead of MMIO.
	PIO bool
	// DataMatch, when set, restricts the match to stores of Data.
	DataMatch bool
	Data      uint64
}

func (e IOEventFD) raw(deassign bool) (ioeventfd, error) {
	switch e.Len {
	case 0, 1, 2, 4, 8:
	default:
		return ioeventfd{}, fmt.Errorf("ioeventfd at %#x: length %d is not 0, 1, 2, 4 or 8", e.Addr, e.Len)
	}
	r := ioeventfd{Addr: e.Addr, Len: e.Len, FD: int32(e.FD), DataMatch: e.Data}
	if e.PIO {
		r.Flags |= ioeventfdFlagPIO
	}
	if e.DataMatch {
		r.Flags |= ioeventfdFlagDataMatch
	}
	if deassign {
		r.Flags |= ioeventfdFlagDeassign
	}
	return r, nil
}

// RegisterIOEventFD registers e with KVM.
func (vm *VM) RegisterIOEventFD(e IOEventFD) error {
	r, err := e.raw(false)
	if err != nil {
		return err
	}
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD at %#x: %w", e.Addr, err)
	}
	return nil
}

// UnregisterIOEventFD removes a registration made with the same e.
func (vm *VM) UnregisterIOEventFD(e IOEventFD) error {
	r, err := e.raw(true)
	if err != nil {
		return err
	}
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD deassign at %#x: %w", e.Addr, err)
	}
	return nil
}

// SignalMSI injects a message-signalled interrupt. It fails with
// ErrNotSupported where the host lacks KVM_CAP_SIGNAL_MSI.
func (vm *VM) SignalMSI(m MSI) error {
	r, err := ioctlPtr(vm.fd, kvmSignalMSI, &m)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("KVM_SIGNAL_MSI: %w: %w", ErrNotSupported, err)
	}
	if err != nil {
		return fmt.Errorf("KVM_SIGNAL_MSI: %w", err)
	}
	if r == 0 {
		return fmt.Errorf("KVM_SIGNAL_MSI: the guest blocked the interrupt")
	}
	return nil
}
