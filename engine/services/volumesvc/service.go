// Package volumesvc is the volume service: named volumes as the API and the
// container service use them, over the volume store (engine/volumes). It
// reports what happens to volumes on the event bus (create, destroy),
// whoever asked for it: an API client, a container's create or removal, a
// prune. It chooses volumes by docker's filters for listing and pruning.
//
// It has no transport code, and it does not know how a volume reaches a
// guest (engine/services/containersvc does).
package volumesvc

import (
	"context"

	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/volumes"
)

// The service hands out the store's domain types, so that its users need
// not import the store.
type (
	// Volume is one named volume.
	Volume = volumes.Volume
	// CreateOptions is what a user asks for (docker volume create).
	CreateOptions = volumes.CreateOptions
)

// DriverLocal is the only volume driver: a disk image on this host.
const DriverLocal = volumes.DriverLocal

// Config wires a Service.
type Config struct {
	Store *volumes.Store
	// Events receives the volume events; nil reports none.
	Events events.Publisher
}

// Service manages volumes and reports their events.
type Service struct {
	store  *volumes.Store
	events events.Publisher
}

// New returns a Service over cfg.Store.
func New(cfg Config) *Service {
	return &Service{store: cfg.Store, events: cfg.Events}
}

// publish reports a volume event as dockerd does: the actor is the
// volume's name, with its driver.
func (s *Service) publish(action, name string) {
	if s.events != nil {
		s.events.Publish(events.Event{Type: events.TypeVolume, Action: action, ID: name,
			Attributes: map[string]string{"driver": DriverLocal}})
	}
}

// Create makes a volume, or returns the one of that name as it is
// (docker's behaviour); only a new one is reported.
func (s *Service) Create(ctx context.Context, o CreateOptions) (*Volume, error) {
	v, created, err := s.store.Create(ctx, o)
	if created {
		s.publish("create", v.Name)
	}
	return v, err
}

// Get returns a volume by name.
func (s *Service) Get(name string) (*Volume, error) { return s.store.Get(name) }

// Remove deletes a volume that no container references (see
// volumes.Store.Remove); with force, a missing volume is not an error.
func (s *Service) Remove(ctx context.Context, name string, force bool) error {
	removed, err := s.store.Remove(ctx, name, force)
	if removed {
		s.publish("destroy", name)
	}
	return err
}

// Use makes sure the volumes exist and calls record with them under the
// store's lock (see volumes.Store.Use). The volumes it created are
// reported only once record has succeeded: those undone after a failed
// record never existed for anyone.
func (s *Service) Use(ctx context.Context, reqs []CreateOptions, record func(map[string]*Volume) error) error {
	created, err := s.store.Use(ctx, reqs, record)
	for _, name := range created {
		s.publish("create", name)
	}
	return err
}

// Claim holds the named volumes for a container start until release (see
// volumes.Store.Claim).
func (s *Service) Claim(ctx context.Context, names []string) (release func(), err error) {
	return s.store.Claim(ctx, names)
}
