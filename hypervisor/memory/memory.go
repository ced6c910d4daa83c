// Package memory is guest RAM as the VMM sees it: host mappings of guest
// physical ranges, and bounds-checked access by guest physical address.
// Nothing outside this package indexes guest memory with an unchecked
// guest-controlled value.
//
// It does not know about KVM (the machine registers the mappings as memory
// slots) or about devices.
package memory

import "errors"

// ErrOutOfRange is returned for any access that is not entirely inside one
// guest RAM region. Guest-supplied addresses and lengths end here, never in
// a panic.
var ErrOutOfRange = errors.New("guest memory access out of range")

// Memory is what devices and loaders get: access to guest RAM by guest
// physical address (GPA). Implementations are safe for concurrent use;
// concurrent access to the same bytes is the guest's business, as on real
// hardware.
type Memory interface {
	// ReadAt copies len(p) bytes at gpa into p.
	ReadAt(p []byte, gpa uint64) error
	// WriteAt copies p into guest memory at gpa.
	WriteAt(p []byte, gpa uint64) error
	// Slice returns the host view of [gpa, gpa+n): writes to it are guest
	// writes. The range must lie inside one region.
	Slice(gpa, n uint64) ([]byte, error)
	// Read/Write little-endian integers of 2, 4 and 8 bytes.
	ReadUint16(gpa uint64) (uint16, error)
	ReadUint32(gpa uint64) (uint32, error)
	ReadUint64(gpa uint64) (uint64, error)
	WriteUint16(gpa uint64, v uint16) error
	WriteUint32(gpa uint64, v uint32) error
	WriteUint64(gpa uint64, v uint64) error
}
