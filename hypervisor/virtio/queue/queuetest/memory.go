// Package queuetest plays the guest side of split virtqueues for device
// tests: a byte-slice guest RAM (Memory) and a driver (Driver) that lays out
// rings, builds descriptor chains, publishes them and collects used entries
// with the same ordering rules as a real driver.
//
// It is test support only: nothing in the VMM imports it.
package queuetest

import (
	"encoding/binary"
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/internal/ringidx"
)

// Memory is guest RAM backed by one Go byte slice starting at Base. It
// implements memory.Memory with the same bounds rules as the VMM's.
type Memory struct {
	Base  uint64
	bytes []byte
}

var _ memory.Memory = (*Memory)(nil)

// NewMemory returns size bytes of zeroed guest RAM at guest address base.
// The backing array is 4-byte aligned (checked, not assumed), like the
// VMM's page-aligned mappings; base should be 8-byte aligned too.
func NewMemory(base uint64, size int) *Memory {
	b := make([]byte, size+8)
	off := 0
	for !ringidx.Aligned(b[off:]) {
		off++ // Go does not promise more than byte alignment for []byte
	}
	return &Memory{Base: base, bytes: b[off : off+size : off+size]}
}

// Size is the RAM size in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.bytes)) }

func (m *Memory) span(gpa, n uint64) ([]byte, error) {
	if gpa < m.Base || n > uint64(len(m.bytes)) || gpa-m.Base > uint64(len(m.bytes))-n {
		return nil, fmt.Errorf("%w: %#x+%d", memory.ErrOutOfRange, gpa, n)
	}
	off := gpa - m.Base
	return m.bytes[off : off+n : off+n], nil
}

// ReadAt implements memory.Memory.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	b, err := m.span(gpa, uint64(len(p)))
	if err == nil {
		copy(p, b)
	}
	return err
}

// WriteAt implements memory.Memory.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	b, err := m.span(gpa, uint64(len(p)))
	if err == nil {
		copy(b, p)
	}
	return err
}

// Slice implements memory.Memory.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) { return m.span(gpa, n) }

// ReadUint16 implements memory.Memory.
func (m *Memory) ReadUint16(gpa uint64) (uint16, error) {
	b, err := m.span(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

// ReadUint32 implements memory.Memory.
func (m *Memory) ReadUint32(gpa uint64) (uint32, error) {
	b, err := m.span(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// ReadUint64 implements memory.Memory.
func (m *Memory) ReadUint64(gpa uint64) (uint64, error) {
	b, err := m.span(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// WriteUint16 implements memory.Memory.
func (m *Memory) WriteUint16(gpa uint64, v uint16) error {
	b, err := m.span(gpa, 2)
	if err == nil {
		binary.LittleEndian.PutUint16(b, v)
	}
	return err
}

// WriteUint32 implements memory.Memory.
func (m *Memory) WriteUint32(gpa uint64, v uint32) error {
	b, err := m.span(gpa, 4)
	if err == nil {
		binary.LittleEndian.PutUint32(b, v)
	}
	return err
}

// WriteUint64 implements memory.Memory.
func (m *Memory) WriteUint64(gpa uint64, v uint64) error {
	b, err := m.span(gpa, 8)
	if err == nil {
		binary.LittleEndian.PutUint64(b, v)
	}
	return err
}
