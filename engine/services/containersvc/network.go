package containersvc

import (
	"context"
	"time"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// Network gives each run of a container the network its endpoints say
// (docs/networking.md): the network service, or a fake in tests.
type Network interface {
	// Plumb readies the container's endpoints for a run (taps, rules) and
	// says what its VM and agent need. A container without endpoints
	// (--network none) gets the zero Plumbing.
	Plumb(ctx context.Context, containerID string) (Plumbing, error)
	// Unplumb undoes Plumb once the container's VM is gone. It is safe to
	// call for a container that is not plumbed.
	Unplumb(ctx context.Context, containerID string) error
}

// Plumbing is what one run needs of the container's network.
type Plumbing struct {
	// NICs are the VM's devices, eth0 first.
	NICs []sandbox.NIC
	// Interfaces and Routes are what the agent configures in the guest.
	Interfaces []agent.Interface
	Routes     []agent.Route
	// Hosts and ResolvConf are the container's /etc/hosts and
	// /etc/resolv.conf; an empty one keeps the image's.
	Hosts, ResolvConf string
}

// unplumbTimeout bounds the release of a run's network after its VM ended.
const unplumbTimeout = 10 * time.Second

// containerNetwork is what the agent's CreateContainer gets: the files the
// plumbing has (empty ones keep the image's), its own /etc/hostname as
// under Docker, and, with NICs, the guest's network namespace, where they
// are. A container without NICs keeps a namespace with only lo. The zero
// Plumbing (no network service) changes nothing in the container.
func (p Plumbing) containerNetwork(hostname string) agent.ContainerNetwork {
	n := agent.ContainerNetwork{Hosts: p.Hosts, ResolvConf: p.ResolvConf, ShareGuestNetwork: len(p.NICs) > 0}
	if hostname != "" && (n != agent.ContainerNetwork{}) {
		n.HostnameFile = hostname + "\n"
	}
	return n
}
