package mmio

import (
	"testing"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// A saved transport restored into a new one over the same RAM reads back
// as the driver left it, its device is active again with its queue where
// the old device stopped, and a pending interrupt is raised again.
func TestSaveRestore(t *testing.T) {
	tr, dev, _, mem := newTransport()
	d := queuetest.NewDriver(mem, 0x10000, 16, 64)
	acked := virtio.FeatureVersion1 | virtio.FeatureEventIdx
	negotiate(tr, acked)
	c := d.Config()
	setupQueue(tr, 0, 16, c.DescTable, c.AvailRing, c.UsedRing)
	wr(tr, RegStatus, allStatus)
	for range 2 {
		if _, err := d.Add(queuetest.Readable([]byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := dev.queues[0].Pop()
	if err != nil || ch == nil {
		t.Fatalf("Pop() = %v, %v", ch, err)
	}
	if err := dev.queues[0].PushUsed(ch.Head, 0); err != nil {
		t.Fatal(err)
	}
	if err := dev.irq.Trigger(); err != nil {
		t.Fatal(err)
	}
	wr(tr, RegQueueSel, 1)

	s := tr.Save()
	tr.Close()
	if dev.resets != 1 {
		t.Fatalf("Save reset the device %d times, want 1 (its goroutines stop)", dev.resets)
	}
	if s.Status != allStatus || s.DriverFeatures != acked || s.QueueSel != 1 || s.InterruptStatus != InterruptUsedBuffer {
		t.Fatalf("saved status %#x features %#x queue sel %d interrupt %#x", s.Status, s.DriverFeatures, s.QueueSel, s.InterruptStatus)
	}
	if want := (queue.Position{NextAvail: 1, NextUsed: 1}); s.Queues[0].Position != want || !s.Queues[0].Ready || s.Queues[1].Ready {
		t.Fatalf("saved queues %+v, want queue 0 ready at %+v, queue 1 not ready", s.Queues, want)
	}

	dev2 := &fakeDevice{}
	irq2 := &countIRQ{}
	tr2 := New(dev2, mem, irq2)
	defer tr2.Close()
	if err := tr2.Restore(s); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rd(tr2, RegStatus) != allStatus {
		t.Fatalf("restored status %#x, want %#x", rd(tr2, RegStatus), allStatus)
	}
	if dev2.activations != 1 || dev2.features != acked || dev2.queues[0] == nil || dev2.queues[1] != nil {
		t.Fatalf("restored device: %d activations, features %#x, queues %v", dev2.activations, dev2.features, dev2.queues)
	}
	if rd(tr2, RegQueueReady) != 0 {
		t.Fatal("QueueSel was not restored: queue 1 reads ready")
	}
	if rd(tr2, RegInterruptStatus) != InterruptUsedBuffer || irq2.count() != 1 {
		t.Fatalf("restored interrupt status %#x after %d triggers, want 1 raised once", rd(tr2, RegInterruptStatus), irq2.count())
	}
	ch, err = dev2.queues[0].Pop()
	if err != nil || ch == nil {
		t.Fatalf("Pop() on the restored queue = %v, %v; want the chain the saved device left", ch, err)
	}
	if err := dev2.queues[0].PushUsed(ch.Head, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, ok, err := d.PopUsed(); !ok || err != nil {
			t.Fatalf("used entry %d: ok=%v err=%v", i, ok, err)
		}
	}

	// A device that lacks a feature the driver acked, or has other queues,
	// refuses the state.
	if err := New(&fakeDevice{}, mem, &countIRQ{}).Restore(State{Queues: make([]QueueState, 3)}); err == nil {
		t.Fatal("Restore with 3 queues into a 2-queue device succeeded")
	}
	bad := s
	bad.DriverFeatures |= 1 << 40
	if err := New(&fakeDevice{}, mem, &countIRQ{}).Restore(bad); err == nil {
		t.Fatal("Restore of features the device does not offer succeeded")
	}
}
