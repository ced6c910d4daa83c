package machine

import (
	"errors"
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/devices"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

// ErrState is wrapped by lifecycle calls made in the wrong state.
var ErrState = errors.New("invalid in the VM's current state")

// State returns the VM's lifecycle state.
func (m *Machine) State() vcpu.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Start runs the vCPUs. Created --Start--> Running
func (m *Machine) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != vcpu.Created {
		return fmt.Errorf("start: VM is %v: %w", m.state, ErrState)
	}
	for _, v := range m.vcpus {
		if err := v.Start(); err != nil {
			return err
		}
	}
	m.state = vcpu.Running
	m.cfg.Log.Info("VM started", "vcpus", len(m.vcpus), "memory_mib", m.cfg.MemoryMiB, "cmdline", m.Cmdline)
	go m.watch()
	return nil
}

// watch ends the VM when any vCPU ends, then waits for all of them.
func (m *Machine) watch() {
	ended := make(chan vcpu.Result, len(m.vcpus))
	for _, v := range m.vcpus {
		go func() { ended <- v.Wait() }()
	}
	for range m.vcpus {
		m.end(<-ended)
	}
	m.mu.Lock()
	m.state = vcpu.Exited
	m.mu.Unlock()
	if r := m.result.Reason; r == vcpu.ReasonTripleFault || r == vcpu.ReasonInternalError || r == vcpu.ReasonEmulationFailure {
		m.logCPUs()
	}
	m.stopVirtio()
	m.cfg.Log.Info("VM exited", "reason", m.result.Reason.String(), "detail", m.result.Detail, "exit_code", m.result.Reason.ExitCode())
	close(m.done)
}

// end records the VM's result (the first call wins) and stops every vCPU.
// It never blocks, so device callbacks on vCPU threads may call it.
func (m *Machine) end(r vcpu.Result) {
	m.endOnce.Do(func() {
		m.result = r
		m.cfg.Log.Info("VM ending", "reason", r.Reason.String(), "detail", r.Detail)
	})
	for _, v := range m.vcpus {
		v.RequestStop(m.result)
	}
}

// Pause stops every vCPU at its next exit. Running --Pause--> Paused
func (m *Machine) Pause() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case vcpu.Paused:
		return nil
	case vcpu.Running:
	default:
		return fmt.Errorf("pause: VM is %v: %w", m.state, ErrState)
	}
	for _, v := range m.vcpus {
		if err := v.Pause(); err != nil {
			return fmt.Errorf("pause vCPU: %w", err)
		}
	}
	m.state = vcpu.Paused
	return nil
}

// Resume lets a paused VM run again. Paused --Resume--> Running
func (m *Machine) Resume() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.state {
	case vcpu.Running:
		return nil
	case vcpu.Paused:
	default:
		return fmt.Errorf("resume: VM is %v: %w", m.state, ErrState)
	}
	for _, v := range m.vcpus {
		if err := v.Resume(); err != nil {
			return fmt.Errorf("resume vCPU: %w", err)
		}
	}
	m.state = vcpu.Running
	return nil
}

// Stop ends the VM with reason "stopped" and returns at once; Wait sees
// it end. Running|Paused --Stop--> Exited. A VM never started just exits.
func (m *Machine) Stop() {
	m.mu.Lock()
	created := m.state == vcpu.Created
	if created {
		m.state = vcpu.Exited
	}
	m.mu.Unlock()
	if created {
		m.endOnce.Do(func() { m.result = vcpu.Result{Reason: vcpu.ReasonStopped, Detail: "stopped before start"} })
		close(m.done)
		return
	}
	m.end(vcpu.Result{Reason: vcpu.ReasonStopped, Detail: "stop requested"})
}

// Wait blocks until the VM has exited and returns why.
func (m *Machine) Wait() vcpu.Result {
	<-m.done
	return m.result
}

// Done is closed when the VM has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// BootEvents returns what the guest wrote to the boot-timer port.
func (m *Machine) BootEvents() []devices.BootEvent { return m.boot.Events() }

// Close releases everything New made. A VM that still runs is stopped
// first.
func (m *Machine) Close() error {
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	if len(m.vcpus) > 0 && (st == vcpu.Running || st == vcpu.Paused || st == vcpu.Created) {
		m.Stop()
		m.Wait()
	}
	m.stopVirtio()
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for _, c := range m.cpus {
		keep(c.Close())
	}
	m.cpus = nil
	if m.vm != nil {
		keep(m.vm.Close())
		m.vm = nil
	}
	if m.mem != nil {
		keep(m.mem.Close())
		m.mem = nil
	}
	return first
}

// logCPUs logs where each vCPU stopped, for a VM that died of a guest
// fault.
func (m *Machine) logCPUs() {
	for i, c := range m.cpus {
		r, err := c.Regs()
		if err != nil {
			continue
		}
		sr, err := c.Sregs()
		if err != nil {
			continue
		}
		m.cfg.Log.Info("vCPU state at the end", "vcpu", i, "rip", fmt.Sprintf("%#x", r.RIP), "rsp", fmt.Sprintf("%#x", r.RSP),
			"rflags", fmt.Sprintf("%#x", r.RFLAGS), "cr0", fmt.Sprintf("%#x", sr.CR0), "cr2", fmt.Sprintf("%#x", sr.CR2),
			"cr3", fmt.Sprintf("%#x", sr.CR3), "cr4", fmt.Sprintf("%#x", sr.CR4), "efer", fmt.Sprintf("%#x", sr.EFER),
			"idt", fmt.Sprintf("%#x/%d", sr.IDT.Base, sr.IDT.Limit), "tr", fmt.Sprintf("%#x", sr.TR.Base))
	}
}
