package queue_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

const memSize = 1 << 20

func setup(t *testing.T, size uint16) (*queuetest.Memory, *queuetest.Driver, *queue.Queue) {
	t.Helper()
	mem := queuetest.NewMemory(0x10000, memSize)
	d := queuetest.NewDriver(mem, 0x10000, size, 256)
	q, err := queue.New(mem, d.Config())
	if err != nil {
		t.Fatalf("queue.New: %v", err)
	}
	return mem, d, q
}

func TestChainRoundTrip(t *testing.T) {
	for _, indirect := range []bool{false, true} {
		_, d, q := setup(t, 8)
		add := d.Add
		if indirect {
			add = d.AddIndirect
		}
		head, err := add(queuetest.Readable([]byte("hel")), queuetest.Readable([]byte("lo")),
			queuetest.Writable(3), queuetest.Writable(4))
		if err != nil {
			t.Fatal(err)
		}
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatalf("Pop() = %v, %v; want a chain", c, err)
		}
		if c.Head != head || len(c.Readable) != 2 || len(c.Writable) != 2 || c.ReadableLen() != 5 || c.WritableLen() != 7 {
			t.Fatalf("indirect=%v: chain head %d, %d readable (%d bytes), %d writable (%d bytes); want head %d, 2 (5), 2 (7)",
				indirect, c.Head, len(c.Readable), c.ReadableLen(), len(c.Writable), c.WritableLen(), head)
		}
		var in bytes.Buffer
		if _, err := in.ReadFrom(c.Reader()); err != nil || in.String() != "hello" {
			t.Fatalf("indirect=%v: read %q, %v; want hello", indirect, in.String(), err)
		}
		w := c.Writer()
		if n, err := w.Write([]byte("world!!!")); n != 7 || err == nil {
			t.Fatalf("Write of 8 bytes into 7 = %d, %v; want 7, ErrShortWrite", n, err)
		}
		if err := q.PushUsed(c.Head, w.Written()); err != nil {
			t.Fatal(err)
		}
		if c, err := q.Pop(); c != nil || err != nil {
			t.Fatalf("Pop on an empty ring = %v, %v; want nil, nil", c, err)
		}
		u, ok, err := d.PopUsed()
		if !ok || err != nil || u.Head != head || string(u.Data) != "world!!" {
			t.Fatalf("driver PopUsed = %+v, %v, %v; want head %d with world!!", u, ok, err, head)
		}
		if d.Free() != 8 {
			t.Fatalf("driver has %d free descriptors after the round trip, want 8", d.Free())
		}
	}
}

// The 16-bit ring indexes wrap after 65536 chains; nothing may break there.
func TestIndexWrapAround(t *testing.T) {
	_, d, q := setup(t, 4)
	for i := range 70000 {
		seq := []byte{byte(i), byte(i >> 8), byte(i >> 16)}
		if _, err := d.Add(queuetest.Readable(seq), queuetest.Writable(3)); err != nil {
			t.Fatalf("chain %d: %v", i, err)
		}
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatalf("chain %d: Pop() = %v, %v", i, c, err)
		}
		if !bytes.Equal(c.Readable[0].Data, seq) {
			t.Fatalf("chain %d: device read % x, want % x", i, c.Readable[0].Data, seq)
		}
		copy(c.Writable[0].Data, seq)
		if err := q.PushUsed(c.Head, 3); err != nil {
			t.Fatal(err)
		}
		u, ok, err := d.PopUsed()
		if !ok || err != nil || !bytes.Equal(u.Data, seq) {
			t.Fatalf("chain %d: used %+v, %v, %v", i, u, ok, err)
		}
	}
	if q.NextAvail() != uint16(70000%65536) {
		t.Fatalf("NextAvail() = %d, want %d", q.NextAvail(), 70000%65536)
	}
}

