package bus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// ErrOverlap is returned when a new range overlaps a registered one.
var ErrOverlap = errors.New("bus range overlaps a registered device")

// Bus maps address ranges to devices: one Bus for port I/O, another for
// MMIO. It is safe for concurrent use; registration normally happens
// before the vCPUs start, and dispatch only takes a read lock.
type Bus struct {
	name    string
	mu      sync.RWMutex
	entries []entry // sorted by base, non-overlapping
}

type entry struct {
	base, size uint64
	name       string
	dev        Device
}

// New returns an empty bus; name ("pio", "mmio") appears in errors.
func New(name string) *Bus { return &Bus{name: name} }

// Register places dev at [base, base+size). name identifies it in errors
// and listings.
func (b *Bus) Register(base, size uint64, name string, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: %s at %#x size %#x: empty or wrapping range", b.name, name, base, size)
	}
	if dev == nil {
		return fmt.Errorf("%s bus: %s at %#x: nil device", b.name, name, base)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 && b.entries[i-1].base+b.entries[i-1].size > base {
		return fmt.Errorf("%s bus: %s at %#x-%#x: %w (%s)", b.name, name, base, base+size-1, ErrOverlap, b.entries[i-1].name)
	}
	if i < len(b.entries) && base+size > b.entries[i].base {
		return fmt.Errorf("%s bus: %s at %#x-%#x: %w (%s)", b.name, name, base, base+size-1, ErrOverlap, b.entries[i].name)
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base: base, size: size, name: name, dev: dev}
	return nil
}

// find returns the device covering the whole access [addr, addr+n) and the
// offset of addr in it.
func (b *Bus) find(addr uint64, n int) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base > addr }) - 1
	if i < 0 {
		return nil, 0, false
	}
	e := b.entries[i]
	off := addr - e.base
	if off >= e.size || uint64(n) > e.size-off {
		return nil, 0, false
	}
	return e.dev, off, true
}

// Read dispatches a load of len(data) bytes at addr. It reports false when
// no device covers the access; data is then all ones, as an open bus reads.
func (b *Bus) Read(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return false
	}
	dev.Read(off, data)
	return true
}

// Write dispatches a store at addr. It reports false when no device covers
// the access; the store is then dropped.
func (b *Bus) Write(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	dev.Write(off, data)
	return true
}

// Range describes one registration, for listings and logs.
type Range struct {
	Base, Size uint64
	Name       string
}

// Ranges lists the registrations in address order.
func (b *Bus) Ranges() []Range {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]Range, len(b.entries))
	for i, e := range b.entries {
		out[i] = Range{Base: e.base, Size: e.size, Name: e.name}
	}
	return out
}
