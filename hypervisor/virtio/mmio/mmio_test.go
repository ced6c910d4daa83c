package mmio

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// fakeDevice records what the transport asks of it.
type fakeDevice struct {
	mu          sync.Mutex
	config      [8]byte
	activations int
	resets      int
	features    uint64
	queues      []*queue.Queue
	irq         virtio.Interrupt
	notified    []int
	activateErr error
}

func (d *fakeDevice) DeviceID() virtio.DeviceID { return virtio.IDRNG }
func (d *fakeDevice) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureEventIdx | 1<<3
}
func (d *fakeDevice) QueueMaxSizes() []uint16 { return []uint16{16, 8} }
func (d *fakeDevice) ReadConfig(off uint64, data []byte) {
	virtio.ReadConfigBytes(d.config[:], off, data)
}
func (d *fakeDevice) WriteConfig(off uint64, data []byte) {
	if off < uint64(len(d.config)) {
		copy(d.config[off:], data)
	}
}
func (d *fakeDevice) Activate(_ memory.Memory, f uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.activateErr != nil {
		return d.activateErr
	}
	d.activations++
	d.features, d.queues, d.irq = f, qs, irq
	return nil
}
func (d *fakeDevice) QueueNotify(i int) {
	d.mu.Lock()
	d.notified = append(d.notified, i)
	d.mu.Unlock()
}
func (d *fakeDevice) Reset() {
	d.mu.Lock()
	d.resets++
	d.queues, d.irq = nil, nil
	d.mu.Unlock()
}

type countIRQ struct {
	mu sync.Mutex
	n  int
}