func TestBadChains(t *testing.T) {
	const size = 8
	desc := func(addr uint64, n uint32, flags, next uint16) queue.Descriptor {
		return queue.Descriptor{Addr: addr, Len: n, Flags: flags, Next: next}
	}
	const next, write, indirect = queue.DescFlagNext, queue.DescFlagWrite, queue.DescFlagIndirect
	for _, tc := range []struct {
		name        string
		noIndirect  bool
		head        uint16
		descs       func(d *queuetest.Driver) map[uint16]queue.Descriptor
		indirectTab []queue.Descriptor // written to slot 7
	}{
		{name: "head out of range", head: size, descs: func(*queuetest.Driver) map[uint16]queue.Descriptor { return nil }},
		{name: "next out of range", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(0), 16, next, size)}
		}},
		{name: "loop", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(0), 16, next, 1), 1: desc(d.SlotAddr(1), 16, next, 0)}
		}},
		{name: "self loop", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(0), 16, next, 0)}
		}},
		{name: "address below RAM", descs: func(*queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(0x1000, 16, 0, 0)}
		}},
		{name: "buffer past end of RAM", descs: func(*queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(0x10000+memSize-8, 16, write, 0)}
		}},
		{name: "address wraps around", descs: func(*queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(math.MaxUint64-7, 16, 0, 0)}
		}},
		{name: "huge length", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(0), math.MaxUint32, 0, 0)}
		}},
		{name: "readable after writable", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(0), 16, write|next, 1), 1: desc(d.SlotAddr(1), 16, 0, 0)}
		}},
		{name: "indirect not negotiated", noIndirect: true, descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 16, indirect, 0)}
		}, indirectTab: []queue.Descriptor{desc(0x20000, 16, 0, 0)}},
		{name: "indirect with next", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 16, indirect|next, 1), 1: desc(d.SlotAddr(1), 16, 0, 0)}
		}, indirectTab: []queue.Descriptor{desc(0x20000, 16, 0, 0)}},
		{name: "indirect length not a multiple of 16", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 20, indirect, 0)}
		}, indirectTab: []queue.Descriptor{desc(0x20000, 16, 0, 0)}},
		{name: "empty indirect table", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 0, indirect, 0)}
		}},
		{name: "indirect table too large", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(0x20000, 16*(queue.MaxIndirect+1), indirect, 0)}
		}},
		{name: "indirect table outside RAM", descs: func(*queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(0x10000+memSize-16, 32, indirect, 0)}
		}},
		{name: "nested indirect", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 16, indirect, 0)}
		}, indirectTab: []queue.Descriptor{desc(0x20000, 16, indirect, 0)}},
		{name: "loop inside indirect table", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 32, indirect, 0)}
		}, indirectTab: []queue.Descriptor{desc(0x20000, 16, next, 1), desc(0x20000, 16, next, 0)}},
		{name: "next outside indirect table", descs: func(d *queuetest.Driver) map[uint16]queue.Descriptor {
			return map[uint16]queue.Descriptor{0: desc(d.SlotAddr(7), 16, indirect, 0)}
		}, indirectTab: []queue.Descriptor{desc(0x20000, 16, next, 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := queuetest.NewMemory(0x10000, memSize)
			d := queuetest.NewDriver(mem, 0x10000, size, 256)
			cfg := d.Config()
			cfg.Indirect = !tc.noIndirect
			q, err := queue.New(mem, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, ds := range tc.descs(d) {
				d.WriteDescriptor(i, ds)
			}
			for i, ds := range tc.indirectTab {
				d.WriteTableDescriptor(d.SlotAddr(7), uint16(i), ds)
			}
			d.Publish(tc.head)
			c, err := q.Pop()
			if !errors.Is(err, queue.ErrInvalidChain) {
				t.Fatalf("Pop() error = %v, want ErrInvalidChain", err)
			}
			if c == nil || c.Head != tc.head || len(c.Readable)+len(c.Writable) != 0 {
				t.Fatalf("Pop() chain = %+v, want only head %d", c, tc.head)
			}
			// The queue carries on: a good chain after a bad one works.
			d.WriteDescriptor(1, desc(d.SlotAddr(1), 4, 0, 0))
			d.Publish(1)
			if c, err := q.Pop(); err != nil || c == nil || c.Head != 1 {
				t.Fatalf("Pop() after a bad chain = %+v, %v; want head 1", c, err)
			}
		})
	}
}

