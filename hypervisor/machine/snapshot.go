package machine

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"github.com/vmctl/vmctl/hypervisor/devices"
	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
)

// Snapshot is a saved VM that New builds a new one from (Config.Restore):
// the state Save wrote and the guest RAM file it filled. The new VM has
// the saved one's vCPUs, RAM and devices (the same number of disks, the
// same vsock and NIC presence), each on the new configuration's backing
// files, socket and tap, and continues where the saved one stopped. The
// kernel command line is the saved guest's.
type Snapshot struct {
	State []byte
	// Memory is mapped copy-on-write: VMs restored from one file share its
	// pages until they write them. It may be closed once New returns.
	Memory *os.File
}

// snapshotMagic opens a state file; snapshotFormat changes whenever
// savedVM does.
const (
	snapshotMagic  = "vmctl-vmm VM state\n"
	snapshotFormat = 1
)

// savedVM is a VM's state besides its RAM.
type savedVM struct {
	Format    int
	VCPUs     int
	MemoryMiB int
	Cmdline   string
	CPUs      []savedCPU
	Chips     []kvm.IRQChip // PIC master, PIC slave, IOAPIC
	PIT       kvm.PITState
	Clock     uint64 // kvmclock, ns
	Serial    devices.SerialState
	Devices   []savedDevice
}

type savedCPU struct {
	Regs    kvm.Regs
	Sregs   kvm.Sregs
	FPU     kvm.FPU
	XSave   kvm.XSave
	XCRs    kvm.XCRs
	Events  kvm.VCPUEvents
	Debug   kvm.DebugRegs
	LAPIC   kvm.LAPICState
	MPState uint32
	MSRs    []kvm.MSREntry
}

type savedDevice struct {
	Name      string
	ID        virtio.DeviceID
	Transport mmio.State
}

// msrTSCDeadline is IA32_TSC_DEADLINE: restored after the local APIC,
// whose timer mode decides whether KVM arms it.
const msrTSCDeadline = 0x6e0

// SaveStats says what Save wrote and how long the guest was stopped.
type SaveStats struct {
	StateBytes  int
	MemoryBytes int64 // RAM written: pages not all zeros
	Paused      time.Duration
}

// quiesceTimeout bounds how long Save waits for the devices to have no
// host connection (the host just closed its agent connection, and the
// guest has to see it go).
const quiesceTimeout = 5 * time.Second

