package queuetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/internal/ringidx"
)

// ErrNoSpace means the driver has too few free descriptors or slot bytes.
var ErrNoSpace = errors.New("queuetest: no free descriptors")

// Segment is one buffer of a chain the driver builds: a device-readable
// buffer carrying Data, or (Write) a device-writable buffer of Len bytes.
type Segment struct {
	Data  []byte
	Len   uint32
	Write bool
}

// Readable and Writable are shorthands for building chains.
func Readable(data []byte) Segment { return Segment{Data: data, Len: uint32(len(data))} }
func Writable(n uint32) Segment    { return Segment{Len: n, Write: true} }

// Used is one entry the device put in the used ring.
type Used struct {
	Head uint16
	Len  uint32
	// Data is the first Len bytes the device wrote, gathered from the
	// chain's writable buffers (clipped to their size).
	Data []byte
	// Writable is the whole content of each writable buffer, whatever Len
	// says (a device may write a trailing status byte and report only it).
	Writable [][]byte
}

// Driver plays the guest driver of one split virtqueue. Every descriptor
// index i owns a data slot of SlotSize bytes at SlotAddr(i), which holds
// the buffer of that descriptor (or an indirect table). A Driver is used
// from one goroutine, like the guest's driver; the device may run
// concurrently.
type Driver struct {
	mem      *Memory
	size     uint16
	slotSize uint32
	desc     uint64
	avail    uint64
	used     uint64
	data     uint64
	end      uint64

	// EventIdx makes the driver honour avail_event when deciding to kick
	// and sets Config().EventIdx. Set it before the device starts.
	EventIdx bool

	free     []uint16
	chains   map[uint16]chainRecord
	availIdx uint16 // next avail->idx to publish
	usedIdx  uint16 // next used entry to read
}

type chainRecord struct {
	descs    []uint16  // descriptors (slots) to free
	writable []Segment // the writable segments, in chain order
	addrs    []uint64  // guest address of each writable segment
}

// NewDriver lays out a queue of size entries at guest address at (16-byte
// aligned): descriptor table, driver area, device area, then size data
// slots of slotSize bytes.
func NewDriver(mem *Memory, at uint64, size uint16, slotSize uint32) *Driver {
	d := &Driver{mem: mem, size: size, slotSize: slotSize, chains: map[uint16]chainRecord{}}
	n := uint64(size)
	d.desc = at
	d.avail = d.desc + 16*n
	d.used = (d.avail + 6 + 2*n + 3) &^ 3
	d.data = (d.used + 6 + 8*n + 15) &^ 15
	d.end = d.data + n*uint64(slotSize)
	for i := range size {
		d.free = append(d.free, i)
	}
	return d
}

// Config is the queue configuration a guest would program.
func (d *Driver) Config() queue.Config {
	return queue.Config{Size: d.size, DescTable: d.desc, AvailRing: d.avail, UsedRing: d.used,
		EventIdx: d.EventIdx, Indirect: true}
}

// End is the first guest address after this driver's memory.
func (d *Driver) End() uint64 { return d.end }

// SlotAddr is the guest address of descriptor i's data slot.
func (d *Driver) SlotAddr(i uint16) uint64 { return d.data + uint64(i)*uint64(d.slotSize) }

// Free is the number of free descriptors.
func (d *Driver) Free() int { return len(d.free) }

// WriteDescriptor stores a raw descriptor at index i, for tests that build
// malformed chains. It does not track or free anything.
func (d *Driver) WriteDescriptor(i uint16, desc queue.Descriptor) {
	d.writeDesc(d.desc+16*uint64(i), desc)
}

// WriteTableDescriptor stores a raw descriptor at entry i of a table at
// guest address table (an indirect table under construction).
func (d *Driver) WriteTableDescriptor(table uint64, i uint16, desc queue.Descriptor) {
	d.writeDesc(table+16*uint64(i), desc)
}

