package networksvc

// Plumbing: what a container's endpoints are on the host while it runs
// (bridges, taps, rules, proxies, names), made at its start, undone when
// its VM is gone, and found again when a daemon restarts.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/networks"
)

// NIC is one virtio-net device of the VM, backed by a host tap.
// (sandbox.NIC has the same fields in the same order; the wiring
// converts.)
type NIC struct {
	Tap string
	MAC net.HardwareAddr
	// MTU is offered to the guest; 0 means 1500.
	MTU int
}

// Interface is what the agent configures on one guest interface, found by
// its MAC. (agent.Interface has the same fields in the same order; the
// wiring converts.)
type Interface struct {
	MAC net.HardwareAddr
	// Name is eth0, eth1... in the order of the VM's NICs.
	Name      string
	Addresses []netip.Prefix
	MTU       int
}

// Route is a guest route. (agent.Route has the same fields in the same
// order; the wiring converts.)
type Route struct {
	// Destination is the zero Prefix for the default route.
	Destination netip.Prefix
	Gateway     netip.Addr
	Device      string
}

// Plumbing is what a started container's VM and agent need.
type Plumbing struct {
	// NICs are the VM's network devices, in guest order.
	NICs []NIC
	// Interfaces and Routes are what the agent configures.
	Interfaces []Interface
	Routes     []Route
	// Hosts and ResolvConf are the container's /etc/hosts and
	// /etc/resolv.conf; ResolvConf is empty when the container has no
	// network (the image's is kept).
	Hosts, ResolvConf string
	// Ports are the published ports with host ports resolved (inspect's
	// NetworkSettings.Ports).
	Ports []PortBinding
}

// Plumb sets up a container's endpoints for its start: the bridges of its
// networks, a tap per endpoint attached to its bridge, the nftables rules
// for its published ports (and for its networks), the userland proxies of
// its ports, its names in the networks' DNS servers. A failure leaves no
// tap, rule or proxy of the container behind.
func (s *Service) Plumb(ctx context.Context, containerID string) (Plumbing, error) {
	if s.host == nil {
		return Plumbing{}, errs.New(errdefs.ErrFailedPrecondition, "host networking is not available in this engine")
	}
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return Plumbing{}, err
	}
	defer unlock()
	return s.plumbLocked(ctx, containerID, false)
}

// plumbLocked plumbs a container. With readopt, its VM runs already: the
// taps it holds are kept even if something fails, and its ports keep the
// host ports they had. Precondition: the host lock is held.
func (s *Service) plumbLocked(ctx context.Context, containerID string, readopt bool) (p Plumbing, err error) {
	eps, err := s.store.ContainerEndpoints(containerID)
	if err != nil {
		return Plumbing{}, err
	}
	st, err := s.store.Settings(containerID)
	if err != nil {
		return Plumbing{}, err
	}
	if len(eps) == 0 {
		return Plumbing{Hosts: hostsFile(hostname(containerID, st.DNS), st.DNS.Domainname, netip.Addr{}, extraHosts(st.DNS, netip.Addr{}))}, nil
	}
	nets := map[string]Network{}
	for _, e := range eps {
		n, err := s.store.Get(e.NetworkID)
		if err != nil {
			return Plumbing{}, fmt.Errorf("container %s: %w", short(containerID), err)
		}
		nets[n.ID] = n
	}
	gw := -1 // the endpoint with the default route and the published ports
	for i, e := range eps {
		if !nets[e.NetworkID].Internal {
			gw = i
			break
		}
	}

	defer func() {
		if err == nil {
			return
		}
		if s.proxies != nil {
			s.proxies.Unpublish(containerID)
		}
		cleared := make([]Endpoint, len(eps))
		copy(cleared, eps)
		for i := range cleared {
			cleared[i].Tap, cleared[i].Ports = "", nil
			if !readopt {
				s.host.DeleteLink(networks.TapName(containerID, cleared[i].Slot))
			}
		}
		s.store.SetPlumbing(cleared)
		s.refreshRules()
		s.syncNames(ctx, nets)
	}()

	if err := s.host.EnableForwarding(); err != nil {
		return Plumbing{}, err
	}
	for _, e := range eps {
		n := nets[e.NetworkID]
		if err := s.host.EnsureBridge(&n); err != nil {
			return Plumbing{}, err
		}
	}
	for i := range eps {
		n := nets[eps[i].NetworkID]
		tap := networks.TapName(containerID, eps[i].Slot)
		if err := s.host.EnsureTap(tap, n.Bridge, n.MTU); err != nil {
			return Plumbing{}, err
		}
		eps[i].Tap = tap
	}
	var ports []PortBinding
	if gw >= 0 {
		want := st.Ports
		if readopt && len(eps[gw].Ports) > 0 {
			want = eps[gw].Ports
		}
		if ports, err = s.publishPorts(ctx, containerID, eps[gw], want); err != nil {
			return Plumbing{}, err
		}
	} else if s.proxies != nil {
		s.proxies.Unpublish(containerID)
	}
	for i := range eps {
		eps[i].Ports = nil
		if i == gw {
			eps[i].Ports = ports
		}
	}
	if err := s.store.SetPlumbing(eps); err != nil {
		return Plumbing{}, err
	}
	if err := s.refreshRules(); err != nil {
		return Plumbing{}, err
	}
	if err := s.syncNames(ctx, nets); err != nil {
		return Plumbing{}, err
	}
	return plumbing(eps, nets, gw, st), nil
}

