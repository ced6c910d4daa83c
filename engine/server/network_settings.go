package server

// What inspect and ps show of a container's network, in API 1.41's shape,
// which the wire types of newer APIs no longer have (the top-level
// IPAddress, Gateway, MacAddress... that
// `docker inspect -f '{{.NetworkSettings.IPAddress}}'` reads).

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
)

// networkSettings is inspect's NetworkSettings in API 1.41's shape.
type networkSettings struct {
	Bridge                 string
	SandboxID              string
	HairpinMode            bool
	LinkLocalIPv6Address   string
	LinkLocalIPv6PrefixLen int
	Ports                  map[string][]portBindingJSON
	SandboxKey             string
	SecondaryIPAddresses   []struct{}
	SecondaryIPv6Addresses []struct{}
	// The container's endpoint on the default network, as dockerd shows
	// it at the top level; empty on other networks.
	EndpointID          string
	Gateway             string
	GlobalIPv6Address   string
	GlobalIPv6PrefixLen int
	IPAddress           string
	IPPrefixLen         int
	IPv6Gateway         string
	MacAddress          string
	Networks            map[string]*endpointSettings
}

// endpointSettings is a container's endpoint on one network in API 1.41's
// shape.
type endpointSettings struct {
	IPAMConfig          *endpointIPAMConfig
	Links               []string
	Aliases             []string
	NetworkID           string
	EndpointID          string
	Gateway             string
	IPAddress           string
	IPPrefixLen         int
	IPv6Gateway         string
	GlobalIPv6Address   string
	GlobalIPv6PrefixLen int
	MacAddress          string
	DriverOpts          map[string]string
}

type endpointIPAMConfig struct {
	IPv4Address  string   `json:",omitempty"`
	IPv6Address  string   `json:",omitempty"`
	LinkLocalIPs []string `json:",omitempty"`
}

// containerNetwork is what inspect and ps show of a container's network:
// its endpoints, each with its network, as the network service has them.
type containerNetwork struct {
	endpoints []networksvc.Endpoint
	networks  map[string]networksvc.Network // by ID
}

// containerNetwork reads c's endpoints and their networks. A container
// without a network (mode none, or a record from before networking) has
// none; so has every container when the engine has no network service.
func (s *Server) containerNetwork(ctx context.Context, c *containersvc.Container) (containerNetwork, error) {
	cn := containerNetwork{networks: map[string]networksvc.Network{}}
	if s.networks == nil || c.Config.NetworkMode() == containersvc.NetworkNone {
		return cn, nil
	}
	eps, err := s.networks.Endpoints(ctx, c.ID)
	if err != nil {
		return cn, err
	}
	for _, e := range eps {
		if _, ok := cn.networks[e.NetworkID]; ok {
			continue
		}
		n, err := s.networks.Get(ctx, e.NetworkID)
		if errdefs.IsNotFound(err) {
			continue // removed while we read: the endpoint went with it
		}
		if err != nil {
			return cn, err
		}
		cn.networks[e.NetworkID] = n
		cn.endpoints = append(cn.endpoints, e)
	}
	return cn, nil
}

// endpointsJSON is NetworkSettings.Networks, by network name. A container
// in mode none shows the none entry dockerd shows, with nothing in it.
func (cn containerNetwork) endpointsJSON(c *containersvc.Container) map[string]*endpointSettings {
	out := map[string]*endpointSettings{}
	if c.Config.NetworkMode() == containersvc.NetworkNone {
		out[containersvc.NetworkNone] = &endpointSettings{}
		return out
	}
	for _, e := range cn.endpoints {
		n := cn.networks[e.NetworkID]
		es := &endpointSettings{
			Aliases: e.Aliases, NetworkID: n.ID, EndpointID: endpointID(n.ID, c.ID),
			MacAddress: e.MAC.String(),
		}
		// On a user-defined network the container's short ID is one of
		// its names too, and dockerd lists it with the aliases.
		if short := c.ShortID(); !n.Default && !slices.Contains(e.Aliases, short) {
			es.Aliases = append(slices.Clone(e.Aliases), short)
		}
		if e.StaticIP {
			es.IPAMConfig = &endpointIPAMConfig{IPv4Address: e.IP.String()}
		}
		if e.IP.IsValid() {
			es.IPAddress, es.IPPrefixLen = e.IP.String(), n.Subnet.Bits()
			es.Gateway = n.Gateway.String()
		}
		out[n.Name] = es
	}
	return out
}

// publishedPorts are the container's published ports while it runs, with
// their host ports as they were chosen, in order.
func (cn containerNetwork) publishedPorts(c *containersvc.Container) []networksvc.PortBinding {
	if c.State.Status != containersvc.StatusRunning {
		return nil
	}
	var out []networksvc.PortBinding
	for _, e := range cn.endpoints {
		out = append(out, e.Ports...)
	}
	slices.SortStableFunc(out, func(a, b networksvc.PortBinding) int {
		return comparePorts(containersvc.Port{Port: a.ContainerPort, Proto: a.Proto}, containersvc.Port{Port: b.ContainerPort, Proto: b.Proto})
	})
	return out
}

