package devices

import (
	"encoding/binary"
	"sync"
	"time"
)

// BootTimerPort is the magic port: any store to it records the time since
// the VMM process started. The guest (or its agent) writes it when it
// reaches a milestone; the value written identifies the milestone.
const BootTimerPort = 0x3f0

// BootEvent is one store to the boot-timer port.
type BootEvent struct {
	Value uint64
	Since time.Duration
}

// BootTimer records guest milestones against a start time.
type BootTimer struct {
	start time.Time
	log   func(BootEvent)

	mu     sync.Mutex
	events []BootEvent
}

// maxBootEvents bounds what a guest that loops on the port can make us keep.
const maxBootEvents = 64

// NewBootTimer measures from start and calls log (if not nil) for each event.
func NewBootTimer(start time.Time, log func(BootEvent)) *BootTimer {
	return &BootTimer{start: start, log: log}
}

// Read implements bus.Device: the port reads as zero.
func (b *BootTimer) Read(offset uint64, data []byte) { clear(data) }

// Write implements bus.Device.
func (b *BootTimer) Write(offset uint64, data []byte) {
	var v [8]byte
	copy(v[:], data)
	ev := BootEvent{Value: binary.LittleEndian.Uint64(v[:]), Since: time.Since(b.start)}
	b.mu.Lock()
	keep := len(b.events) < maxBootEvents
	if keep {
		b.events = append(b.events, ev)
	}
	b.mu.Unlock()
	if keep && b.log != nil {
		b.log(ev)
	}
}

// Events returns the recorded events, oldest first.
func (b *BootTimer) Events() []BootEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BootEvent(nil), b.events...)
}
