package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// VCPU is a vCPU fd with its mmap'd struct kvm_run.
type VCPU struct {
	fd  int
	ID  int
	run []byte
}

// CreateVCPU creates vCPU id (its initial local APIC ID) and maps its
// kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	run, err := unix.Mmap(int(fd), 0, vm.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{fd: int(fd), ID: id, run: run}, nil
}

// Close unmaps kvm_run and closes the vCPU fd. Preconditions: no thread is
// in Run.
func (v *VCPU) Close() error {
	if v.fd < 0 {
		return nil
	}
	err := unix.Munmap(v.run)
	if cerr := unix.Close(v.fd); err == nil {
		err = cerr
	}
	v.fd, v.run = -1, nil
	return err
}

// ErrInterrupted is returned by Run when KVM_RUN returned EINTR: a signal
// arrived or immediate_exit was set. It is not a failure: the caller looks
// at why it was kicked and runs again.
var ErrInterrupted = errors.New("KVM_RUN interrupted")

// Run enters the guest until the next exit that needs the VMM and returns
// it decoded. Data slices in the Exit point into kvm_run: the caller fills
// an IO-in or MMIO-read exit's Data before the next Run.
func (v *VCPU) Run() (Exit, error) {
	for {
		_, err := ioctl(v.fd, kvmRun, 0)
		switch {
		case err == nil:
			return DecodeExit(v.run)
		case errors.Is(err, unix.EINTR):
			return Exit{Reason: ExitIntr}, ErrInterrupted
		case errors.Is(err, unix.EAGAIN):
			// Returned while the vCPU waits for INIT/SIPI; not an exit.
			continue
		default:
			return Exit{}, fmt.Errorf("KVM_RUN on vCPU %d: %w", v.ID, err)
		}
	}
}

// SetImmediateExit sets or clears kvm_run.immediate_exit: while set,
// KVM_RUN returns EINTR at once instead of entering the guest. Safe to call
// from any thread; pair it with a signal to the vCPU thread to also cut a
// KVM_RUN that is already inside the guest short.
func (v *VCPU) SetImmediateExit(on bool) { setImmediateExit(v.run, on) }

// Regs returns the general-purpose registers.
func (v *VCPU) Regs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(v.fd, kvmGetRegs, &r)
	return r, wrap("KVM_GET_REGS", err)
}

// SetRegs sets the general-purpose registers.
func (v *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(v.fd, kvmSetRegs, &r)
	return wrap("KVM_SET_REGS", err)
}

// Sregs returns the segment and control registers.
func (v *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(v.fd, kvmGetSregs, &s)
	return s, wrap("KVM_GET_SREGS", err)
}

// SetSregs sets the segment and control registers.
func (v *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(v.fd, kvmSetSregs, &s)
	return wrap("KVM_SET_SREGS", err)
}

// FPU returns the x87/SSE state.
func (v *VCPU) FPU() (FPU, error) {
	var f FPU
	_, err := ioctlPtr(v.fd, kvmGetFPU, &f)
	return f, wrap("KVM_GET_FPU", err)
}

// SetFPU sets the x87/SSE state.
func (v *VCPU) SetFPU(f FPU) error {
	_, err := ioctlPtr(v.fd, kvmSetFPU, &f)
	return wrap("KVM_SET_FPU", err)
}

// LAPIC returns the local APIC register page. Preconditions: in-kernel irqchip.
func (v *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	_, err := ioctlPtr(v.fd, kvmGetLAPIC, &l)
	return l, wrap("KVM_GET_LAPIC", err)
}

// SetLAPIC sets the local APIC register page. Preconditions: in-kernel irqchip.
func (v *VCPU) SetLAPIC(l LAPICState) error {
	_, err := ioctlPtr(v.fd, kvmSetLAPIC, &l)
	return wrap("KVM_SET_LAPIC", err)
}

// SetMSRs writes model-specific registers; KVM must accept all of them.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) > maxMSRs {
		return fmt.Errorf("KVM_SET_MSRS: %d entries, at most %d", len(entries), maxMSRs)
	}
	m := &msrs{NMSRs: uint32(len(entries))}
	copy(m.Entries[:], entries)
	n, err := ioctlPtr(v.fd, kvmSetMSRs, m)
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	if int(n) != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS: KVM refused MSR %#x", entries[n].Index)
	}
	return nil
}

// MSRs reads the model-specific registers with the given indices.
func (v *VCPU) MSRs(indices []uint32) ([]MSREntry, error) {
	if len(indices) > maxMSRs {
		return nil, fmt.Errorf("KVM_GET_MSRS: %d entries, at most %d", len(indices), maxMSRs)
	}
	m := &msrs{NMSRs: uint32(len(indices))}
	for i, idx := range indices {
		m.Entries[i].Index = idx
	}
	n, err := ioctlPtr(v.fd, kvmGetMSRs, m)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	if int(n) != len(indices) {
		return nil, fmt.Errorf("KVM_GET_MSRS: KVM cannot read MSR %#x", indices[n])
	}
	return append([]MSREntry(nil), m.Entries[:n]...), nil
}

// SetCPUID sets what CPUID returns in this vCPU.
func (v *VCPU) SetCPUID(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("KVM_SET_CPUID2: %d entries, at most %d", len(entries), maxCPUIDEntries)
	}
	c := &cpuid2{NEnt: uint32(len(entries))}
	copy(c.Entries[:], entries)
	_, err := ioctlPtr(v.fd, kvmSetCPUID2, c)
	return wrap("KVM_SET_CPUID2", err)
}

// CPUID returns what was set with SetCPUID.
func (v *VCPU) CPUID() ([]CPUIDEntry, error) {
	c := &cpuid2{NEnt: maxCPUIDEntries}
	if _, err := ioctlPtr(v.fd, kvmGetCPUID2, c); err != nil {
		return nil, fmt.Errorf("KVM_GET_CPUID2: %w", err)
	}
	if c.NEnt > maxCPUIDEntries {
		return nil, fmt.Errorf("KVM_GET_CPUID2 returned %d entries", c.NEnt)
	}
	return append([]CPUIDEntry(nil), c.Entries[:c.NEnt]...), nil
}

// MPState returns the vCPU's multiprocessing state (MPState*).
func (v *VCPU) MPState() (uint32, error) {
	var s mpState
	_, err := ioctlPtr(v.fd, kvmGetMPState, &s)
	return s.State, wrap("KVM_GET_MP_STATE", err)
}

// SetMPState sets the vCPU's multiprocessing state (MPState*).
func (v *VCPU) SetMPState(state uint32) error {
	s := mpState{State: state}
	_, err := ioctlPtr(v.fd, kvmSetMPState, &s)
	return wrap("KVM_SET_MP_STATE", err)
}

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}
