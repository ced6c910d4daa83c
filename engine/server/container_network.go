package server

// A container create's network fields (HostConfig.NetworkMode,
// PortBindings, PublishAllPorts, Dns, DnsSearch, DnsOptions, ExtraHosts;
// Config.ExposedPorts and MacAddress; NetworkingConfig.EndpointsConfig),
// checked with dockerd's messages. network_settings.go shows them back.

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// createRequest is POST /containers/create's body. Besides the wire type
// it reads the fields API 1.41 clients send that newer wire types moved
// (Config.MacAddress) or parse as they decode (ports and DNS addresses),
// so that a malformed value gets dockerd's message rather than a JSON
// error. The fields here shadow the wire type's.
type createRequest struct {
	container.CreateRequest
	// MacAddress is Config.MacAddress, which API 1.44 moved to the
	// endpoint settings.
	MacAddress       string
	ExposedPorts     map[string]struct{}
	HostConfig       *createHostConfig
	NetworkingConfig *struct {
		EndpointsConfig map[string]*endpointConfig
	}
}

type createHostConfig struct {
	container.HostConfig
	PortBindings map[string][]portBindingJSON
	DNS          []string `json:"Dns"`
}

// portBindingJSON is a port binding in API 1.41's shape.
type portBindingJSON struct {
	HostIP   string `json:"HostIp"`
	HostPort string
}

// createNetwork fills the network fields of a create's options. It
// resolves the networks named (an unknown one is a 404, "network x not
// found"), so that the create fails before anything is made; the network
// service checks addresses when the container's endpoints are made.
func (s *Server) createNetwork(ctx context.Context, req *createRequest, hc *container.HostConfig, apiVersion41 bool, o *containersvc.CreateOptions) error {
	bad := func(format string, args ...any) error { return errs.New(errdefs.ErrInvalidArgument, format, args...) }
	mode := string(hc.NetworkMode)
	if mode == "" {
		mode = containersvc.NetworkDefault
	}
	switch {
	case mode == "host":
		return bad("network mode host is not supported: each container runs in its own VM, which cannot share the host's network stack")
	case strings.HasPrefix(mode, "container:"):
		return bad("network mode %s is not supported: each container runs in its own VM, with a network stack of its own", mode)
	}
	var rawHC *createHostConfig
	if req.HostConfig != nil {
		rawHC = req.HostConfig
	} else {
		rawHC = &createHostConfig{}
	}
	var err error
	if o.PortBindings, err = portBindings(rawHC.PortBindings); err != nil {
		return err
	}
	o.PublishAll = hc.PublishAllPorts
	if o.ExposedPorts, err = exposedPorts(slices.Collect(maps.Keys(req.ExposedPorts))); err != nil {
		return err
	}
	for _, d := range rawHC.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return bad("IP address is not correctly formatted: %s", d)
		}
	}
	o.DNS = rawHC.DNS
	for _, v := range hc.DNSSearch {
		if v == "" || strings.ContainsAny(v, " \t\r\n") {
			return bad("%q is not a valid domain", v)
		}
	}
	for _, v := range hc.DNSOptions {
		if v == "" || strings.ContainsAny(v, " \t\r\n") {
			return bad("invalid DNS option %q: want a resolver option such as ndots:2", v)
		}
	}
	o.DNSSearch, o.DNSOptions = hc.DNSSearch, hc.DNSOptions
	for _, h := range hc.ExtraHosts {
		if err := checkExtraHost(h); err != nil {
			return err
		}
	}
	o.ExtraHosts = hc.ExtraHosts

	var mac net.HardwareAddr
	if req.MacAddress != "" {
		if mac, err = parseMAC(req.MacAddress); err != nil {
			return bad("invalid MAC address: %s", req.MacAddress)
		}
	}
	var eps map[string]*endpointConfig
	if req.NetworkingConfig != nil {
		eps = req.NetworkingConfig.EndpointsConfig
	}
	if s.networks == nil && mode == containersvc.NetworkDefault {
		// An engine without its network service runs containers that ask
		// for no network in particular with loopback only, and says so
		// (mode none); what needs a network is refused below.
		if len(o.PortBindings) > 0 || o.PublishAll || mac != nil || len(eps) > 0 {
			return errNoNetworks
		}
		mode = containersvc.NetworkNone
	}
	o.NetworkMode = mode
	// API 1.41 connects a new container to one network; newer clients may
	// name several.
	if apiVersion41 && len(eps) > 1 {
		return bad("Container cannot be connected to network endpoints: %s", strings.Join(slices.Sorted(maps.Keys(eps)), ", "))
	}

	if mode == containersvc.NetworkNone {
		switch {
		case len(o.PortBindings) > 0 || o.PublishAll:
			return bad("conflicting options: port publishing and the none network mode: published ports need a network")
		case mac != nil:
			return bad("conflicting options: mac-address and the none network mode")
		}
		for name := range eps {
			if name != containersvc.NetworkNone {
				return bad("container cannot be connected to multiple networks with one of the networks in private (none) mode")
			}
		}
		return nil
	}
	if s.networks == nil {
		return errNoNetworks
	}

	// The container's first network: the default one for "default" and
	// "bridge", which is the default network's name.
	primary, err := s.networks.Get(ctx, primaryNetworkRef(mode))
	if err != nil {
		return err
	}
	o.Networks = map[string]containersvc.EndpointOptions{primary.Name: {}}
	for name, ec := range eps {
		n := primary
		if name != mode && !(isDefaultMode(mode) && isDefaultMode(name)) {
			if name == "host" || name == containersvc.NetworkNone || strings.HasPrefix(name, "container:") {
				return bad("container cannot be connected to multiple networks with one of the networks in private (%s) mode", name)
			}
			if n, err = s.networks.Get(ctx, name); err != nil {
				return err
			}
		}
		if ec == nil {
			return bad("no EndpointSettings for %s", name)
		}
		opts, err := endpointOptions(ec)
		if err != nil {
			return err
		}
		o.Networks[n.Name] = opts
	}
	// Config.MacAddress (API 1.41) and the first network's endpoint
	// MacAddress (newer clients) ask for the same interface's address.
	first := o.Networks[primary.Name]
	if mac != nil {
		if first.MAC != nil && first.MAC.String() != mac.String() {
			return bad("conflicting MAC addresses: Config.MacAddress %s and the endpoint's MacAddress %s", mac, first.MAC)
		}
		first.MAC = mac
		o.Networks[primary.Name] = first
	}
	if first.MAC != nil {
		o.MacAddress = first.MAC.String()
	}
	return nil
}