func (c *countIRQ) Trigger() error { c.mu.Lock(); c.n++; c.mu.Unlock(); return nil }
func (c *countIRQ) count() int     { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func newTransport() (*Transport, *fakeDevice, *countIRQ, *queuetest.Memory) {
	dev := &fakeDevice{config: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	irq := &countIRQ{}
	mem := queuetest.NewMemory(0x10000, 0x10000)
	return New(dev, mem, irq), dev, irq, mem
}

func rd(t *Transport, off uint64) uint32 {
	var b [4]byte
	t.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr(t *Transport, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	t.Write(off, b[:])
}

// negotiate drives a driver through ACKNOWLEDGE, DRIVER and feature
// negotiation, acking features, and returns the status read back.
func negotiate(t *Transport, features uint64) uint32 {
	wr(t, RegStatus, virtio.StatusAcknowledge)
	wr(t, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	wr(t, RegDriverFeaturesSel, 0)
	wr(t, RegDriverFeatures, uint32(features))
	wr(t, RegDriverFeaturesSel, 1)
	wr(t, RegDriverFeatures, uint32(features>>32))
	wr(t, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	return rd(t, RegStatus)
}

// setupQueue programs queue i as the Linux driver does.
func setupQueue(t *Transport, i uint32, size uint32, desc, driver, device uint64) {
	wr(t, RegQueueSel, i)
	wr(t, RegQueueNum, size)
	wr(t, RegQueueDescLow, uint32(desc))
	wr(t, RegQueueDescHigh, uint32(desc>>32))
	wr(t, RegQueueDriverLow, uint32(driver))
	wr(t, RegQueueDriverHigh, uint32(driver>>32))
	wr(t, RegQueueDeviceLow, uint32(device))
	wr(t, RegQueueDeviceHigh, uint32(device>>32))
	wr(t, RegQueueReady, 1)
}

const allStatus = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK

func TestIdentification(t *testing.T) {
	tr, _, _, _ := newTransport()
	for _, tc := range []struct {
		off  uint64
		want uint32
	}{
		{RegMagicValue, 0x74726976},
		{RegVersion, 2},
		{RegDeviceID, uint32(virtio.IDRNG)},
		{RegVendorID, VendorID},
		{RegStatus, 0},
		{RegSHMLenLow, 0xffffffff},
		{RegSHMLenHigh, 0xffffffff},
		{RegQueueNotify, 0}, // write-only
		{0x0f8, 0},          // reserved
	} {
		if got := rd(tr, tc.off); got != tc.want {
			t.Errorf("Read(%#x) = %#x, want %#x", tc.off, got, tc.want)
		}
	}
}

func TestFeatureNegotiation(t *testing.T) {
	tr, dev, _, _ := newTransport()
	wr(tr, RegDeviceFeaturesSel, 0)
	if got := rd(tr, RegDeviceFeatures); got != uint32(dev.Features()) {
		t.Errorf("DeviceFeatures[0] = %#x, want %#x", got, uint32(dev.Features()))
	}
	wr(tr, RegDeviceFeaturesSel, 1)
	if got := rd(tr, RegDeviceFeatures); got != 1 {
		t.Errorf("DeviceFeatures[1] = %#x, want 1 (VERSION_1)", got)
	}
	wr(tr, RegDeviceFeaturesSel, 2)
	if got := rd(tr, RegDeviceFeatures); got != 0 {
		t.Errorf("DeviceFeatures[2] = %#x, want 0", got)
	}

	for _, tc := range []struct {
		name   string
		acked  uint64
		accept bool
	}{
		{"version 1 only", virtio.FeatureVersion1, true},
		{"subset", virtio.FeatureVersion1 | virtio.FeatureEventIdx | 1<<3, true},
		{"legacy driver", virtio.FeatureEventIdx, false},
		{"not offered", virtio.FeatureVersion1 | virtio.FeatureIndirectDesc, false},
	} {
		tr, _, _, _ := newTransport()
		got := negotiate(tr, tc.acked)&virtio.StatusFeaturesOK != 0
		if got != tc.accept {
			t.Errorf("%s: FEATURES_OK set = %v, want %v", tc.name, got, tc.accept)
		}
	}
}

func TestActivationAndNotify(t *testing.T) {
	tr, dev, irq, mem := newTransport()
	d := queuetest.NewDriver(mem, 0x10000, 16, 64)
	acked := virtio.FeatureVersion1 | virtio.FeatureEventIdx
	if s := negotiate(tr, acked); s&virtio.StatusFeaturesOK == 0 {
		t.Fatalf("status after negotiation = %#x, want FEATURES_OK", s)
	}
	if got := rd(tr, RegQueueNumMax); got != 16 {
		t.Fatalf("QueueNumMax of queue 0 = %d, want 16", got)
	}
	c := d.Config()
	setupQueue(tr, 0, 16, c.DescTable, c.AvailRing, c.UsedRing)
	if rd(tr, RegQueueReady) != 1 {
		t.Fatal("QueueReady of queue 0 reads 0 after it was set")
	}
	wr(tr, RegQueueSel, 2)
	if rd(tr, RegQueueNumMax) != 0 {
		t.Fatal("QueueNumMax of a queue the device lacks is not 0")
	}
	// A kick before DRIVER_OK goes nowhere.
	wr(tr, RegQueueNotify, 0)
	wr(tr, RegStatus, allStatus)
	if got := rd(tr, RegStatus); got != allStatus {
		t.Fatalf("status = %#x, want %#x", got, allStatus)
	}
	if dev.activations != 1 || dev.features != acked || len(dev.queues) != 2 || dev.queues[0] == nil || dev.queues[1] != nil {
		t.Fatalf("Activate: %d calls, features %#x, queues %v; want 1, %#x, [queue nil]", dev.activations, dev.features, dev.queues, acked)
	}
	if dev.queues[0].Size() != 16 {
		t.Fatalf("activated queue size %d, want 16", dev.queues[0].Size())
	}
	wr(tr, RegQueueNotify, 1)
	wr(tr, RegQueueNotify, 7) // no such queue
	tr.Notify(0)
	if len(dev.notified) != 2 || dev.notified[0] != 1 || dev.notified[1] != 0 {
		t.Fatalf("device notified for %v, want [1 0]", dev.notified)
	}

	// Interrupts: the device's trigger sets the used-buffer bit.
	if err := dev.irq.Trigger(); err != nil {
		t.Fatal(err)
	}
	if rd(tr, RegInterruptStatus) != InterruptUsedBuffer || irq.count() != 1 {
		t.Fatalf("InterruptStatus = %#x after %d triggers, want 1 after 1", rd(tr, RegInterruptStatus), irq.count())
	}
	wr(tr, RegInterruptACK, InterruptUsedBuffer)
	if rd(tr, RegInterruptStatus) != 0 {
		t.Fatal("InterruptACK did not clear the status")
	}
	if err := tr.ConfigChanged(); err != nil {
		t.Fatal(err)
	}
	if rd(tr, RegInterruptStatus) != InterruptConfigChange || rd(tr, RegConfigGeneration) != 1 {
		t.Fatalf("after ConfigChanged: InterruptStatus %#x, generation %d; want 2, 1",
			rd(tr, RegInterruptStatus), rd(tr, RegConfigGeneration))
	}

	// Reset.
	wr(tr, RegStatus, 0)
	if dev.resets != 1 || rd(tr, RegStatus) != 0 || rd(tr, RegInterruptStatus) != 0 {
		t.Fatalf("after reset: %d device resets, status %#x, interrupt status %#x", dev.resets, rd(tr, RegStatus), rd(tr, RegInterruptStatus))
	}
	wr(tr, RegQueueSel, 0)
	if rd(tr, RegQueueReady) != 0 {
		t.Fatal("queue still ready after reset")
	}
	wr(tr, RegQueueNotify, 0)
	if len(dev.notified) != 2 {
		t.Fatal("kick after reset reached the device")
	}
	// A second reset of an inactive device does not reset the model again.
	wr(tr, RegStatus, 0)
	if dev.resets != 1 {
		t.Fatalf("device reset %d times, want 1", dev.resets)
	}
}

func TestActivationFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(tr *Transport, dev *fakeDevice)
	}{
		{"queue outside RAM", func(tr *Transport, _ *fakeDevice) { setupQueue(tr, 0, 16, 0x90000, 0x90100, 0x90200) }},
		{"queue size above maximum", func(tr *Transport, _ *fakeDevice) { setupQueue(tr, 0, 32, 0x10000, 0x10200, 0x10400) }},
		{"queue size zero", func(tr *Transport, _ *fakeDevice) { setupQueue(tr, 0, 0, 0x10000, 0x10200, 0x10400) }},
		{"device refuses", func(tr *Transport, dev *fakeDevice) {
			dev.activateErr = errors.New("no backend")
			setupQueue(tr, 0, 16, 0x10000, 0x10200, 0x10400)
		}},
	} {
		tr, dev, irq, _ := newTransport()
		negotiate(tr, virtio.FeatureVersion1)
		tc.setup(tr, dev)
		wr(tr, RegStatus, allStatus)
		if got := rd(tr, RegStatus); got&virtio.StatusDeviceNeedsReset == 0 {
			t.Errorf("%s: status %#x lacks DEVICE_NEEDS_RESET", tc.name, got)
		}
		if rd(tr, RegInterruptStatus)&InterruptConfigChange == 0 || irq.count() != 1 {
			t.Errorf("%s: no configuration change interrupt", tc.name)
		}
		wr(tr, RegQueueNotify, 0)
		if dev.activations != 0 || len(dev.notified) != 0 {
			t.Errorf("%s: device activated or notified", tc.name)
		}
	}
}

// Writes the specification forbids in the current state change nothing.
func TestWritesInWrongState(t *testing.T) {
	tr, _, _, _ := newTransport()
	// Features before DRIVER.
	wr(tr, RegDriverFeatures, 0xffffffff)
	wr(tr, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	wr(tr, RegDriverFeaturesSel, 1)
	wr(tr, RegDriverFeatures, 1)
	wr(tr, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	if tr.driverFeatures != virtio.FeatureVersion1 {
		t.Fatalf("driver features %#x, want only VERSION_1 (the early write must be ignored)", tr.driverFeatures)
	}
	// Features after FEATURES_OK.
	wr(tr, RegDriverFeaturesSel, 0)
	wr(tr, RegDriverFeatures, 1<<3)
	if tr.driverFeatures != virtio.FeatureVersion1 {
		t.Fatalf("driver features changed after FEATURES_OK: %#x", tr.driverFeatures)
	}
	// Clearing a status bit without a reset.
	wr(tr, RegStatus, virtio.StatusAcknowledge)
	if got := rd(tr, RegStatus); got != virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK {
		t.Fatalf("status %#x after an attempt to clear bits", got)
	}
	setupQueue(tr, 0, 16, 0x10000, 0x10200, 0x10400)
	// A ready queue is frozen.
	wr(tr, RegQueueNum, 8)
	if tr.queues[0].num != 16 {
		t.Fatalf("QueueNum of a ready queue changed to %d", tr.queues[0].num)
	}
	wr(tr, RegStatus, allStatus)
	// Queue setup after DRIVER_OK.
	wr(tr, RegQueueSel, 1)
	wr(tr, RegQueueNum, 8)
	wr(tr, RegQueueReady, 1)
	if tr.queues[1].num != 0 || tr.queues[1].ready {
		t.Fatal("queue 1 programmed after DRIVER_OK")
	}
	// DRIVER_OK without FEATURES_OK.
	tr2, dev2, _, _ := newTransport()
	wr(tr2, RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusDriverOK)
	if rd(tr2, RegStatus)&virtio.StatusDriverOK != 0 || dev2.activations != 0 {
		t.Fatal("DRIVER_OK accepted without FEATURES_OK")
	}
}

func TestAccessWidths(t *testing.T) {
	tr, dev, _, _ := newTransport()
	for _, tc := range []struct {
		off  uint64
		size int
	}{
		{RegMagicValue, 1}, {RegMagicValue, 2}, {RegMagicValue, 8}, {RegMagicValue + 1, 4}, {RegVersion + 2, 4},
		{Size, 4}, {Size + 0x1000, 4}, {^uint64(0) - 1, 4},
	} {
		b := []byte{0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa}[:tc.size]
		tr.Read(tc.off, b)
		for _, x := range b {
			if x != 0 {
				t.Errorf("Read(%#x, %d bytes) = % x, want zeros", tc.off, tc.size, b)
				break
			}
		}
		tr.Write(tc.off, b) // must be ignored without panicking
	}
	// A one-byte status write is ignored.
	tr.Write(RegStatus, []byte{byte(virtio.StatusAcknowledge)})
	if rd(tr, RegStatus) != 0 {
		t.Fatal("one-byte status write took effect")
	}

	// The configuration space takes 1, 2, 4 and 8-byte aligned accesses.
	for _, tc := range []struct {
		off  uint64
		size int
		want []byte
	}{
		{RegConfig, 1, []byte{1}},
		{RegConfig + 1, 1, []byte{2}},
		{RegConfig + 2, 2, []byte{3, 4}},
		{RegConfig + 4, 4, []byte{5, 6, 7, 8}},
		{RegConfig, 8, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{RegConfig + 8, 4, []byte{0, 0, 0, 0}}, // beyond the device's config
		{RegConfig + 1, 2, []byte{0, 0}},       // unaligned
		{RegConfig + 0xfc, 8, make([]byte, 8)}, // crosses the block end
		{RegConfig + 3, 3, []byte{0, 0, 0}},    // odd width
	} {
		b := make([]byte, tc.size)
		tr.Read(tc.off, b)
		if string(b) != string(tc.want) {
			t.Errorf("config Read(%#x, %d) = % x, want % x", tc.off, tc.size, b, tc.want)
		}
	}
	tr.Write(RegConfig+4, []byte{9, 9})
	if dev.config[4] != 9 || dev.config[5] != 9 {
		t.Fatalf("config write did not reach the device: % x", dev.config)
	}
}

// The driver cannot set or clear DEVICE_NEEDS_RESET, nor bits above the
// status byte; a write of 0 still resets.
func TestStatusDeviceOwnedBits(t *testing.T) {
	tr, _, _, _ := newTransport()
	wr(tr, RegStatus, 0x303030ff)
	if st := rd(tr, RegStatus); st&^0xff != 0 || st&virtio.StatusDeviceNeedsReset != 0 {
		t.Fatalf("after writing 0x303030ff, status = %#x: the driver set device-owned or reserved bits", st)
	}
	if tr.active.Load() {
		t.Fatalf("device active after a bogus status write")
	}
	wr(tr, RegStatus, 0)
	if st := rd(tr, RegStatus); st != 0 {
		t.Fatalf("status after reset = %#x, want 0", st)
	}
}

// An interrupt the driver leaves unacknowledged (its edge was lost) is
// raised again every period until acknowledged; one acknowledged at once
// is never raised again; after Close nothing is raised.
func TestUnacknowledgedInterruptRaisedAgain(t *testing.T) {
	tr, dev, irq, mem := newTransport()
	d := queuetest.NewDriver(mem, 0x10000, 16, 64)
	negotiate(tr, virtio.FeatureVersion1)
	c := d.Config()
	setupQueue(tr, 0, 16, c.DescTable, c.AvailRing, c.UsedRing)
	wr(tr, RegStatus, allStatus)

	// Acknowledged at once: the timer finds the status clear.
	if err := dev.irq.Trigger(); err != nil {
		t.Fatal(err)
	}
	wr(tr, RegInterruptACK, InterruptUsedBuffer)
	time.Sleep(3 * ReraiseAfter)
	if irq.count() != 1 || tr.Reraised() != 0 {
		t.Fatalf("acknowledged interrupt: %d raises, %d re-raised; want 1, 0", irq.count(), tr.Reraised())
	}

	// Never acknowledged: raised again, more than once.
	if err := dev.irq.Trigger(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(50 * ReraiseAfter)
	for tr.Reraised() < 2 && time.Now().Before(deadline) {
		time.Sleep(ReraiseAfter / 4)
	}
	if tr.Reraised() < 2 || irq.count() < 4 {
		t.Fatalf("unacknowledged interrupt: %d raises, %d re-raised; want at least 4 and 2", irq.count(), tr.Reraised())
	}
	if rd(tr, RegInterruptStatus) != InterruptUsedBuffer {
		t.Fatal("re-raising changed the status")
	}

	// Acknowledged late: the re-raising stops.
	wr(tr, RegInterruptACK, InterruptUsedBuffer)
	time.Sleep(2 * ReraiseAfter)
	n := irq.count()
	time.Sleep(3 * ReraiseAfter)
	if irq.count() != n {
		t.Fatalf("raised %d more times after the acknowledgement", irq.count()-n)
	}

	// Closed with an interrupt outstanding: never raised again.
	if err := dev.irq.Trigger(); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	n = irq.count()
	time.Sleep(3 * ReraiseAfter)
	if irq.count() != n {
		t.Fatalf("raised %d times after Close", irq.count()-n)
	}
}