func (d *Driver) writeDesc(at uint64, desc queue.Descriptor) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], desc.Addr)
	binary.LittleEndian.PutUint32(b[8:], desc.Len)
	binary.LittleEndian.PutUint16(b[12:], desc.Flags)
	binary.LittleEndian.PutUint16(b[14:], desc.Next)
	if err := d.mem.WriteAt(b[:], at); err != nil {
		panic(fmt.Sprintf("queuetest: descriptor outside test memory: %v", err)) // test setup bug
	}
}

func (d *Driver) alloc(n int) ([]uint16, error) {
	if n > len(d.free) {
		return nil, ErrNoSpace
	}
	ids := append([]uint16(nil), d.free[:n]...)
	d.free = d.free[n:]
	return ids, nil
}

// Add builds a chain of segs (each in its own descriptor and slot) and
// publishes it. It returns the head index.
func (d *Driver) Add(segs ...Segment) (uint16, error) {
	ids, err := d.alloc(len(segs))
	if err != nil {
		return 0, err
	}
	rec := chainRecord{descs: ids}
	for i, s := range segs {
		if s.Len > d.slotSize {
			d.free = append(d.free, ids...)
			return 0, fmt.Errorf("%w: segment of %d bytes in %d-byte slots", ErrNoSpace, s.Len, d.slotSize)
		}
		desc := d.segment(&rec, ids[i], s)
		if i+1 < len(segs) {
			desc.Flags |= queue.DescFlagNext
			desc.Next = ids[i+1]
		}
		d.WriteDescriptor(ids[i], desc)
	}
	d.chains[ids[0]] = rec
	d.Publish(ids[0])
	return ids[0], nil
}

// AddIndirect builds segs as an indirect table held in the head
// descriptor's slot, with each buffer in the slot of another descriptor,
// and publishes it.
func (d *Driver) AddIndirect(segs ...Segment) (uint16, error) {
	if uint32(len(segs))*16 > d.slotSize {
		return 0, fmt.Errorf("%w: indirect table of %d entries", ErrNoSpace, len(segs))
	}
	ids, err := d.alloc(len(segs) + 1)
	if err != nil {
		return 0, err
	}
	rec := chainRecord{descs: ids}
	table := d.SlotAddr(ids[0])
	for i, s := range segs {
		desc := d.segment(&rec, ids[i+1], s)
		if i+1 < len(segs) {
			desc.Flags |= queue.DescFlagNext
			desc.Next = uint16(i + 1)
		}
		d.writeDesc(table+16*uint64(i), desc)
	}
	d.WriteDescriptor(ids[0], queue.Descriptor{Addr: table, Len: uint32(16 * len(segs)), Flags: queue.DescFlagIndirect})
	d.chains[ids[0]] = rec
	d.Publish(ids[0])
	return ids[0], nil
}

// segment fills slot id with s and returns its descriptor (without NEXT).
func (d *Driver) segment(rec *chainRecord, id uint16, s Segment) queue.Descriptor {
	addr := d.SlotAddr(id)
	desc := queue.Descriptor{Addr: addr, Len: s.Len}
	if s.Write {
		desc.Flags = queue.DescFlagWrite
		rec.writable = append(rec.writable, s)
		rec.addrs = append(rec.addrs, addr)
	} else if err := d.mem.WriteAt(s.Data[:min(len(s.Data), int(s.Len))], addr); err != nil {
		panic(fmt.Sprintf("queuetest: slot outside test memory: %v", err)) // test setup bug
	}
	return desc
}

// Publish puts head in the next available ring entry and advances
// avail->idx, with the write barrier a driver uses (an atomic store).
func (d *Driver) Publish(head uint16) {
	slot := uint64(d.availIdx & (d.size - 1))
	if err := d.mem.WriteUint16(d.avail+4+2*slot, head); err != nil {
		panic(fmt.Sprintf("queuetest: avail ring outside test memory: %v", err))
	}
	d.availIdx++
	d.storeIdx(d.avail+2, d.availIdx)
}

// SetAvailIdx stores a raw avail->idx, for tests of a lying driver.
func (d *Driver) SetAvailIdx(v uint16) { d.availIdx = v; d.storeIdx(d.avail+2, v) }