func isDefaultMode(mode string) bool {
	return mode == containersvc.NetworkDefault || mode == containersvc.NetworkBridge
}

// primaryNetworkRef is what to look the network of a mode up by: the
// default network is named "bridge".
func primaryNetworkRef(mode string) string {
	if isDefaultMode(mode) {
		return containersvc.NetworkBridge
	}
	return mode
}

// parsePortKey reads a port of PortBindings or ExposedPorts: "80/tcp",
// "53/udp", or "80" (tcp).
func parsePortKey(key string) (containersvc.Port, error) {
	port, proto, _ := strings.Cut(key, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return containersvc.Port{}, errs.New(errdefs.ErrInvalidArgument, "invalid port specification: %q", port)
	}
	if proto != "tcp" && proto != "udp" {
		return containersvc.Port{}, errs.New(errdefs.ErrInvalidArgument, "invalid port %s: protocol %s is not supported, only tcp and udp", key, proto)
	}
	return containersvc.Port{Port: uint16(n), Proto: proto}, nil
}

func comparePorts(a, b containersvc.Port) int {
	return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Proto, b.Proto))
}

// exposedPorts checks Config.ExposedPorts and sorts them.
func exposedPorts(keys []string) ([]containersvc.Port, error) {
	var out []containersvc.Port
	for _, k := range keys {
		p, err := parsePortKey(k)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePorts)
	return out, nil
}

// portBindings checks HostConfig.PortBindings, with dockerd's message for
// a malformed port, and orders them by container port. A host port range
// for one container port (-p 8000-8010:80) is refused: the engine
// publishes on one host port it is told, or one it chooses.
func portBindings(raw map[string][]portBindingJSON) ([]containersvc.PortBinding, error) {
	var out []containersvc.PortBinding
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		p, err := parsePortKey(key)
		if err != nil {
			return nil, err
		}
		for _, b := range raw[key] {
			pb := containersvc.PortBinding{Proto: p.Proto, ContainerPort: p.Port}
			if b.HostIP != "" {
				ip, err := netip.ParseAddr(strings.Trim(b.HostIP, "[]"))
				if err != nil {
					return nil, errs.New(errdefs.ErrInvalidArgument, "invalid IP address: %s", b.HostIP)
				}
				if !ip.Unmap().Is4() {
					return nil, errs.New(errdefs.ErrInvalidArgument, "invalid host address %s for port %s: only IPv4 addresses can be published", b.HostIP, key)
				}
				pb.HostIP = ip.Unmap()
			}
			if b.HostPort != "" {
				start, end, isRange := strings.Cut(b.HostPort, "-")
				if isRange && start != end {
					return nil, errs.New(errdefs.ErrInvalidArgument, "host port range %s for port %s is not supported: publish on one host port, or leave it empty for one the engine chooses", b.HostPort, key)
				}
				n, err := strconv.ParseUint(start, 10, 16)
				if err != nil {
					return nil, errs.New(errdefs.ErrInvalidArgument, "invalid port specification: %q", b.HostPort)
				}
				pb.HostPort = uint16(n)
			}
			out = append(out, pb)
		}
	}
	slices.SortStableFunc(out, func(a, b containersvc.PortBinding) int {
		return comparePorts(containersvc.Port{Port: a.ContainerPort, Proto: a.Proto}, containersvc.Port{Port: b.ContainerPort, Proto: b.Proto})
	})
	return out, nil
}

// checkExtraHost checks an ExtraHosts entry, "name:address" (split at the
// first colon, so the address may be IPv6), with dockerd's messages.
func checkExtraHost(h string) error {
	name, addr, ok := strings.Cut(h, ":")
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") {
		return errs.New(errdefs.ErrInvalidArgument, "bad format for add-host: %q", h)
	}
	if addr == "host-gateway" {
		return nil
	}
	if _, err := netip.ParseAddr(strings.Trim(addr, "[]")); err != nil {
		return errs.New(errdefs.ErrInvalidArgument, "invalid IP address in add-host: %q", addr)
	}
	return nil
}

func parseIPv4(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if !ip.Unmap().Is4() {
		return netip.Addr{}, fmt.Errorf("%s is not an IPv4 address", s)
	}
	return ip.Unmap(), nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("%s is not an Ethernet address", s)
	}
	return mac, nil
}
