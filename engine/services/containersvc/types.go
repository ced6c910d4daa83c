package containersvc

import "github.com/vmctl/vmctl/engine/containers"

// The service hands out the container store's domain types, so that its
// users (the REST server) need not import the store.
type (
	// Container is a container's record: its configuration and state.
	Container = containers.Container
	// Status is the state of a container.
	Status = containers.Status
	// ListOptions chooses containers as docker ps does: all, limit and
	// filters.
	ListOptions = containers.ListOptions
	// NetworkConfig is what a container asked of the network at create.
	NetworkConfig = containers.NetworkConfig
	// Port is a container port and its protocol.
	Port = containers.Port
	// PortBinding publishes a container port on the host.
	PortBinding = containers.PortBinding
	// Security is a container's confinement and limit options.
	Security = containers.Security
	// Ulimit is one resource limit of a container.
	Ulimit = containers.Ulimit
	// Healthcheck is how a container's health is probed.
	Healthcheck = containers.Healthcheck
)

// The network modes besides a network's name or ID.
const (
	NetworkDefault = containers.NetworkDefault
	NetworkBridge  = containers.NetworkBridge
	NetworkNone    = containers.NetworkNone
)

// The states of a container.
const (
	StatusCreated = containers.StatusCreated
	StatusRunning = containers.StatusRunning
	StatusExited  = containers.StatusExited
)

// Select returns the containers o chooses, as docker ps lists them (see
// containers.Select); an unknown filter is bad input.
func (s *Service) Select(o ListOptions) ([]*Container, error) {
	list, err := s.List()
	if err != nil {
		return nil, err
	}
	return containers.Select(list, o)
}
