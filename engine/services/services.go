// Package services gathers the engine's services, the domain logic that
// front ends drive: containers, images, volumes, networks, the system, and
// the event bus they report to. engine.New builds them over the stores; a transport
// adapter (engine/server) takes them as one value, so that the wiring and
// the adapter need not know each other.
//
// Each service lives in its own package below this one and has no
// transport code.
package services

import (
	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/imagesvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
	"github.com/vmctl/vmctl/engine/services/systemsvc"
	"github.com/vmctl/vmctl/engine/services/volumesvc"
)

// Services are one engine's services.
type Services struct {
	Containers *containersvc.Service
	Images     *imagesvc.Service
	Volumes    *volumesvc.Service
	Networks   *networksvc.Service
	System     *systemsvc.Service
	// Events carries what the services report about containers, images,
	// volumes and networks; it lives as long as the engine.
	Events *events.Bus
}
