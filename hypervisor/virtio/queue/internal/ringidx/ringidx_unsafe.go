// Package ringidx loads and stores the 16-bit ring fields of a split
// virtqueue (avail->idx, used->idx, the flags and the event indexes) with
// defined ordering against the guest, which runs on other CPUs.
//
// Go's sync/atomic has no 16-bit operations, and plain loads may be cached
// or reordered by the compiler. The approach, chosen once for the whole
// project: every 16-bit ring field is 2-byte aligned, so it lies entirely
// inside one naturally aligned 32-bit word; we access that word with
// sync/atomic and extract or replace our half.
//
//   - Load is an atomic 32-bit load (an acquire on every Go platform): plain
//     reads of ring entries and descriptors made after it cannot be
//     satisfied earlier, which is what the driver's write barrier before
//     publishing avail->idx requires of us.
//   - Store is a compare-and-swap loop on the word: a full barrier, so the
//     used elements written before it are visible to the guest first, and
//     reads made after it (used_event, avail->flags for notification
//     suppression) are not hoisted above it, as virtio 1.2 section 2.7.7
//     requires. The other half of the word is rewritten with the value just
//     read; if the guest changes it concurrently the CAS fails and we retry,
//     so no guest write is lost.
//
// Byte order: ring fields are little-endian; the word's native byte order
// is handled with encoding/binary.NativeEndian, so the code is correct on
// big-endian hosts too.
//
// It is the only place in the virtio stack that uses package unsafe.
package ringidx

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// word returns the aligned 32-bit word holding b[off:off+2] and the byte
// offset (0 or 2) of the field inside it, or ok=false if off is odd, out of
// range, or the word is not entirely inside b.
func word(b []byte, off int) (w *uint32, shift int, ok bool) {
	if off < 0 || off+2 > len(b) {
		return nil, 0, false
	}
	// Converting the address of an element of b to uintptr only to read its
	// alignment is allowed (unsafe rule 4 is not needed: no pointer is
	// rebuilt from this value).
	mis := int(uintptr(unsafe.Pointer(&b[off])) & 3)
	if mis&1 != 0 {
		return nil, 0, false
	}
	start := off - mis
	if start < 0 || start+4 > len(b) {
		return nil, 0, false
	}
	// &b[start] is 4-byte aligned (checked above) and b[start:start+4] is in
	// bounds, so it may be viewed as a *uint32 (unsafe rule 1: uint32 has no
	// pointers and the memory is large enough and suitably aligned).
	return (*uint32)(unsafe.Pointer(&b[start])), mis, true
}

// Load atomically reads the little-endian uint16 at b[off:off+2]. ok is
// false if the aligned word holding it is not inside b or off is odd.
func Load(b []byte, off int) (v uint16, ok bool) {
	w, shift, ok := word(b, off)
	if !ok {
		return 0, false
	}
	var buf [4]byte
	binary.NativeEndian.PutUint32(buf[:], atomic.LoadUint32(w))
	return binary.LittleEndian.Uint16(buf[shift:]), true
}

// Store atomically writes v as a little-endian uint16 at b[off:off+2],
// with full-barrier semantics. ok is false if the aligned word holding it
// is not inside b or off is odd.
func Store(b []byte, off int, v uint16) bool {
	w, shift, ok := word(b, off)
	if !ok {
		return false
	}
	for {
		old := atomic.LoadUint32(w)
		var buf [4]byte
		binary.NativeEndian.PutUint32(buf[:], old)
		binary.LittleEndian.PutUint16(buf[shift:], v)
		if atomic.CompareAndSwapUint32(w, old, binary.NativeEndian.Uint32(buf[:])) {
			return true
		}
	}
}

// Aligned reports whether &b[0] is 4-byte aligned (true for an empty b).
// Ring slices are cut from page-aligned guest RAM mappings, so a ring at a
// 4-byte aligned guest address is 4-byte aligned on the host too; callers
// check this once when they set a queue up.
func Aligned(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))&3 == 0
}
