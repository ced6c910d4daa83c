package containersvc

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// Network gives a container its endpoints from create to removal, and each
// run of it the network they say (docs/networking.md): the network
// service, or a fake in tests.
type Network interface {
	// Join gives a new container its endpoints, one per network in joins
	// (the first is eth0's, with the default route and the published
	// ports), and records the ports to publish and the DNS settings of
	// c.Config.Network. On error it keeps none of them.
	Join(ctx context.Context, c *containers.Container, joins []NetworkJoin) error
	// Release frees a removed container's endpoints and addresses. It is
	// safe to call for a container that has none.
	Release(ctx context.Context, containerID string) error
	// Plumb readies the container's endpoints for a run (taps, rules) and
	// says what its VM and agent need. A container without endpoints
	// (--network none) gets the zero Plumbing.
	Plumb(ctx context.Context, containerID string) (Plumbing, error)
	// Unplumb undoes Plumb once the container's VM is gone. It is safe to
	// call for a container that is not plumbed.
	Unplumb(ctx context.Context, containerID string) error
	// Rename gives the container's endpoints its new name, which the
	// networks' DNS serves.
	Rename(ctx context.Context, containerID, name string) error
}

// NetworkJoin is one network a container joins at create.
type NetworkJoin struct {
	// Network is the network's name or ID; the default network for
	// NetworkDefault and NetworkBridge.
	Network  string
	Endpoint EndpointOptions
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

// networkConfig is what a container records of its create's network
// options: the mode (NetworkNone too, which inspect shows), the ports to
// publish, its exposed ports (the create's, the image's and those -p
// names), the DNS settings.
func networkConfig(o CreateOptions, imageExposed []string) (*containers.NetworkConfig, error) {
	mode := o.NetworkMode
	if mode == "" {
		mode = NetworkDefault
	}
	exposed := append([]Port(nil), o.ExposedPorts...)
	for _, s := range imageExposed {
		p, err := parseImagePort(s)
		if err != nil {
			return nil, err
		}
		exposed = append(exposed, p)
	}
	for _, b := range o.PortBindings {
		exposed = append(exposed, Port{Port: b.ContainerPort, Proto: b.Proto})
	}
	slices.SortFunc(exposed, func(a, b Port) int {
		if c := cmp.Compare(a.Port, b.Port); c != 0 {
			return c
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	exposed = slices.Compact(exposed)
	return &containers.NetworkConfig{
		Mode: mode, PortBindings: o.PortBindings, PublishAll: o.PublishAll, ExposedPorts: exposed,
		DNS: o.DNS, DNSSearch: o.DNSSearch, DNSOptions: o.DNSOptions, ExtraHosts: o.ExtraHosts,
		MacAddress: o.MacAddress,
	}, nil
}

// parseImagePort reads an image config's exposed port, "80/tcp" (or "80",
// which is tcp).
func parseImagePort(s string) (Port, error) {
	num, proto, ok := strings.Cut(s, "/")
	if !ok {
		proto = "tcp"
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 || (proto != "tcp" && proto != "udp") {
		return Port{}, errs.New(errdefs.ErrInvalidArgument, "the image exposes %q: want PORT[/tcp|/udp]", s)
	}
	return Port{Port: uint16(n), Proto: proto}, nil
}

// networkJoins orders a create's networks: the one NetworkMode names (the
// default network for NetworkDefault and NetworkBridge) first, the others
// by name. None for NetworkNone.
func networkJoins(o CreateOptions, mode string) []NetworkJoin {
	if mode == NetworkNone {
		return nil
	}
	first := mode
	if first == NetworkDefault {
		first = NetworkBridge
	}
	joins := []NetworkJoin{{Network: first, Endpoint: o.Networks[mode]}}
	if mode == NetworkDefault {
		if ep, ok := o.Networks[NetworkBridge]; ok {
			joins[0].Endpoint = ep
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.Networks)) {
		if name == mode || (mode == NetworkDefault && name == NetworkBridge) {
			continue
		}
		joins = append(joins, NetworkJoin{Network: name, Endpoint: o.Networks[name]})
	}
	return joins
}
