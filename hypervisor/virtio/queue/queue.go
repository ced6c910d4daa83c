// Package queue is the device side of a split virtqueue (virtio 1.2, section
// 2.7): it validates the ring addresses the driver configured, pops
// descriptor chains from the available ring, publishes used entries and
// implements notification suppression (flags, or EVENT_IDX).
//
// Everything read from the rings is guest-controlled and checked before
// use: the available index may run at most one queue size ahead, head and
// next indexes must be inside their table, chains are bounded in length (so
// loops end), indirect tables must be well formed and not nested, readable
// descriptors must come before writable ones, and every buffer must lie in
// guest RAM (through memory.Memory). A bad chain is reported with its head
// so the device can return it; a bad available index breaks the queue until
// the device is reset.
//
// Ordering against the guest is handled by package internal/ringidx (see
// its documentation). A Queue is not safe for concurrent use: each queue
// belongs to one device goroutine.
//
// It does not decide when to run (devices do) nor raise interrupts
// (NeedsInterrupt only says whether the driver wants one).
package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/internal/ringidx"
)

// Split virtqueue layout constants (virtio 1.2, section 2.7).
const (
	// MaxSize is the largest queue size the specification allows.
	MaxSize = 32768
	// MaxIndirect bounds the entries of one indirect descriptor table.
	// Linux never builds larger ones; the bound keeps guest-driven work per
	// chain finite.
	MaxIndirect = 1024

	// DescSize is the size of struct virtq_desc.
	DescSize = 16

	DescFlagNext     uint16 = 1
	DescFlagWrite    uint16 = 2
	DescFlagIndirect uint16 = 4

	// AvailFlagNoInterrupt is VIRTQ_AVAIL_F_NO_INTERRUPT.
	AvailFlagNoInterrupt uint16 = 1
	// UsedFlagNoNotify is VIRTQ_USED_F_NO_NOTIFY.
	UsedFlagNoNotify uint16 = 1
)

var (
	// ErrInvalidChain marks a malformed descriptor chain. The chain has
	// been consumed from the available ring; the device should return its
	// head with PushUsed(head, 0) and carry on.
	ErrInvalidChain = errors.New("invalid descriptor chain")
	// ErrBroken marks a queue the driver corrupted (its available index ran
	// ahead by more than the queue size). It stays broken until reset.
	ErrBroken = errors.New("virtqueue broken by the driver")
	// ErrConfig marks ring addresses or a size the device cannot use.
	ErrConfig = errors.New("invalid virtqueue configuration")
)

// Config is what the driver programmed through the transport.
type Config struct {
	Size      uint16 // number of entries, a power of two
	DescTable uint64 // guest address of the descriptor table (16-byte aligned)
	AvailRing uint64 // guest address of the driver area (2-byte aligned)
	UsedRing  uint64 // guest address of the device area (4-byte aligned)
	EventIdx  bool   // VIRTIO_F_EVENT_IDX was negotiated
	Indirect  bool   // VIRTIO_F_INDIRECT_DESC was negotiated
}

// Descriptor mirrors struct virtq_desc (include/uapi/linux/virtio_ring.h).
type Descriptor struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Queue is the device side of one split virtqueue.
type Queue struct {
	mem      memory.Memory
	size     uint16
	eventIdx bool
	indirect bool

	desc     []byte // the descriptor table
	avail    []byte // the driver area, widened to whole 32-bit words
	availOff int    // offset of the driver area inside avail
	used     []byte // the device area, widened to whole 32-bit words
	usedOff  int

	nextAvail     uint16 // next available ring entry to pop
	nextUsed      uint16 // used->idx as last published
	signalledUsed uint16 // nextUsed when NeedsInterrupt last ran
	broken        error
}

// New validates cfg against mem and returns a queue positioned at index 0
// of both rings, as after a device reset.
func New(mem memory.Memory, cfg Config) (*Queue, error) {
	n := uint64(cfg.Size)
	switch {
	case n == 0 || n > MaxSize || n&(n-1) != 0:
		return nil, fmt.Errorf("%w: size %d is not a power of two up to %d", ErrConfig, n, MaxSize)
	case cfg.DescTable%16 != 0:
		return nil, fmt.Errorf("%w: descriptor table %#x not 16-byte aligned", ErrConfig, cfg.DescTable)
	case cfg.AvailRing%2 != 0:
		return nil, fmt.Errorf("%w: driver area %#x not 2-byte aligned", ErrConfig, cfg.AvailRing)
	case cfg.UsedRing%4 != 0:
		return nil, fmt.Errorf("%w: device area %#x not 4-byte aligned", ErrConfig, cfg.UsedRing)
	}
	q := &Queue{mem: mem, size: cfg.Size, eventIdx: cfg.EventIdx, indirect: cfg.Indirect}
	var err error
	if q.desc, err = mem.Slice(cfg.DescTable, n*DescSize); err != nil {
		return nil, fmt.Errorf("%w: descriptor table: %w", ErrConfig, err)
	}
	// flags, idx, ring[n], used_event
	if q.avail, q.availOff, err = wordSlice(mem, cfg.AvailRing, 6+2*n); err != nil {
		return nil, fmt.Errorf("%w: driver area: %w", ErrConfig, err)
	}
	// flags, idx, ring[n] of {id u32, len u32}, avail_event
	if q.used, q.usedOff, err = wordSlice(mem, cfg.UsedRing, 6+8*n); err != nil {
		return nil, fmt.Errorf("%w: device area: %w", ErrConfig, err)
	}
	return q, nil
}