// plumbing assembles what the VM and agent need.
func plumbing(eps []Endpoint, nets map[string]Network, gw int, st networks.Settings) Plumbing {
	var p Plumbing
	for i, e := range eps {
		n := nets[e.NetworkID]
		name := fmt.Sprintf("eth%d", i)
		p.NICs = append(p.NICs, NIC{Tap: e.Tap, MAC: e.MAC, MTU: n.MTU})
		p.Interfaces = append(p.Interfaces, Interface{MAC: e.MAC, Name: name, Addresses: []netip.Prefix{netip.PrefixFrom(e.IP, n.Subnet.Bits())}, MTU: n.MTU})
		if i == gw {
			p.Routes = append(p.Routes, Route{Gateway: n.Gateway, Device: name})
			p.Ports = e.Ports
		}
	}
	// The container's own address and name server are those of the
	// network with its default route, else its first network's.
	main := eps[0]
	if gw >= 0 {
		main = eps[gw]
	}
	gateway := nets[main.NetworkID].Gateway
	p.Hosts = hostsFile(hostname(main.ContainerID, st.DNS), st.DNS.Domainname, main.IP, extraHosts(st.DNS, gateway))
	p.ResolvConf = resolvConf(st.DNS, gateway, !nets[main.NetworkID].Default)
	return p
}

// publishPorts starts the proxies of a container's ports towards its
// endpoint ep, and checks them against the ports other running containers
// publish. It returns the ports with host ports resolved.
func (s *Service) publishPorts(ctx context.Context, containerID string, ep Endpoint, want []PortBinding) ([]PortBinding, error) {
	if len(want) == 0 {
		if s.proxies != nil {
			s.proxies.Unpublish(containerID)
		}
		return nil, nil
	}
	resolved := append([]PortBinding(nil), want...)
	if s.proxies != nil {
		req := make([]ProxiedPort, len(want))
		for i, p := range want {
			req[i] = ProxiedPort{PortBinding: p, Container: netip.AddrPortFrom(ep.IP, p.ContainerPort)}
		}
		got, err := s.proxies.Publish(ctx, containerID, req)
		if err != nil {
			return nil, err
		}
		for i := range got {
			resolved[i] = got[i].PortBinding
		}
	} else {
		for _, p := range want {
			if p.HostPort == 0 {
				return nil, errs.New(errdefs.ErrFailedPrecondition,
					"publishing container port %d/%s on a host port the engine chooses needs the userland proxy, which this engine runs without: give the host port (-p HOST:%d)", p.ContainerPort, p.Proto, p.ContainerPort)
			}
		}
	}
	// The proxies' sockets keep a port to one owner in this namespace;
	// the records keep it across engines that run without proxies.
	all, err := s.store.Endpoints()
	if err != nil {
		return nil, err
	}
	for _, p := range resolved {
		for _, o := range all {
			if o.ContainerID == containerID || !o.Plumbed() {
				continue
			}
			for _, q := range o.Ports {
				if q.Proto == p.Proto && q.HostPort == p.HostPort && hostIPsOverlap(p.HostIP, q.HostIP) {
					return nil, errs.New(errdefs.ErrConflict, "Bind for %s:%d failed: port is already allocated", hostIPString(p.HostIP), p.HostPort)
				}
			}
		}
	}
	return resolved, nil
}

func hostIPsOverlap(a, b netip.Addr) bool {
	return !a.IsValid() || !b.IsValid() || a.IsUnspecified() || b.IsUnspecified() || a == b
}

func hostIPString(a netip.Addr) string {
	if !a.IsValid() {
		return "0.0.0.0"
	}
	return a.String()
}

// refreshRules loads the nftables table for every network and every
// plumbed endpoint, or removes it when no container runs. Precondition:
// the host lock is held.
func (s *Service) refreshRules() error {
	nets, err := s.store.List()
	if err != nil {
		return err
	}
	eps, err := s.store.Endpoints()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(eps, func(e Endpoint) bool { return e.Plumbed() }) {
		return s.host.DeleteRules()
	}
	return s.host.ApplyRules(networks.Ruleset(nets, eps, s.rules))
}