// SetNoInterrupt sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT.
func (d *Driver) SetNoInterrupt(on bool) {
	var v uint16
	if on {
		v = queue.AvailFlagNoInterrupt
	}
	d.storeIdx(d.avail, v)
}

// SetUsedEvent stores used_event (EVENT_IDX).
func (d *Driver) SetUsedEvent(v uint16) { d.storeIdx(d.avail+4+2*uint64(d.size), v) }

// KickWanted reports whether the device wants a notification for what was
// published since old, the way Linux's virtqueue_kick_prepare decides.
func (d *Driver) KickWanted(old uint16) bool {
	if d.EventIdx {
		ev := d.loadIdx(d.used + 4 + 8*uint64(d.size))
		return d.availIdx-ev-1 < d.availIdx-old
	}
	return d.loadIdx(d.used)&queue.UsedFlagNoNotify == 0
}

// RearmInterrupt asks the device for an interrupt on its next used entry
// (used_event = the next entry to read, or clearing NO_INTERRUPT) and
// reports whether used entries arrived meanwhile, as a driver must check
// before it sleeps.
func (d *Driver) RearmInterrupt() (pending bool) {
	if d.EventIdx {
		d.SetUsedEvent(d.usedIdx)
	} else {
		d.SetNoInterrupt(false)
	}
	return d.loadIdx(d.used+2) != d.usedIdx
}

// AvailIdx is the avail->idx last published.
func (d *Driver) AvailIdx() uint16 { return d.availIdx }

// PopUsedRaw returns the next used entry without interpreting it, for
// chains built with WriteDescriptor and Publish.
func (d *Driver) PopUsedRaw() (head uint32, n uint32, ok bool) {
	if d.loadIdx(d.used+2) == d.usedIdx {
		return 0, 0, false
	}
	off := d.used + 4 + 8*uint64(d.usedIdx&(d.size-1))
	head, _ = d.mem.ReadUint32(off)
	n, _ = d.mem.ReadUint32(off + 4)
	d.usedIdx++
	return head, n, true
}

// PopUsed returns the next used entry, if the device published one, and
// frees its descriptors.
func (d *Driver) PopUsed() (Used, bool, error) {
	id, n, ok := d.PopUsedRaw()
	if !ok {
		return Used{}, false, nil
	}
	rec, ok := d.chains[uint16(id)]
	if id >= uint32(d.size) || !ok {
		return Used{}, false, fmt.Errorf("device returned head %d, which is not an outstanding chain", id)
	}
	delete(d.chains, uint16(id))
	d.free = append(d.free, rec.descs...)
	u := Used{Head: uint16(id), Len: n}
	left := n
	for i, s := range rec.writable {
		b := make([]byte, s.Len)
		_ = d.mem.ReadAt(b, rec.addrs[i])
		u.Writable = append(u.Writable, b)
		k := min(left, s.Len)
		u.Data = append(u.Data, b[:k]...)
		left -= k
	}
	return u, true, nil
}

// WaitUsed polls for the next used entry for up to timeout.
func (d *Driver) WaitUsed(timeout time.Duration) (Used, error) {
	deadline := time.Now().Add(timeout)
	for {
		u, ok, err := d.PopUsed()
		if ok || err != nil {
			return u, err
		}
		if time.Now().After(deadline) {
			return Used{}, fmt.Errorf("no used entry within %v", timeout)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// Outstanding is the number of published chains not yet used.
func (d *Driver) Outstanding() int { return len(d.chains) }

func (d *Driver) ring(gpa uint64) ([]byte, int) {
	start := gpa &^ 3
	b, err := d.mem.Slice(start, 4)
	if err != nil {
		panic(fmt.Sprintf("queuetest: ring outside test memory: %v", err))
	}
	return b, int(gpa - start)
}

func (d *Driver) storeIdx(gpa uint64, v uint16) {
	b, off := d.ring(gpa)
	ringidx.Store(b, off, v)
}

func (d *Driver) loadIdx(gpa uint64) uint16 {
	b, off := d.ring(gpa)
	v, _ := ringidx.Load(b, off)
	return v
}