// wordSlice returns guest memory [gpa, gpa+n) widened to whole aligned
// 32-bit words (ringidx accesses words), and the offset of gpa in it.
// Guest RAM regions are page aligned, so widening by at most 2 bytes on
// each side of a 2-byte aligned range never leaves the region.
func wordSlice(mem memory.Memory, gpa, n uint64) ([]byte, int, error) {
	start := gpa &^ 3
	end := (gpa + n + 3) &^ 3
	if end < gpa {
		return nil, 0, memory.ErrOutOfRange
	}
	b, err := mem.Slice(start, end-start)
	if err != nil {
		return nil, 0, err
	}
	if !ringidx.Aligned(b) {
		return nil, 0, errors.New("host mapping of guest memory is not 4-byte aligned")
	}
	return b, int(gpa - start), nil
}

// Size is the queue size the driver chose.
func (q *Queue) Size() uint16 { return q.size }

// NextAvail is the index of the next available ring entry Pop will read.
func (q *Queue) NextAvail() uint16 { return q.nextAvail }

// loadAvailIdx reads avail->idx with acquire semantics.
func (q *Queue) loadAvailIdx() uint16 {
	v, _ := ringidx.Load(q.avail, q.availOff+2) // in range by construction
	return v
}

// HasAvailable reports whether the driver has published chains that Pop
// has not taken yet.
func (q *Queue) HasAvailable() bool {
	return q.broken == nil && q.loadAvailIdx() != q.nextAvail
}

// Pop takes the next available descriptor chain. It returns (nil, nil) when
// the ring is empty. On an error wrapping ErrInvalidChain the returned chain
// carries only Head, which the device must hand back with PushUsed(head,
// 0); an error wrapping ErrBroken means the queue is unusable until reset.
func (q *Queue) Pop() (*Chain, error) {
	if q.broken != nil {
		return nil, q.broken
	}
	idx := q.loadAvailIdx()
	if idx == q.nextAvail {
		return nil, nil
	}
	if pending := idx - q.nextAvail; pending > q.size {
		q.broken = fmt.Errorf("%w: available index %d is %d entries past %d on a queue of %d",
			ErrBroken, idx, pending, q.nextAvail, q.size)
		return nil, q.broken
	}
	// The acquire load of avail->idx above orders this plain read after it.
	slot := int(q.nextAvail & (q.size - 1))
	head := binary.LittleEndian.Uint16(q.avail[q.availOff+4+2*slot:])
	q.nextAvail++
	c, err := walk(q.mem, q.desc, q.size, head, q.indirect)
	if err != nil {
		return &Chain{Head: head}, fmt.Errorf("chain at head %d: %w", head, err)
	}
	return c, nil
}

// PushUsed publishes head as used with n bytes written into its writable
// buffers. The used element is written before used->idx, which is stored
// with a full barrier.
func (q *Queue) PushUsed(head uint16, n uint32) error {
	if head >= q.size {
		return fmt.Errorf("used head %d outside a queue of %d", head, q.size)
	}
	off := q.usedOff + 4 + 8*int(q.nextUsed&(q.size-1))
	binary.LittleEndian.PutUint32(q.used[off:], uint32(head))
	binary.LittleEndian.PutUint32(q.used[off+4:], n)
	q.nextUsed++
	ringidx.Store(q.used, q.usedOff+2, q.nextUsed)
	return nil
}

// UsedElem is one used ring entry: a chain's head and the bytes written
// into its writable buffers.
type UsedElem struct {
	Head uint16
	Len  uint32
}

