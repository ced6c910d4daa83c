package devices

import "sync/atomic"

// I8042 is the part of the PS/2 keyboard controller a VM needs: its status
// port reads "nothing to read, ready for a command", and the pulse-reset
// command 0xFE on port 0x64 resets the machine. It covers ports 0x60-0x64
// (offsets 0-4); the ports between belong to nobody here (KVM's PIT
// handles 0x61 in the kernel).
type I8042 struct {
	reset  func()
	resets atomic.Uint32
}

// I8042Base and I8042Size place the controller on the PIO bus.
const (
	I8042Base = 0x60
	I8042Size = 5

	i8042Data       = 0
	i8042Command    = 4
	i8042CmdReset   = 0xfe
	i8042StatusIdle = 0 // output buffer empty, input buffer empty
)

// NewI8042 returns a controller that calls reset when the guest pulses the
// reset line. reset runs on the vCPU thread and must not block.
func NewI8042(reset func()) *I8042 { return &I8042{reset: reset} }

// Read implements bus.Device.
func (k *I8042) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
	if len(data) > 0 && (offset == i8042Data || offset == i8042Command) {
		data[0] = i8042StatusIdle
	}
}

// Write implements bus.Device.
func (k *I8042) Write(offset uint64, data []byte) {
	if offset == i8042Command && len(data) > 0 && data[0] == i8042CmdReset {
		k.resets.Add(1)
		if k.reset != nil {
			k.reset()
		}
	}
}

// Resets counts reset pulses seen.
func (k *I8042) Resets() int { return int(k.resets.Load()) }