// Save writes the running VM's state to state and its RAM to mem (an empty
// file; nil for a VM whose RAM is Config.RAM's file, which holds it
// already), for New to build VMs from (Config.Restore). It waits until no
// device holds a host connection, pauses the vCPUs, reads their state and
// the in-kernel irqchip, PIT and clock, stops the devices and writes RAM.
// The VM then ends with ReasonStopped: a saved VM does not run on, its
// restored copies do. A VM with shared directories cannot be saved (its
// open files cannot follow it). Before the devices stop, a failure leaves
// the VM running; after, it ends the VM.
func (m *Machine) Save(state io.Writer, mem *os.File) (SaveStats, error) {
	var st SaveStats
	if len(m.cfg.Shares) > 0 {
		return st, errors.New("save: a VM with shared directories cannot be saved (its open host files cannot follow it)")
	}
	if (mem == nil) != (m.cfg.RAM != nil && m.cfg.Restore == nil) {
		return st, errors.New("save: give a RAM file unless the guest's RAM is a shared file already")
	}
	if s := m.State(); s != vcpu.Running && s != vcpu.Paused {
		return st, fmt.Errorf("save: VM is %v: %w", s, ErrState)
	}
	wasPaused := m.State() == vcpu.Paused
	if wasPaused {
		if err := m.Resume(); err != nil { // let the guest see its host connections end
			return st, err
		}
	}
	deadline := time.Now().Add(quiesceTimeout)
	for {
		for !m.devicesIdle() {
			if time.Now().After(deadline) {
				return st, fmt.Errorf("save: a device still has host connections after %v", quiesceTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := m.Pause(); err != nil {
			return st, err
		}
		if m.devicesIdle() {
			break
		}
		if err := m.Resume(); err != nil { // a host connected meanwhile
			return st, err
		}
	}
	paused := time.Now()
	saved, err := m.saveKVM()
	if err != nil {
		if rerr := m.Resume(); rerr != nil {
			m.cfg.Log.Warn("resume after a failed save", "err", rerr)
		}
		return st, fmt.Errorf("save: %w", err)
	}
	// From here on the devices are stopped: the VM ends whatever happens.
	defer m.end(vcpu.Result{Reason: vcpu.ReasonStopped, Detail: "saved"})
	saved.Serial = m.serial.Save()
	for _, vd := range m.virtio {
		saved.Devices = append(saved.Devices, savedDevice{Name: vd.name, ID: vd.dev.DeviceID(), Transport: vd.transport.Save()})
	}
	if mem != nil {
		if st.MemoryBytes, err = m.mem.SaveTo(mem); err != nil {
			return st, fmt.Errorf("save: %w", err)
		}
		if err := mem.Sync(); err != nil {
			return st, fmt.Errorf("save: guest RAM: %w", err)
		}
	}
	st.Paused = time.Since(paused)
	b, err := encodeSnapshot(saved)
	if err != nil {
		return st, err
	}
	if _, err := state.Write(b); err != nil {
		return st, fmt.Errorf("save: state: %w", err)
	}
	st.StateBytes = len(b)
	m.cfg.Log.Info("VM saved", "state_bytes", st.StateBytes, "memory_bytes", st.MemoryBytes, "paused", st.Paused.String())
	return st, nil
}

// devicesIdle reports whether no device holds host connections.
func (m *Machine) devicesIdle() bool {
	for _, vd := range m.virtio {
		if d, ok := vd.dev.(interface{ Idle() bool }); ok && !d.Idle() {
			return false
		}
	}
	return true
}

// saveKVM reads the paused VM's vCPU and in-kernel device state.
func (m *Machine) saveKVM() (*savedVM, error) {
	s := &savedVM{Format: snapshotFormat, VCPUs: m.cfg.VCPUs, MemoryMiB: m.cfg.MemoryMiB, Cmdline: m.Cmdline}
	s.CPUs = make([]savedCPU, len(m.cpus))
	for i, c := range m.cpus {
		err := m.vcpus[i].Do(func() error {
			var err error
			s.CPUs[i], err = m.saveCPU(c)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	for _, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		c, err := m.vm.IRQChip(id)
		if err != nil {
			return nil, err
		}
		s.Chips = append(s.Chips, c)
	}
	var err error
	if s.PIT, err = m.vm.PIT(); err != nil {
		return nil, err
	}
	clock, err := m.vm.Clock()
	if err != nil {
		return nil, err
	}
	s.Clock = clock.Clock
	return s, nil
}

// saveCPU reads one vCPU's state on its own thread. KVM_RUN with
// immediate_exit first completes an I/O access the guest is in the middle
// of, so the registers include its result.
func (m *Machine) saveCPU(c *kvm.VCPU) (savedCPU, error) {
	var s savedCPU
	c.SetImmediateExit(true)
	_, err := c.Run()
	c.SetImmediateExit(false)
	if err != nil && !errors.Is(err, kvm.ErrInterrupted) {
		return s, err
	}
	if s.MPState, err = c.MPState(); err != nil {
		return s, err
	}
	if s.Regs, err = c.Regs(); err != nil {
		return s, err
	}
	if s.Sregs, err = c.Sregs(); err != nil {
		return s, err
	}
	if s.FPU, err = c.FPU(); err != nil {
		return s, err
	}
	if s.XSave, err = c.XSave(); err != nil {
		return s, err
	}
	if s.XCRs, err = c.XCRs(); err != nil {
		return s, err
	}
	if s.Debug, err = c.DebugRegs(); err != nil {
		return s, err
	}
	if s.LAPIC, err = c.LAPIC(); err != nil {
		return s, err
	}
	// One at a time: KVM lists MSRs for saving that a given vCPU cannot
	// read (features its CPUID does not have), and a batch stops at the
	// first of those.
	for _, idx := range m.msrIndex {
		if e, err := c.MSRs([]uint32{idx}); err == nil {
			s.MSRs = append(s.MSRs, e...)
		}
	}
	// Last: reading the rest may not change them, and they must be current.
	if s.Events, err = c.Events(); err != nil {
		return s, err
	}
	return s, nil
}

// restoreCPU writes a saved vCPU's state, in the order QEMU and
// Firecracker use: special registers (paging, EFER) before the MSRs that
// depend on them, the local APIC before the TSC deadline it arms, pending
// events last.
func (m *Machine) restoreCPU(c *kvm.VCPU, s savedCPU) error {
	if err := c.SetSregs(s.Sregs); err != nil {
		return err
	}
	if err := c.SetRegs(s.Regs); err != nil {
		return err
	}
	if err := c.SetFPU(s.FPU); err != nil {
		return err
	}
	if err := c.SetXSave(s.XSave); err != nil {
		return err
	}
	if s.XCRs.Count() > 0 {
		if err := c.SetXCRs(s.XCRs); err != nil {
			return err
		}
	}
	var deadline []kvm.MSREntry
	var rest []kvm.MSREntry
	for _, e := range s.MSRs {
		if e.Index == msrTSCDeadline {
			deadline = append(deadline, e)
		} else {
			rest = append(rest, e)
		}
	}
	if err := m.setMSRs(c, rest); err != nil {
		return err
	}
	if err := c.SetMPState(s.MPState); err != nil {
		return err
	}
	if err := c.SetLAPIC(s.LAPIC); err != nil {
		return err
	}
	if err := m.setMSRs(c, deadline); err != nil {
		return err
	}
	if err := c.SetDebugRegs(s.Debug); err != nil {
		return err
	}
	return c.SetEvents(s.Events)
}

// setMSRs writes entries in batches.
func (m *Machine) setMSRs(c *kvm.VCPU, entries []kvm.MSREntry) error {
	for i := 0; i < len(entries); i += 32 {
		if err := c.SetMSRs(entries[i:min(i+32, len(entries))]); err != nil {
			return err
		}
	}
	return nil
}

// restoreKVM writes the saved in-kernel devices' state.
func (m *Machine) restoreKVM(s *savedVM) error {
	if err := m.vm.SetPIT(s.PIT); err != nil {
		return err
	}
	for _, c := range s.Chips {
		if err := m.vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	return m.vm.SetClock(s.Clock)
}

// restoreDevices puts the saved registers and queue positions into the new
// VM's devices, which start serving their queues at once.
func (m *Machine) restoreDevices(s *savedVM) error {
	m.serial.Restore(s.Serial)
	for i, vd := range m.virtio {
		if err := vd.transport.Restore(s.Devices[i].Transport); err != nil {
			return fmt.Errorf("%s: %w", vd.name, err)
		}
	}
	return nil
}

// checkDevices refuses a configuration whose devices differ from the
// saved VM's.
func (m *Machine) checkDevices(s *savedVM) error {
	have := func(ds []savedDevice) string {
		var b bytes.Buffer
		for _, d := range ds {
			fmt.Fprintf(&b, " %s", d.Name)
		}
		return b.String()
	}
	var mine []savedDevice
	for _, vd := range m.virtio {
		mine = append(mine, savedDevice{Name: vd.name, ID: vd.dev.DeviceID()})
	}
	if len(mine) != len(s.Devices) {
		return fmt.Errorf("restore: the saved VM has devices%s, this configuration%s", have(s.Devices), have(mine))
	}
	for i := range mine {
		if mine[i].Name != s.Devices[i].Name || mine[i].ID != s.Devices[i].ID {
			return fmt.Errorf("restore: the saved VM has devices%s, this configuration%s", have(s.Devices), have(mine))
		}
	}
	return nil
}

// encodeSnapshot frames the state: magic, gob, CRC-32C of the gob.
func encodeSnapshot(s *savedVM) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(snapshotMagic)
	if err := gob.NewEncoder(&b).Encode(s); err != nil {
		return nil, fmt.Errorf("save: encode state: %w", err)
	}
	sum := crc32.Checksum(b.Bytes()[len(snapshotMagic):], crc32.MakeTable(crc32.Castagnoli))
	return binary.LittleEndian.AppendUint32(b.Bytes(), sum), nil
}

// decodeSnapshot checks and decodes what encodeSnapshot wrote.
func decodeSnapshot(b []byte) (*savedVM, error) {
	if len(b) < len(snapshotMagic)+4 || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("restore: not a vmctl-vmm VM state")
	}
	body := b[len(snapshotMagic) : len(b)-4]
	if crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("restore: the VM state is damaged (checksum mismatch)")
	}
	var s savedVM
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(&s); err != nil {
		return nil, fmt.Errorf("restore: decode state: %w", err)
	}
	if s.Format != snapshotFormat {
		return nil, fmt.Errorf("restore: VM state format %d, this VMM reads %d", s.Format, snapshotFormat)
	}
	if len(s.CPUs) != s.VCPUs || len(s.Chips) != 3 {
		return nil, fmt.Errorf("restore: the VM state holds %d vCPUs of %d and %d interrupt controllers of 3", len(s.CPUs), s.VCPUs, len(s.Chips))
	}
	return &s, nil
}
