// Package mmio is the virtio-mmio version 2 transport (virtio 1.2, section
// 4.2.2): the 0x200-byte register block through which a guest driver finds
// a virtio device, negotiates features, programs queues and acknowledges
// interrupts. It implements bus.Device and forwards to a virtio.Device.
//
// Register accesses run on vCPU threads and never wait on host I/O: queue
// notifications only wake the device's queue goroutine. The one slow
// operation is a device reset (status 0), which waits for the device's
// goroutines to return.
//
// Accesses the specification does not allow (unaligned, not 32 bits wide
// below the configuration space, writes to read-only registers, feature or
// queue writes in the wrong device state) are ignored; reads of them return
// zeros. Legacy (version 1) devices, shared memory regions and queue reset
// are not supported.
package mmio

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmctl/vmctl/hypervisor/bus"
	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// Size is the length of the register block on the MMIO bus.
const Size = 0x200

// Register offsets (virtio 1.2, table 4.1).
const (
	RegMagicValue        = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegSHMSel            = 0x0ac
	RegSHMLenLow         = 0x0b0
	RegSHMLenHigh        = 0x0b4
	RegSHMBaseLow        = 0x0b8
	RegSHMBaseHigh       = 0x0bc
	RegConfigGeneration  = 0x0fc
	RegConfig            = 0x100
)

// Identification values.
const (
	MagicValue = 0x74726976 // "virt"
	Version    = 2
	// VendorID is "VMCT" in little-endian ASCII; drivers do not match on it.
	VendorID = 0x54434d56
)

// Interrupt status bits.
const (
	InterruptUsedBuffer   uint32 = 1
	InterruptConfigChange uint32 = 2
)

// NotifyOffset is where the driver writes a queue index to kick it; the VMM
// may register an ioeventfd there (one per queue, matching the index) and
// call Notify from the goroutine that waits on it.
const NotifyOffset = RegQueueNotify

type queueRegs struct {
	num                  uint32
	ready                bool
	desc, driver, device uint64
}

// Transport is one virtio-mmio register block. It is safe for concurrent
// use by several vCPUs and an ioeventfd goroutine.
type Transport struct {
	dev      virtio.Device
	mem      memory.Memory
	irq      virtio.Interrupt
	maxSizes []uint16
	features uint64 // offered, always including VERSION_1

	// interruptStatus is set by device goroutines (through usedIRQ) and
	// cleared by the driver; it is atomic so device goroutines never wait
	// for mu, which a reset holds while it waits for them.
	interruptStatus atomic.Uint32
	// acks counts the driver's InterruptACK writes; the re-raise timer
	// compares it across its period.
	acks atomic.Uint64
	// reraised counts interrupts raised again because the driver left
	// them unacknowledged for a whole period.
	reraised atomic.Uint64
	rr       reraiseTimer
	// active is true between a successful DRIVER_OK and the next reset.
	// It is written under mu and read without it by queue kicks.
	active atomic.Bool

	mu               sync.Mutex // guards the fields below
	status           uint32
	deviceFeatureSel uint32
	driverFeatureSel uint32
	driverFeatures   uint64
	queueSel         uint32
	queues           []queueRegs
	configGeneration uint32
	// built are the queues the device got at activation, for Save.
	built []*queue.Queue
}

var _ bus.Device = (*Transport)(nil)

// New wraps dev in a virtio-mmio register block. mem is handed to the
// device on activation; irq is the device's interrupt line.
func New(dev virtio.Device, mem memory.Memory, irq virtio.Interrupt) *Transport {
	sizes := dev.QueueMaxSizes()
	return &Transport{
		dev:      dev,
		mem:      mem,
		irq:      irq,
		maxSizes: sizes,
		features: dev.Features() | virtio.FeatureVersion1,
		queues:   make([]queueRegs, len(sizes)),
	}
}

// Notify kicks queue index of the device, exactly as a guest write of
// index to QueueNotify does. It never blocks.
func (t *Transport) Notify(index uint16) {
	if int(index) < len(t.maxSizes) {
		t.dev.QueueNotify(int(index))
	}
}