// exposed are the ports inspect and ps show for c besides the published
// ones: its exposed ports and the ports it asked to publish.
func exposed(c *containersvc.Container) []containersvc.Port {
	nc := c.Config.Network
	if nc == nil {
		return nil
	}
	out := slices.Clone(nc.ExposedPorts)
	for _, b := range nc.PortBindings {
		if p := (containersvc.Port{Port: b.ContainerPort, Proto: b.Proto}); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePorts)
	return out
}

func hostIPString(ip netip.Addr) string {
	if !ip.IsValid() {
		return "0.0.0.0"
	}
	return ip.String()
}

// settingsJSON is inspect's NetworkSettings. Ports maps every exposed
// port to its host bindings while the container runs, null for one that
// is not published, and is empty while it does not run, as in dockerd.
func (cn containerNetwork) settingsJSON(c *containersvc.Container) *networkSettings {
	ns := &networkSettings{Ports: map[string][]portBindingJSON{}, Networks: cn.endpointsJSON(c)}
	if c.State.Status == containersvc.StatusRunning {
		for _, p := range exposed(c) {
			ns.Ports[fmt.Sprintf("%d/%s", p.Port, p.Proto)] = nil
		}
		for _, b := range cn.publishedPorts(c) {
			key := fmt.Sprintf("%d/%s", b.ContainerPort, b.Proto)
			ns.Ports[key] = append(ns.Ports[key], portBindingJSON{HostIP: hostIPString(b.HostIP), HostPort: strconv.Itoa(int(b.HostPort))})
		}
	}
	for _, e := range cn.endpoints {
		if n := cn.networks[e.NetworkID]; n.Default {
			top := ns.Networks[n.Name]
			ns.EndpointID, ns.Gateway, ns.IPAddress = top.EndpointID, top.Gateway, top.IPAddress
			ns.IPPrefixLen, ns.MacAddress = top.IPPrefixLen, top.MacAddress
		}
	}
	return ns
}

// portSummary is one entry of ps's Ports in API 1.41's shape: IP and
// PublicPort are left out for a port that is exposed, not published.
type portSummary struct {
	IP          string `json:"IP,omitempty"`
	PrivatePort uint16
	PublicPort  uint16 `json:",omitempty"`
	Type        string
}

// portsJSON is ps's Ports: the published ports, then the exposed ones
// that are not, while the container runs; none otherwise.
func (cn containerNetwork) portsJSON(c *containersvc.Container) []portSummary {
	out := []portSummary{}
	if c.State.Status != containersvc.StatusRunning {
		return out
	}
	published := cn.publishedPorts(c)
	for _, b := range published {
		out = append(out, portSummary{IP: hostIPString(b.HostIP), PrivatePort: b.ContainerPort, PublicPort: b.HostPort, Type: b.Proto})
	}
	for _, p := range exposed(c) {
		if !slices.ContainsFunc(published, func(b networksvc.PortBinding) bool { return b.ContainerPort == p.Port && b.Proto == p.Proto }) {
			out = append(out, portSummary{PrivatePort: p.Port, Type: p.Proto})
		}
	}
	return out
}

// hostConfigNetwork sets the network fields of inspect's HostConfig, as
// the create asked for them: PortBindings {} and the DNS lists [] when
// empty, ExtraHosts null, as dockerd echoes a docker CLI's create.
func hostConfigNetwork(hc *container.HostConfig, c *containersvc.Container) {
	hc.NetworkMode = container.NetworkMode(c.Config.NetworkMode())
	hc.PortBindings = network.PortMap{}
	hc.DNS, hc.DNSSearch, hc.DNSOptions = []netip.Addr{}, []string{}, []string{}
	nc := c.Config.Network
	if nc == nil {
		return
	}
	for _, b := range nc.PortBindings {
		port, ok := network.PortFrom(b.ContainerPort, network.IPProtocol(b.Proto))
		if !ok {
			continue
		}
		pb := network.PortBinding{}
		if b.HostIP.IsValid() {
			pb.HostIP = b.HostIP
		}
		if b.HostPort != 0 {
			pb.HostPort = strconv.Itoa(int(b.HostPort))
		}
		hc.PortBindings[port] = append(hc.PortBindings[port], pb)
	}
	hc.PublishAllPorts = nc.PublishAll
	for _, d := range nc.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			hc.DNS = append(hc.DNS, a)
		}
	}
	hc.DNSSearch = append(hc.DNSSearch, nc.DNSSearch...)
	hc.DNSOptions = append(hc.DNSOptions, nc.DNSOptions...)
	hc.ExtraHosts = nc.ExtraHosts
}