func TestAvailIndexTooFarAhead(t *testing.T) {
	_, d, q := setup(t, 8)
	d.SetAvailIdx(9)
	if _, err := q.Pop(); !errors.Is(err, queue.ErrBroken) {
		t.Fatalf("Pop() with avail->idx 9 on a queue of 8 = %v, want ErrBroken", err)
	}
	d.SetAvailIdx(1)
	if _, err := q.Pop(); !errors.Is(err, queue.ErrBroken) {
		t.Fatalf("Pop() on a broken queue = %v, want ErrBroken still", err)
	}
	if q.HasAvailable() {
		t.Fatal("HasAvailable() on a broken queue = true")
	}
}

func TestConfigValidation(t *testing.T) {
	mem := queuetest.NewMemory(0x10000, 0x10000)
	good := queue.Config{Size: 16, DescTable: 0x10000, AvailRing: 0x10100, UsedRing: 0x10200}
	for _, tc := range []struct {
		name string
		edit func(*queue.Config)
		ok   bool
	}{
		{"good", func(*queue.Config) {}, true},
		{"avail only 2-byte aligned", func(c *queue.Config) { c.AvailRing = 0x10102 }, true},
		{"size zero", func(c *queue.Config) { c.Size = 0 }, false},
		{"size not a power of two", func(c *queue.Config) { c.Size = 24 }, false},
		{"size above the maximum", func(c *queue.Config) { c.Size = math.MaxUint16 }, false},
		{"descriptor table misaligned", func(c *queue.Config) { c.DescTable = 0x10008 }, false},
		{"driver area odd", func(c *queue.Config) { c.AvailRing = 0x10101 }, false},
		{"device area misaligned", func(c *queue.Config) { c.UsedRing = 0x10202 }, false},
		{"descriptor table outside RAM", func(c *queue.Config) { c.DescTable = 0x1fff0 }, false},
		{"driver area outside RAM", func(c *queue.Config) { c.AvailRing = 0 }, false},
		{"device area wraps", func(c *queue.Config) { c.UsedRing = math.MaxUint64 - 3 }, false},
	} {
		cfg := good
		tc.edit(&cfg)
		_, err := queue.New(mem, cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: New() error = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, queue.ErrConfig) {
			t.Errorf("%s: New() error %v does not wrap ErrConfig", tc.name, err)
		}
	}
}

func TestNotificationSuppression(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		mem := queuetest.NewMemory(0x10000, memSize)
		d := queuetest.NewDriver(mem, 0x10000, 8, 64)
		d.EventIdx = eventIdx
		q, err := queue.New(mem, d.Config())
		if err != nil {
			t.Fatal(err)
		}
		if pending := q.EnableNotify(); pending {
			t.Fatalf("eventIdx=%v: EnableNotify() on an empty queue = true", eventIdx)
		}
		old := d.AvailIdx()
		d.Add(queuetest.Writable(8))
		if !d.KickWanted(old) {
			t.Fatalf("eventIdx=%v: driver not asked to kick with notifications enabled", eventIdx)
		}
		q.DisableNotify()
		c, _ := q.Pop()
		old = d.AvailIdx()
		d.Add(queuetest.Writable(8))
		if d.KickWanted(old) {
			t.Fatalf("eventIdx=%v: driver asked to kick while the device drains", eventIdx)
		}
		if pending := q.EnableNotify(); !pending {
			t.Fatalf("eventIdx=%v: EnableNotify() missed a chain published while disabled", eventIdx)
		}
		c2, _ := q.Pop()

		// Interrupt suppression.
		if eventIdx {
			d.SetUsedEvent(1) // interrupt once used->idx passes 1
		} else {
			d.SetNoInterrupt(true)
		}
		q.PushUsed(c.Head, 0)
		if q.NeedsInterrupt() {
			t.Fatalf("eventIdx=%v: interrupt wanted although the driver suppressed it", eventIdx)
		}
		if !eventIdx {
			d.SetNoInterrupt(false)
		}
		q.PushUsed(c2.Head, 0)
		if !q.NeedsInterrupt() {
			t.Fatalf("eventIdx=%v: no interrupt although the driver asked for one", eventIdx)
		}
		if q.NeedsInterrupt() {
			t.Fatalf("eventIdx=%v: interrupt wanted with nothing new used", eventIdx)
		}
	}
}