// ConfigChanged tells the driver that the device configuration changed: it
// bumps ConfigGeneration and raises a configuration change interrupt.
func (t *Transport) ConfigChanged() error {
	t.mu.Lock()
	t.configGeneration++
	t.mu.Unlock()
	return t.raise(InterruptConfigChange)
}

// usedIRQ is the Interrupt a device gets: it flags a used buffer
// notification before raising the line, as the driver's handler expects.
type usedIRQ struct{ t *Transport }

func (u usedIRQ) Trigger() error {
	return u.t.raise(InterruptUsedBuffer)
}

// ReraiseAfter is how long an interrupt may stay unacknowledged before the
// transport raises it again.
//
// The line is an edge (an irqfd pulse on an IOAPIC pin), and an edge can be
// lost on its way: a pin masked at that instant drops it, and so can a
// nested hypervisor's event injection. A lost edge would strand the driver
// for good: virtio-net's receive path, for one, posts no buffers until it
// hears about the used ones, and the device, with no buffers, has nothing
// to signal. QEMU's virtio-mmio holds a level line while the status is
// non-zero, which cannot be lost; the timer gives the edge the same
// guarantee. A driver that got the interrupt acknowledges it in its
// handler's first instructions, so a re-raise is rare, and harmless when it
// does happen: the handler finds the status bits set and serves them.
const ReraiseAfter = 100 * time.Millisecond

// reraiseTimer re-raises the interrupt while the status stays set and
// unacknowledged. It runs only while an interrupt is outstanding.
type reraiseTimer struct {
	mu      sync.Mutex
	timer   *time.Timer // armed while an interrupt is outstanding
	acks    uint64      // Transport.acks when the timer was armed
	stopped bool        // Close ran: never arm again
}

// raise sets status bits and raises the line, and makes sure the re-raise
// timer watches them.
func (t *Transport) raise(bits uint32) error {
	t.interruptStatus.Or(bits)
	err := t.irq.Trigger()
	t.rr.mu.Lock()
	if t.rr.timer == nil && !t.rr.stopped {
		t.rr.acks = t.acks.Load()
		t.rr.timer = time.AfterFunc(ReraiseAfter, t.reraise)
	}
	t.rr.mu.Unlock()
	return err
}

// reraise runs one period after the timer was armed: with the status still
// set and not one acknowledgement since, the driver missed the interrupt,
// so it is raised again. The timer stays armed while bits are set.
func (t *Transport) reraise() {
	t.rr.mu.Lock()
	defer t.rr.mu.Unlock()
	if t.rr.stopped {
		return
	}
	if t.interruptStatus.Load() == 0 {
		t.rr.timer = nil
		return
	}
	if acks := t.acks.Load(); acks == t.rr.acks {
		t.reraised.Add(1)
		if err := t.irq.Trigger(); err != nil {
			slog.Warn("virtio-mmio: raising an unacknowledged interrupt again", "device", t.dev.DeviceID(), "err", err)
		}
	} else {
		t.rr.acks = acks
	}
	t.rr.timer.Reset(ReraiseAfter)
}

// InterruptStatus is the InterruptStatus register: the bits raised and not
// yet acknowledged.
func (t *Transport) InterruptStatus() uint32 { return t.interruptStatus.Load() }

// Reraised reports how many interrupts were raised again because the
// driver had not acknowledged them (see ReraiseAfter).
func (t *Transport) Reraised() uint64 { return t.reraised.Load() }

// Close stops the re-raise timer for good; after it returns the transport
// never touches its interrupt again. Call it before closing the line.
func (t *Transport) Close() {
	t.rr.mu.Lock()
	defer t.rr.mu.Unlock()
	t.rr.stopped = true
	if t.rr.timer != nil {
		t.rr.timer.Stop()
		t.rr.timer = nil
	}
}

// Read implements bus.Device.
func (t *Transport) Read(offset uint64, data []byte) {
	clear(data)
	if offset >= RegConfig {
		if offset < Size && naturallyAligned(offset, len(data)) {
			t.mu.Lock()
			t.dev.ReadConfig(offset-RegConfig, data)
			t.mu.Unlock()
		}
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		return
	}
	binary.LittleEndian.PutUint32(data, t.readReg(offset))
}