// syncNames gives each of nets' DNS servers the names of its running
// containers, and stops the servers of networks none runs on.
func (s *Service) syncNames(ctx context.Context, nets map[string]Network) error {
	if s.names == nil || len(nets) == 0 {
		return nil
	}
	eps, err := s.store.Endpoints()
	if err != nil {
		return err
	}
	var errList []error
	for _, n := range nets {
		set, running := networkNames(n, eps, s.store.Settings)
		if !running {
			s.names.Remove(n.ID)
			continue
		}
		if err := s.names.Serve(ctx, n, set); err != nil {
			errList = append(errList, fmt.Errorf("DNS server of network %s: %w", n.Name, err))
		}
	}
	return errors.Join(errList...)
}

// networkNames are what n's DNS server answers (each running container's
// name, short ID and aliases, none on the default network as under
// docker, and the name servers of containers that have their own), and
// whether any container runs on n. settings reads a container's.
func networkNames(n Network, eps []Endpoint, settings func(containerID string) (networks.Settings, error)) (set NameSet, running bool) {
	set = NameSet{Records: map[string][]netip.Addr{}, Upstreams: map[netip.Addr][]netip.AddrPort{}}
	for _, e := range eps {
		if e.NetworkID != n.ID || !e.Plumbed() {
			continue
		}
		running = true
		var own []netip.AddrPort
		if st, err := settings(e.ContainerID); err == nil {
			for _, srv := range st.DNS.Servers {
				if a, err := netip.ParseAddr(srv); err == nil {
					own = append(own, netip.AddrPortFrom(a, 53))
				}
			}
		}
		set.Upstreams[e.IP] = own // every client, nil for the host's
		if n.Default {
			continue // docker resolves no container names there
		}
		for _, name := range append([]string{e.ContainerName, short(e.ContainerID)}, e.Aliases...) {
			if name != "" && !slices.Contains(set.Records[name], e.IP) {
				set.Records[name] = append(set.Records[name], e.IP)
			}
		}
	}
	return set, running
}

// Names are what the DNS server of the network networkID answers, from
// the store: what Serve last set, unless a container of another process
// sharing the data root started or stopped since.
func (s *Service) Names(networkID string) (NameSet, error) {
	n, err := s.store.Get(networkID)
	if err != nil {
		return NameSet{}, err
	}
	eps, err := s.store.Endpoints()
	if err != nil {
		return NameSet{}, err
	}
	set, _ := networkNames(n, eps, s.store.Settings)
	return set, nil
}

// Unplumb undoes Plumb once a container's VM is gone: its taps, rules,
// proxies and names go; its addresses stay.
func (s *Service) Unplumb(ctx context.Context, containerID string) error {
	if s.host == nil {
		return nil
	}
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return s.unplumbLocked(ctx, containerID)
}

// unplumbLocked: Precondition: the host lock is held.
func (s *Service) unplumbLocked(ctx context.Context, containerID string) error {
	if s.proxies != nil {
		s.proxies.Unpublish(containerID)
	}
	eps, err := s.store.ContainerEndpoints(containerID)
	if err != nil {
		return err
	}
	var errList []error
	nets := map[string]Network{}
	for i := range eps {
		// The recorded tap, and the one a start that died before
		// recording it may have made.
		for _, tap := range []string{eps[i].Tap, networks.TapName(containerID, eps[i].Slot)} {
			if tap != "" {
				if err := s.host.DeleteLink(tap); err != nil {
					errList = append(errList, err)
				}
			}
		}
		eps[i].Tap, eps[i].Ports = "", nil
		if n, err := s.store.Get(eps[i].NetworkID); err == nil {
			nets[n.ID] = n
		}
	}
	if err := s.store.SetPlumbing(eps); err != nil {
		errList = append(errList, err)
	}
	if err := s.refreshRules(); err != nil {
		errList = append(errList, err)
	}
	if err := s.syncNames(ctx, nets); err != nil {
		errList = append(errList, err)
	}
	return errors.Join(errList...)
}

// Release frees a removed container's endpoints and addresses, after
// unplumbing it if it was still plumbed.
func (s *Service) Release(ctx context.Context, containerID string) error {
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if s.host != nil {
		if err := s.unplumbLocked(ctx, containerID); err != nil {
			return err
		}
	}
	gone, err := s.store.Release(containerID)
	for _, e := range gone {
		if n, err := s.store.Get(e.NetworkID); err == nil {
			s.publish("disconnect", n, containerID)
		}
	}
	return err
}

