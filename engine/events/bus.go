// Package events is the engine's event bus: services publish what happened
// to containers, images, volumes and networks; front ends (GET /events, vmctl events)
// subscribe, optionally replaying recent events from a bounded history.
//
// It keeps events in memory only: a restarted daemon starts with an empty
// history, as dockerd does. It knows nothing of the Docker wire format;
// engine/server converts an Event to moby's events.Message.
//
// Publishing never blocks. Each subscriber has a buffer of its own; a
// subscriber that lets it fill up is disconnected (its channel is closed and
// Err says why) rather than slowing the engine down or silently missing
// events in the middle of its stream.
package events

import (
	"errors"
	"sync"
	"time"
)

// Type is the kind of object an event is about (Docker's names).
type Type string

const (
	TypeContainer Type = "container"
	TypeImage     Type = "image"
	TypeVolume    Type = "volume"
	TypeNetwork   Type = "network"
)

// Event is one thing that happened to one object.
type Event struct {
	Type Type
	// Action is Docker's action name ("create", "die", "exec_start: sh").
	Action string
	// ID is the object's ID (a container ID, an image ID or reference, a
	// volume name, a network ID).
	ID string
	// Attributes describe the object: name, image, exitCode, signal...
	Attributes map[string]string
	// Time is set by Publish when zero.
	Time time.Time
}

// Publisher is what a service needs to report events.
type Publisher interface {
	Publish(Event)
}

// DefaultHistory is how many recent events a Bus keeps for replay.
const DefaultHistory = 1024

// subscriberBuffer is how many events a subscriber may fall behind before
// it is disconnected.
const subscriberBuffer = 256

// ErrSlowSubscriber is why a subscription that fell too far behind ended.
var ErrSlowSubscriber = errors.New("event stream closed: the reader fell too far behind")

// Bus fans events out to subscribers and keeps the last ones for replay.
type Bus struct {
	mu sync.Mutex
	// ring holds the history, oldest at ring[head] once full. Guarded by mu.
	ring []Event
	head int
	full bool
	subs map[*Subscription]struct{} // guarded by mu
}

// NewBus returns a bus that keeps the last history events (DefaultHistory
// when history <= 0).
func NewBus(history int) *Bus {
	if history <= 0 {
		history = DefaultHistory
	}
	return &Bus{ring: make([]Event, 0, history), subs: map[*Subscription]struct{}{}}
}

// Publish records e and hands it to every subscriber whose filter matches.
// It never blocks: a subscriber whose buffer is full is disconnected.
func (b *Bus) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// Times must not go backwards in the history, or a replay by time
	// would miss events; clocks can step back.
	if last, ok := b.lastLocked(); ok && e.Time.Before(last.Time) {
		e.Time = last.Time
	}
	if len(b.ring) < cap(b.ring) {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.head] = e
		b.head = (b.head + 1) % len(b.ring)
		b.full = true
	}
	for s := range b.subs {
		if s.match != nil && !s.match(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			s.err = ErrSlowSubscriber
			b.dropLocked(s)
		}
	}
}

// lastLocked returns the newest event. Precondition: b.mu is held.
func (b *Bus) lastLocked() (Event, bool) {
	if len(b.ring) == 0 {
		return Event{}, false
	}
	i := len(b.ring) - 1
	if b.full {
		i = (b.head + len(b.ring) - 1) % len(b.ring)
	}
	return b.ring[i], true
}

// historyLocked returns the kept events in order. Precondition: b.mu is held.
func (b *Bus) historyLocked() []Event {
	if !b.full {
		return append([]Event(nil), b.ring...)
	}
	out := make([]Event, 0, len(b.ring))
	out = append(out, b.ring[b.head:]...)
	return append(out, b.ring[:b.head]...)
}

// Subscription is a live feed of events.
type Subscription struct {
	bus   *Bus
	match func(Event) bool
	ch    chan Event
	err   error // guarded by bus.mu
	gone  bool  // guarded by bus.mu
}

// C delivers events in publish order. It is closed by Close or when the
// subscriber falls too far behind (see Err).
func (s *Subscription) C() <-chan Event { return s.ch }

// Err says why C was closed by the bus; nil after Close or while open.
func (s *Subscription) Err() error {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.err
}

// Close ends the subscription. Idempotent.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	s.bus.dropLocked(s)
}

// dropLocked removes s and closes its channel. Precondition: b.mu is held.
func (b *Bus) dropLocked(s *Subscription) {
	if s.gone {
		return
	}
	s.gone = true
	delete(b.subs, s)
	close(s.ch)
}

// Subscribe returns the kept events at or after since that match (none if
// since is zero), and a subscription to the later ones. Both are taken
// under one lock, so no event is missed or seen twice between them. A nil
// match accepts every event.
func (b *Bus) Subscribe(since time.Time, match func(Event) bool) ([]Event, *Subscription) {
	s := &Subscription{bus: b, match: match, ch: make(chan Event, subscriberBuffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	var past []Event
	if !since.IsZero() {
		for _, e := range b.historyLocked() {
			if !e.Time.Before(since) && (match == nil || match(e)) {
				past = append(past, e)
			}
		}
	}
	b.subs[s] = struct{}{}
	return past, s
}
