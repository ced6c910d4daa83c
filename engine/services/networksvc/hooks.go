package networksvc

// The hooks to the parts of networking that run in the engine's process:
// the userland proxy of published ports (engine/networks/portproxy) and
// the networks' DNS servers (engine/networks/dnsserver). The wiring adapts
// them; the service calls them from Plumb, Unplumb, Remove and Restore.

import (
	"context"
	"net/netip"
)

// Proxies runs the userland proxies of published ports, grouped by owner
// (a container ID).
type Proxies interface {
	// Publish starts one proxy per port for owner, after stopping the
	// ones owner had, all or none. It returns the ports with their host
	// ports resolved (the kernel's choice for 0), in order. A port taken
	// by someone else is a conflict (errdefs).
	Publish(ctx context.Context, owner string, ports []ProxiedPort) ([]ProxiedPort, error)
	// Unpublish stops owner's proxies; an owner without any is no error.
	Unpublish(owner string)
}

// ProxiedPort is a published port and the container address it leads to.
type ProxiedPort struct {
	PortBinding
	// Container is the container's address on the network that carries
	// its published ports, and the container port.
	Container netip.AddrPort
}

// NameSet is what a network's DNS server answers.
type NameSet struct {
	// Records are the names of the network's running containers (each
	// with its addresses, as several containers may share an alias). The
	// default network's are empty: as under docker, containers there are
	// not found by name.
	Records map[string][]netip.Addr
	// Upstreams are, by each running container's address on the network,
	// its own name servers (--dns; nil for none), which its queries the
	// network does not answer go to, as docker's embedded DNS server
	// forwards them.
	Upstreams map[netip.Addr][]netip.AddrPort
}

// Names runs one DNS server per network, on its gateway address: it
// answers the names of the network's running containers and forwards the
// rest to the host's resolvers, or to a container's own (--dns).
type Names interface {
	// Serve starts the network's server if it does not run, and sets what
	// it answers.
	Serve(ctx context.Context, n Network, set NameSet) error
	// Remove stops the network's server; a network without one is no
	// error.
	Remove(networkID string)
}