// Restore brings the host in line with the containers that run, at daemon
// start: containers that no longer run are unplumbed, the running ones
// (re-adopted VMs) are plumbed again keeping their addresses, taps and
// host ports (the proxies and DNS servers lived in the previous daemon),
// and taps no running container owns are removed.
//
// running must name every container whose VM runs, whichever process
// runs it (the container records' running state), not only those this
// process re-adopted: a container a foreground vmctl runs on the same data
// root would lose its taps otherwise.
func (s *Service) Restore(ctx context.Context, running []string) error {
	if s.host == nil {
		return nil
	}
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	eps, err := s.store.Endpoints()
	if err != nil {
		return err
	}
	isRunning := map[string]bool{}
	for _, id := range running {
		isRunning[id] = true
	}
	var errList []error
	done := map[string]bool{}
	wanted := map[string]bool{}
	for _, e := range eps {
		id := e.ContainerID
		if isRunning[id] {
			wanted[networks.TapName(id, e.Slot)] = true
		}
		if done[id] {
			continue
		}
		done[id] = true
		if isRunning[id] {
			if _, err := s.plumbLocked(ctx, id, true); err != nil {
				errList = append(errList, fmt.Errorf("container %s: %w", short(id), err))
			}
		} else if e.Plumbed() || hasPlumbed(eps, id) {
			if err := s.unplumbLocked(ctx, id); err != nil {
				errList = append(errList, fmt.Errorf("container %s: %w", short(id), err))
			}
		}
	}
	taps, err := s.host.Taps()
	if err != nil {
		errList = append(errList, err)
	}
	for _, t := range taps {
		if !wanted[t] {
			if err := s.host.DeleteLink(t); err != nil {
				errList = append(errList, err)
			}
		}
	}
	if err := s.refreshRules(); err != nil {
		errList = append(errList, err)
	}
	return errors.Join(errList...)
}

func hasPlumbed(eps []Endpoint, containerID string) bool {
	return slices.ContainsFunc(eps, func(e Endpoint) bool { return e.ContainerID == containerID && e.Plumbed() })
}

// hostname is the container's host name: the one it was given, else its
// short ID (docker's default).
func hostname(containerID string, c DNSConfig) string {
	if c.Hostname != "" {
		return c.Hostname
	}
	return short(containerID)
}

// hostsFile is the container's /etc/hosts, as dockerd writes it: the
// loopback and IPv6 names, the extra hosts, then the container's address
// and name.
func hostsFile(hostname, domain string, self netip.Addr, extra [][2]string) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	for _, h := range extra {
		fmt.Fprintf(&b, "%s\t%s\n", h[1], h[0])
	}
	if self.IsValid() {
		name := hostname
		if domain != "" {
			name = hostname + "." + domain + " " + hostname
		}
		fmt.Fprintf(&b, "%s\t%s\n", self, name)
	}
	return b.String()
}

// extraHosts reads --add-host entries; "host-gateway" is the gateway of
// the container's main network.
func extraHosts(c DNSConfig, gateway netip.Addr) [][2]string {
	var out [][2]string
	for _, h := range c.ExtraHosts {
		name, addr, err := parseExtraHost(h)
		if err != nil {
			continue // SetDNS refused it
		}
		if addr == "host-gateway" {
			if !gateway.IsValid() {
				continue
			}
			addr = gateway.String()
		}
		out = append(out, [2]string{name, addr})
	}
	return out
}

// parseExtraHost splits "name:address" (or "name=address"); the address
// may be an IPv6 address, with colons of its own.
func parseExtraHost(h string) (name, addr string, err error) {
	i := strings.IndexAny(h, ":=")
	if i <= 0 || i == len(h)-1 {
		return "", "", errs.New(errdefs.ErrInvalidArgument, "invalid extra host %q: want name:address", h)
	}
	name, addr = h[:i], strings.Trim(h[i+1:], "[]")
	if addr != "host-gateway" {
		if _, err := netip.ParseAddr(addr); err != nil {
			return "", "", errs.New(errdefs.ErrInvalidArgument, "invalid IP address in extra host %q", h)
		}
	}
	if strings.ContainsAny(name, " \t\n") {
		return "", "", errs.New(errdefs.ErrInvalidArgument, "invalid host name in extra host %q", h)
	}
	return name, addr, nil
}

// resolvConf is the container's /etc/resolv.conf: the network's DNS
// server on the gateway, which forwards to the host's resolvers (often on
// 127.0.0.x, unreachable from the guest); as under docker, --dns servers
// replace it on the default network, and on a user network (embedded)
// its server forwards to them instead, so that the network's names still
// resolve.
func resolvConf(c DNSConfig, gateway netip.Addr, embedded bool) string {
	var b strings.Builder
	servers := c.Servers
	if len(servers) == 0 || embedded {
		servers = []string{gateway.String()}
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	if len(c.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(c.Options, " "))
	}
	return b.String()
}