// PushUsedBatch publishes several chains, in any order, with one index
// store, across the ring's wrap-around; a bad head publishes nothing.
func TestPushUsedBatch(t *testing.T) {
	_, d, q := setup(t, 4)
	for round := range 5 { // 15 entries: the used index wraps the 4-entry ring
		var chains []*queue.Chain
		for range 3 {
			if _, err := d.Add(queuetest.Writable(8)); err != nil {
				t.Fatal(err)
			}
			c, err := q.Pop()
			if err != nil || c == nil {
				t.Fatalf("round %d: Pop() = %v, %v", round, c, err)
			}
			chains = append(chains, c)
		}
		if err := q.PushUsedBatch([]queue.UsedElem{{Head: chains[0].Head, Len: 1}, {Head: 9, Len: 2}}); err == nil {
			t.Fatal("PushUsedBatch accepted a head outside the queue")
		}
		if _, _, ok := d.PopUsedRaw(); ok {
			t.Fatal("a refused batch published an entry")
		}
		batch := []queue.UsedElem{{Head: chains[2].Head, Len: 3}, {Head: chains[0].Head, Len: 1}, {Head: chains[1].Head, Len: 2}}
		if err := q.PushUsedBatch(batch); err != nil {
			t.Fatal(err)
		}
		for i, want := range batch {
			u, ok, err := d.PopUsed()
			if !ok || err != nil || u.Head != want.Head || u.Len != want.Len {
				t.Fatalf("round %d entry %d: used %+v, %v, %v; want head %d len %d", round, i, u, ok, err, want.Head, want.Len)
			}
		}
		if _, ok, _ := d.PopUsed(); ok {
			t.Fatalf("round %d: more used entries than pushed", round)
		}
	}
	if err := q.PushUsedBatch(make([]queue.UsedElem, 5)); err == nil {
		t.Error("PushUsedBatch accepted more entries than the queue has")
	}
}

// A queue rebuilt over the same rings at a saved position carries on: the
// chain the saved device had not popped yet comes out of the new one, and
// its used entry follows the old ones.
func TestResumeContinuesWhereSaved(t *testing.T) {
	mem, d, q := setup(t, 8)
	for range 3 {
		if _, err := d.Add(queuetest.Readable([]byte("x")), queuetest.Writable(1)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatalf("Pop() = %v, %v", c, err)
		}
		if err := q.PushUsed(c.Head, 1); err != nil {
			t.Fatal(err)
		}
	}
	q.NeedsInterrupt()
	saved := q.Position()
	if saved != (queue.Position{NextAvail: 2, NextUsed: 2, SignalledUsed: 2}) {
		t.Fatalf("Position() = %+v, want 2/2/2", saved)
	}
	r, err := queue.New(mem, d.Config())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Resume(saved); err != nil {
		t.Fatalf("Resume(%+v): %v", saved, err)
	}
	c, err := r.Pop()
	if err != nil || c == nil {
		t.Fatalf("Pop() after Resume = %v, %v; want the third chain", c, err)
	}
	if err := r.PushUsed(c.Head, 1); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, ok, err := d.PopUsed(); !ok || err != nil {
			t.Fatalf("used entry %d: ok=%v err=%v", i, ok, err)
		}
	}

	// A position that does not match the rings is refused.
	stale, err := queue.New(mem, d.Config())
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Resume(saved); !errors.Is(err, queue.ErrConfig) {
		t.Fatalf("Resume with a used index behind RAM's = %v, want ErrConfig", err)
	}
	ahead := queue.Position{NextAvail: 65530, NextUsed: 3} // avail idx 3 is 9 past it
	if err := stale.Resume(ahead); !errors.Is(err, queue.ErrConfig) {
		t.Fatalf("Resume with the available ring more than a queue ahead = %v, want ErrConfig", err)
	}
}