// PushUsedBatch publishes every entry of used with one store of used->idx,
// after all of them are written: the driver sees all or none. A received
// frame spread over several buffers (virtio-net's mergeable receive
// buffers) must appear whole, or a driver reading the first buffer finds
// the others missing. Nothing is published if a head is out of range.
func (q *Queue) PushUsedBatch(used []UsedElem) error {
	if len(used) > int(q.size) {
		return fmt.Errorf("%d used entries at once on a queue of %d", len(used), q.size)
	}
	for _, u := range used {
		if u.Head >= q.size {
			return fmt.Errorf("used head %d outside a queue of %d", u.Head, q.size)
		}
	}
	idx := q.nextUsed
	for _, u := range used {
		off := q.usedOff + 4 + 8*int(idx&(q.size-1))
		binary.LittleEndian.PutUint32(q.used[off:], uint32(u.Head))
		binary.LittleEndian.PutUint32(q.used[off+4:], u.Len)
		idx++
	}
	q.nextUsed = idx
	ringidx.Store(q.used, q.usedOff+2, q.nextUsed)
	return nil
}

// DisableNotify asks the driver not to kick while the device is draining
// the queue. It is a hint: kicks may still arrive.
func (q *Queue) DisableNotify() {
	if q.eventIdx {
		return // avail_event stays behind nextAvail, so the driver does not kick
	}
	ringidx.Store(q.used, q.usedOff, UsedFlagNoNotify)
}

// EnableNotify asks the driver to kick on its next publication and reports
// whether chains arrived in the meantime; if so the device must drain again
// before sleeping, or a kick the driver suppressed would be lost.
func (q *Queue) EnableNotify() (pending bool) {
	if q.eventIdx {
		ringidx.Store(q.used, q.usedOff+4+8*int(q.size), q.nextAvail) // avail_event
	} else {
		ringidx.Store(q.used, q.usedOff, 0)
	}
	// The store above is a full barrier, so this load cannot be answered
	// from before the driver could see the re-enabled notification.
	return q.HasAvailable()
}

// NeedsInterrupt reports whether the driver asked to be interrupted for the
// used entries published since the previous call (virtio 1.2, 2.7.10).
func (q *Queue) NeedsInterrupt() bool {
	prev, now := q.signalledUsed, q.nextUsed
	q.signalledUsed = now
	if prev == now {
		return false
	}
	if q.eventIdx {
		ev, _ := ringidx.Load(q.avail, q.availOff+4+2*int(q.size)) // used_event
		// vring_need_event: interrupt if used_event lies in [prev, now).
		return now-ev-1 < now-prev
	}
	flags, _ := ringidx.Load(q.avail, q.availOff)
	return flags&AvailFlagNoInterrupt == 0
}

// Describe gives the ring indexes and notification fields as the device
// and the driver left them, for a diagnosis of a stalled queue. It must
// not run while the queue's goroutine does.
func (q *Queue) Describe() string {
	availFlags, _ := ringidx.Load(q.avail, q.availOff)
	usedFlags, _ := ringidx.Load(q.used, q.usedOff)
	usedIdx, _ := ringidx.Load(q.used, q.usedOff+2)
	usedEvent, _ := ringidx.Load(q.avail, q.availOff+4+2*int(q.size))
	availEvent, _ := ringidx.Load(q.used, q.usedOff+4+8*int(q.size))
	return fmt.Sprintf("size %d, avail idx %d (popped to %d), used idx %d (published %d, signalled to %d), "+
		"avail flags %#x, used flags %#x, used_event %d, avail_event %d, event idx %v, broken %v",
		q.size, q.loadAvailIdx(), q.nextAvail, usedIdx, q.nextUsed, q.signalledUsed,
		availFlags, usedFlags, usedEvent, availEvent, q.eventIdx, q.broken != nil)
}

// Position is where the device stands in a queue's rings: what a snapshot
// keeps of a queue besides the rings themselves, which live in guest RAM.
type Position struct {
	NextAvail     uint16 // next available ring entry to pop
	NextUsed      uint16 // used->idx as last published
	SignalledUsed uint16 // NextUsed when the driver was last considered for an interrupt
}

// Position returns the queue's position. Like Describe, it must not run
// while the queue's goroutine does.
func (q *Queue) Position() Position {
	return Position{NextAvail: q.nextAvail, NextUsed: q.nextUsed, SignalledUsed: q.signalledUsed}
}

// Resume places a new queue at p, as a restored device continues where the
// saved one stopped. The used index in guest RAM must be p.NextUsed (the
// device published it before the save); a mismatch means RAM and device
// state do not belong together, and the queue is refused.
func (q *Queue) Resume(p Position) error {
	if used, _ := ringidx.Load(q.used, q.usedOff+2); used != p.NextUsed {
		return fmt.Errorf("%w: used index in guest RAM is %d, the saved device published %d", ErrConfig, used, p.NextUsed)
	}
	if pending := q.loadAvailIdx() - p.NextAvail; pending > q.size {
		return fmt.Errorf("%w: available index %d is %d entries past the saved position %d", ErrConfig, q.loadAvailIdx(), pending, p.NextAvail)
	}
	q.nextAvail, q.nextUsed, q.signalledUsed = p.NextAvail, p.NextUsed, p.SignalledUsed
	return nil
}