func (t *Transport) readReg(offset uint64) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegMagicValue:
		return MagicValue
	case RegVersion:
		return Version
	case RegDeviceID:
		return uint32(t.dev.DeviceID())
	case RegVendorID:
		return VendorID
	case RegDeviceFeatures:
		return featureHalf(t.features, t.deviceFeatureSel)
	case RegQueueNumMax:
		if int(t.queueSel) < len(t.maxSizes) {
			return uint32(t.maxSizes[t.queueSel])
		}
	case RegQueueReady:
		if q := t.selected(); q != nil && q.ready {
			return 1
		}
	case RegInterruptStatus:
		return t.interruptStatus.Load()
	case RegStatus:
		return t.status
	case RegSHMLenLow, RegSHMLenHigh, RegSHMBaseLow, RegSHMBaseHigh:
		return ^uint32(0) // no shared memory region (virtio 1.2, 4.2.2)
	case RegConfigGeneration:
		return t.configGeneration
	}
	return 0
}

func featureHalf(f uint64, sel uint32) uint32 {
	switch sel {
	case 0:
		return uint32(f)
	case 1:
		return uint32(f >> 32)
	}
	return 0
}

func naturallyAligned(offset uint64, n int) bool {
	switch n {
	case 1, 2, 4, 8:
		return offset%uint64(n) == 0
	}
	return false
}

func (t *Transport) selected() *queueRegs {
	if int(t.queueSel) < len(t.queues) {
		return &t.queues[t.queueSel]
	}
	return nil
}

