package queue_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// FuzzPop lets the fuzzer write the descriptor table, the driver area and
// the memory after it (where indirect tables and buffers may live), then
// pops every chain. Walking must never panic, must stop, and every chain it
// accepts must obey the specification's rules.
func FuzzPop(f *testing.F) {
	const base, size = 0x10000, 8
	const availAt = base + 16*size // right after the descriptor table
	// Seeds: a valid two-descriptor chain, an indirect chain, a loop.
	seed := func(descs []queue.Descriptor, heads ...uint16) []byte {
		b := make([]byte, 16*size+4+2*size)
		for i, d := range descs {
			binary.LittleEndian.PutUint64(b[16*i:], d.Addr)
			binary.LittleEndian.PutUint32(b[16*i+8:], d.Len)
			binary.LittleEndian.PutUint16(b[16*i+12:], d.Flags)
			binary.LittleEndian.PutUint16(b[16*i+14:], d.Next)
		}
		binary.LittleEndian.PutUint16(b[16*size+2:], uint16(len(heads)))
		for i, h := range heads {
			binary.LittleEndian.PutUint16(b[16*size+4+2*i:], h)
		}
		return b
	}
	f.Add(byte(1), seed([]queue.Descriptor{
		{Addr: 0x11000, Len: 16, Flags: queue.DescFlagNext, Next: 1},
		{Addr: 0x11010, Len: 100, Flags: queue.DescFlagWrite},
	}, 0))
	f.Add(byte(1), append(seed([]queue.Descriptor{
		{Addr: availAt + 64, Len: 32, Flags: queue.DescFlagIndirect},
	}, 0, 0), make([]byte, 64)...))
	f.Add(byte(0), seed([]queue.Descriptor{
		{Addr: 0x11000, Len: 16, Flags: queue.DescFlagNext, Next: 1},
		{Addr: 0x11010, Len: 16, Flags: queue.DescFlagNext, Next: 0},
	}, 0, 1, 0))

	f.Fuzz(func(t *testing.T, flags byte, data []byte) {
		mem := queuetest.NewMemory(base, 0x4000)
		if len(data) > 0x3000 {
			data = data[:0x3000]
		}
		if err := mem.WriteAt(data, base); err != nil {
			t.Fatal(err)
		}
		q, err := queue.New(mem, queue.Config{Size: size, DescTable: base, AvailRing: availAt,
			UsedRing: 0x13000, Indirect: flags&1 != 0, EventIdx: flags&2 != 0})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 * size {
			c, err := q.Pop()
			if errors.Is(err, queue.ErrBroken) || (c == nil && err == nil) {
				return
			}
			if err != nil && !errors.Is(err, queue.ErrInvalidChain) {
				t.Fatalf("Pop() error %v wraps neither ErrInvalidChain nor ErrBroken", err)
			}
			if c.Head >= size {
				if err == nil {
					t.Fatalf("accepted head %d on a queue of %d", c.Head, size)
				}
				continue
			}
			if n := len(c.Readable) + len(c.Writable); n > size+queue.MaxIndirect {
				t.Fatalf("chain of %d descriptors", n)
			}
			for _, b := range append(c.Readable, c.Writable...) {
				if len(b.Data) == 0 {
					continue // zero-length buffers are never touched
				}
				if _, err := mem.Slice(b.Addr, uint64(len(b.Data))); err != nil {
					t.Fatalf("accepted buffer outside RAM: %v", err)
				}
			}
			if err := q.PushUsed(c.Head, uint32(c.WritableLen())); err != nil {
				t.Fatal(err)
			}
			q.NeedsInterrupt()
			q.EnableNotify()
		}
	})
}
