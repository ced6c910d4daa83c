// Package bus dispatches the VMM's port I/O and MMIO exits to devices.
// Devices see offsets into their own range, never absolute addresses.
//
// It knows nothing of KVM or of particular devices.
package bus

// Device is a register block on a bus. Read fills data (1, 2, 4 or 8 bytes)
// for the access at offset; Write handles a store. Both run on the vCPU
// thread that trapped: they must not block on the host (no I/O waits), and
// must never panic on any offset or size.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}
