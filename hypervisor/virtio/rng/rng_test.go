package rng

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

func TestFillsWritableBuffers(t *testing.T) {
	mem := queuetest.NewMemory(0x10000, 1<<20)
	drv := queuetest.NewDriver(mem, 0x10000, 16, 4096)
	q, err := queue.New(mem, drv.Config())
	if err != nil {
		t.Fatal(err)
	}
	dev := New()
	irq := &countIRQ{}
	if err := dev.Activate(mem, dev.Features(), []*queue.Queue{q}, irq); err != nil {
		t.Fatal(err)
	}
	defer dev.Reset()

	for _, tc := range []struct {
		name string
		segs []queuetest.Segment
		want uint32
	}{
		{"one buffer", []queuetest.Segment{queuetest.Writable(64)}, 64},
		{"two buffers", []queuetest.Segment{queuetest.Writable(100), queuetest.Writable(4096)}, 4196},
		{"readable buffer is left alone", []queuetest.Segment{queuetest.Readable([]byte("x"))}, 0},
	} {
		if _, err := drv.Add(tc.segs...); err != nil {
			t.Fatal(err)
		}
		dev.QueueNotify(0)
		u, err := drv.WaitUsed(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if u.Len != tc.want {
			t.Fatalf("%s: used length %d, want %d", tc.name, u.Len, tc.want)
		}
		if tc.want >= 64 && bytes.Count(u.Data, []byte{0}) > len(u.Data)/8 {
			t.Fatalf("%s: %d of %d bytes are zero: not random", tc.name, bytes.Count(u.Data, []byte{0}), len(u.Data))
		}
	}
	if irq.n.Load() == 0 {
		t.Fatal("no interrupt raised")
	}
}

// A chain whose buffers add up to more than MaxBytesPerChain (overlapping
// descriptors make this cheap for a guest) gets exactly the cap.
func TestCapsEntropyPerChain(t *testing.T) {
	mem := queuetest.NewMemory(0x10000, 1<<20)
	drv := queuetest.NewDriver(mem, 0x10000, 32, 4096)
	q, _ := queue.New(mem, drv.Config())
	dev := New()
	if err := dev.Activate(mem, dev.Features(), []*queue.Queue{q}, &countIRQ{}); err != nil {
		t.Fatal(err)
	}
	defer dev.Reset()
	// 20 descriptors all pointing at the same 4 KiB: 80 KiB "of buffer".
	for i := range uint16(20) {
		d := queue.Descriptor{Addr: drv.SlotAddr(0), Len: 4096, Flags: queue.DescFlagWrite | queue.DescFlagNext, Next: i + 1}
		if i == 19 {
			d.Flags = queue.DescFlagWrite
		}
		drv.WriteDescriptor(i, d)
	}
	drv.Publish(0)
	dev.QueueNotify(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if head, n, ok := drv.PopUsedRaw(); ok {
			if head != 0 || n != MaxBytesPerChain {
				t.Fatalf("used head %d length %d, want 0, %d", head, n, MaxBytesPerChain)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("chain never used")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestActivateNeedsQueue(t *testing.T) {
	dev := New()
	if err := dev.Activate(nil, 0, []*queue.Queue{nil}, &countIRQ{}); err == nil {
		t.Fatal("Activate without a request queue succeeded")
	}
	dev.Reset() // no-op on an inactive device
}
