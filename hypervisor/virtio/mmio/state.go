package mmio

import (
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// State is a transport's registers and its queues' positions: with guest
// RAM, everything a device needs to continue in another process.
type State struct {
	Status           uint32
	DeviceFeatureSel uint32
	DriverFeatureSel uint32
	DriverFeatures   uint64
	QueueSel         uint32
	ConfigGeneration uint32
	InterruptStatus  uint32
	Queues           []QueueState
}

// QueueState is one queue's registers and, for a queue the active device
// used, its position.
type QueueState struct {
	Num                  uint32
	Ready                bool
	Desc, Driver, Device uint64
	Position             queue.Position
}

// Save stops the device (its queue goroutines return, as at a reset, but
// the registers and rings are kept) and returns the transport's state.
// The device does not run again: Save is the last thing a saved VM's
// devices do. Preconditions: the vCPUs are paused, so the driver does not
// touch the registers while they are read.
func (t *Transport) Save() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active.Load() {
		t.dev.Reset() // returns once the queue goroutines have: the positions are final
		t.active.Store(false)
	}
	s := State{
		Status: t.status, DeviceFeatureSel: t.deviceFeatureSel, DriverFeatureSel: t.driverFeatureSel,
		DriverFeatures: t.driverFeatures, QueueSel: t.queueSel, ConfigGeneration: t.configGeneration,
		InterruptStatus: t.interruptStatus.Load(),
	}
	for i, r := range t.queues {
		qs := QueueState{Num: r.num, Ready: r.ready, Desc: r.desc, Driver: r.driver, Device: r.device}
		if i < len(t.built) && t.built[i] != nil {
			qs.Position = t.built[i].Position()
		}
		s.Queues = append(s.Queues, qs)
	}
	return s
}

// Restore puts a saved state into a new, never used transport over the
// same guest RAM: the registers are set as the driver left them and an
// active device is activated again with its queues at their saved
// positions. An interrupt the driver had not acknowledged is raised again.
func (t *Transport) Restore(s State) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status != 0 || t.active.Load() {
		return fmt.Errorf("restore %v device: the transport is in use", t.dev.DeviceID())
	}
	if len(s.Queues) != len(t.queues) {
		return fmt.Errorf("restore %v device: %d saved queues, the device has %d", t.dev.DeviceID(), len(s.Queues), len(t.queues))
	}
	if s.DriverFeatures&^t.features != 0 {
		return fmt.Errorf("restore %v device: the driver acked features %#x this device does not offer", t.dev.DeviceID(), s.DriverFeatures&^t.features)
	}
	t.status = s.Status & 0xff
	t.deviceFeatureSel, t.driverFeatureSel, t.driverFeatures = s.DeviceFeatureSel, s.DriverFeatureSel, s.DriverFeatures
	t.queueSel, t.configGeneration = s.QueueSel, s.ConfigGeneration
	for i, q := range s.Queues {
		t.queues[i] = queueRegs{num: q.Num, ready: q.Ready, desc: q.Desc, driver: q.Driver, device: q.Device}
	}
	if t.status&virtio.StatusDriverOK != 0 && t.status&virtio.StatusDeviceNeedsReset == 0 {
		if err := t.activateAt(s.Queues); err != nil {
			t.reset()
			return fmt.Errorf("restore %v device: %w", t.dev.DeviceID(), err)
		}
	}
	if s.InterruptStatus != 0 {
		// Outside t.mu would be nicer, but raise takes only the timer's lock.
		_ = t.raise(s.InterruptStatus)
	}
	return nil
}