// Write implements bus.Device.
func (t *Transport) Write(offset uint64, data []byte) {
	if offset >= RegConfig {
		if offset < Size && naturallyAligned(offset, len(data)) {
			t.mu.Lock()
			t.dev.WriteConfig(offset-RegConfig, data)
			t.mu.Unlock()
		}
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	switch offset {
	case RegQueueNotify:
		// Not under mu: a kick must not wait behind a reset or another vCPU.
		if t.active.Load() {
			t.Notify(uint16(v))
		}
		return
	case RegInterruptACK:
		t.interruptStatus.And(^v)
		t.acks.Add(1)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegDeviceFeaturesSel:
		t.deviceFeatureSel = v
	case RegDriverFeaturesSel:
		t.driverFeatureSel = v
	case RegDriverFeatures:
		// Features are negotiable between DRIVER and FEATURES_OK.
		if t.status&virtio.StatusDriver == 0 || t.status&virtio.StatusFeaturesOK != 0 {
			return
		}
		switch t.driverFeatureSel {
		case 0:
			t.driverFeatures = t.driverFeatures&^0xffffffff | uint64(v)
		case 1:
			t.driverFeatures = t.driverFeatures&0xffffffff | uint64(v)<<32
		}
	case RegQueueSel:
		t.queueSel = v
	case RegQueueNum, RegQueueReady, RegQueueDescLow, RegQueueDescHigh,
		RegQueueDriverLow, RegQueueDriverHigh, RegQueueDeviceLow, RegQueueDeviceHigh:
		t.writeQueueReg(offset, v)
	case RegStatus:
		t.writeStatus(v)
	}
}

// writeQueueReg programs the selected queue. Queues are set up after
// FEATURES_OK and before DRIVER_OK, and a ready queue is frozen.
func (t *Transport) writeQueueReg(offset uint64, v uint32) {
	q := t.selected()
	if q == nil || t.status&virtio.StatusFeaturesOK == 0 || t.status&virtio.StatusDriverOK != 0 {
		return
	}
	if offset == RegQueueReady {
		q.ready = v&1 != 0
		return
	}
	if q.ready {
		return
	}
	setLow := func(a *uint64) { *a = *a&^0xffffffff | uint64(v) }
	setHigh := func(a *uint64) { *a = *a&0xffffffff | uint64(v)<<32 }
	switch offset {
	case RegQueueNum:
		q.num = v
	case RegQueueDescLow:
		setLow(&q.desc)
	case RegQueueDescHigh:
		setHigh(&q.desc)
	case RegQueueDriverLow:
		setLow(&q.driver)
	case RegQueueDriverHigh:
		setHigh(&q.driver)
	case RegQueueDeviceLow:
		setLow(&q.device)
	case RegQueueDeviceHigh:
		setHigh(&q.device)
	}
}

// writeStatus implements the device status state machine (virtio 1.2,
// 3.1.1). Preconditions: t.mu held.
func (t *Transport) writeStatus(v uint32) {
	// The device status field is one byte (virtio 1.x, 2.1); a driver
	// writing more sets nothing more.
	v &= 0xff
	if v == 0 {
		t.reset() // any --0--> reset
		return
	}
	// DEVICE_NEEDS_RESET is the device's to set and only a reset clears it:
	// a driver can neither set it nor drop it.
	v = v&^virtio.StatusDeviceNeedsReset | t.status&virtio.StatusDeviceNeedsReset
	if t.status&^v != 0 {
		return // only a reset may clear bits
	}
	added := v &^ t.status
	if added&virtio.StatusFeaturesOK != 0 {
		// DRIVER --FEATURES_OK--> FEATURES_OK, unless the driver acked a
		// feature we did not offer or is a legacy driver; then the bit
		// stays clear and the driver, reading it back, gives up.
		if t.status&virtio.StatusDriver == 0 || t.driverFeatures&^t.features != 0 ||
			t.driverFeatures&virtio.FeatureVersion1 == 0 {
			v &^= virtio.StatusFeaturesOK
		}
	}
	if added&virtio.StatusDriverOK != 0 {
		if v&virtio.StatusFeaturesOK == 0 {
			v &^= virtio.StatusDriverOK
		} else if err := t.activate(); err != nil {
			// FEATURES_OK --DRIVER_OK--> NEEDS_RESET on a bad setup.
			slog.Warn("virtio-mmio: device activation failed", "device", t.dev.DeviceID(), "err", err)
			v |= virtio.StatusDeviceNeedsReset
			t.status = v
			_ = t.raise(InterruptConfigChange)
			return
		}
	}
	t.status = v
}

// activate builds the ready queues and starts the device.
// Preconditions: t.mu held, device inactive.
func (t *Transport) activate() error { return t.activateAt(nil) }

// activateAt is activate with the queues placed at saved positions (none:
// at index 0 of both rings, as after a reset).
func (t *Transport) activateAt(saved []QueueState) error {
	qs := make([]*queue.Queue, len(t.queues))
	for i, r := range t.queues {
		if !r.ready {
			continue
		}
		if r.num > uint32(t.maxSizes[i]) {
			return fmt.Errorf("queue %d: size %d above the maximum %d", i, r.num, t.maxSizes[i])
		}
		q, err := queue.New(t.mem, queue.Config{
			Size:      uint16(r.num),
			DescTable: r.desc,
			AvailRing: r.driver,
			UsedRing:  r.device,
			EventIdx:  t.driverFeatures&virtio.FeatureEventIdx != 0,
			Indirect:  t.driverFeatures&virtio.FeatureIndirectDesc != 0,
		})
		if err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
		if saved != nil {
			if err := q.Resume(saved[i].Position); err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
		}
		qs[i] = q
	}
	if err := t.dev.Activate(t.mem, t.driverFeatures, qs, usedIRQ{t}); err != nil {
		return err
	}
	t.built = qs
	t.active.Store(true) // FEATURES_OK --DRIVER_OK--> active
	return nil
}

// reset returns the device and every register to the initial state.
// Preconditions: t.mu held.
func (t *Transport) reset() {
	if t.active.Load() {
		t.dev.Reset()
		t.active.Store(false)
	}
	t.status = 0
	t.deviceFeatureSel, t.driverFeatureSel, t.driverFeatures = 0, 0, 0
	t.queueSel = 0
	clear(t.queues)
	t.built = nil
	t.interruptStatus.Store(0)
}
