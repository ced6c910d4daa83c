package engine

// The network service's hooks to what runs in the engine's process: the
// userland proxy of published ports (engine/networks/portproxy) and one
// DNS server per network (engine/networks/dnsserver).

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/networks/dnsserver"
	"github.com/vmctl/vmctl/engine/networks/portproxy"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
)

// proxyHook is networksvc.Proxies over a portproxy.Manager.
type proxyHook struct{ m *portproxy.Manager }

func (h proxyHook) Publish(ctx context.Context, owner string, ports []networksvc.ProxiedPort) ([]networksvc.ProxiedPort, error) {
	bs := make([]portproxy.Binding, len(ports))
	for i, p := range ports {
		bs[i] = portproxy.Binding{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, Container: p.Container}
	}
	got, err := h.m.Publish(ctx, owner, bs)
	if err != nil {
		return nil, err
	}
	out := append([]networksvc.ProxiedPort(nil), ports...)
	for i := range out {
		out[i].HostPort = got[i].HostPort
	}
	return out, nil
}

func (h proxyHook) Unpublish(owner string) { h.m.Unpublish(owner) }

// nameHook is networksvc.Names: one dnsserver per network, on its
// gateway, answering from a table the network service replaces whole.
//
// Engines on one data root may run in several processes (a vmctld and
// foreground vmctl runs, or several of those): each serves the networks
// its containers run on, on the same address (dnsserver's ReusePort), and
// the kernel spreads queries among them. A process learns of containers
// the others start only from the store, so a name a table lacks makes it
// read the store again (reload), at most once per reloadEvery.
type nameHook struct {
	mu      sync.Mutex
	servers map[string]*netNames // by network ID; guarded by mu
	// reload reads a network's names from the store; nil never reloads.
	// Set before the first Serve.
	reload func(networkID string) (networksvc.NameSet, error)
}

// reloadEvery bounds how often a miss makes a server read the store.
const reloadEvery = time.Second

// netNames is one network's server and the names it answers.
type netNames struct {
	id        string
	srv       *dnsserver.Server
	addr      netip.AddrPort
	clients   netip.Prefix
	table     atomic.Pointer[nameTable]
	loaded    atomic.Int64 // when table was last set, in UnixNano
	reloading atomic.Bool
	reload    func(networkID string) (networksvc.NameSet, error)
}

func (s *netNames) set(set networksvc.NameSet) {
	s.table.Store(newNameTable(set))
	s.loaded.Store(time.Now().UnixNano())
}

// fresh returns the table, read again from the store first when it is
// older than reloadEvery and miss says the current one lacks what a query
// asks. One query reloads at a time; the others answer from the table
// they find.
func (s *netNames) fresh(miss func(*nameTable) bool) *nameTable {
	t := s.table.Load()
	if s.reload == nil || !miss(t) || time.Since(time.Unix(0, s.loaded.Load())) < reloadEvery {
		return t
	}
	if !s.reloading.CompareAndSwap(false, true) {
		return t
	}
	defer s.reloading.Store(false)
	set, err := s.reload(s.id)
	if err != nil {
		s.loaded.Store(time.Now().UnixNano()) // not again before reloadEvery
		return t
	}
	s.set(set)
	return s.table.Load()
}

func (s *netNames) lookup(name string) []netip.Addr {
	return s.fresh(func(t *nameTable) bool { return t.names[name] == nil }).names[name]
}

func (s *netNames) reverse(a netip.Addr) []string {
	return s.fresh(func(t *nameTable) bool { return t.reverse[a] == nil }).reverse[a]
}

// upstreams are a client's own name servers; a client the table does not
// know (a container another process started) makes it read the store.
func (s *netNames) upstreams(client netip.Addr) []netip.AddrPort {
	return s.fresh(func(t *nameTable) bool { return !t.clients[client] }).upstreams[client]
}

// nameTable is a network's names (lower case) and, for PTR queries, each
// address's names; its clients (the containers' addresses) and those
// clients' own name servers.
type nameTable struct {
	names     map[string][]netip.Addr
	reverse   map[netip.Addr][]string
	clients   map[netip.Addr]bool
	upstreams map[netip.Addr][]netip.AddrPort
}

func newNameTable(set networksvc.NameSet) *nameTable {
	t := &nameTable{names: map[string][]netip.Addr{}, reverse: map[netip.Addr][]string{}, clients: map[netip.Addr]bool{}, upstreams: set.Upstreams}
	for name, addrs := range set.Records {
		n := strings.ToLower(strings.TrimSuffix(name, "."))
		t.names[n] = append(t.names[n], addrs...)
		for _, a := range addrs {
			t.reverse[a] = append(t.reverse[a], n)
		}
	}
	for a := range set.Upstreams {
		t.clients[a] = true
	}
	return t
}

func newNameHook() *nameHook { return &nameHook{servers: map[string]*netNames{}} }

func (h *nameHook) Serve(ctx context.Context, n networksvc.Network, set networksvc.NameSet) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	addr := netip.AddrPortFrom(n.Gateway, 53)
	if s := h.servers[n.ID]; s != nil {
		if s.addr == addr && s.clients == n.Subnet {
			s.set(set)
			return nil
		}
		s.srv.Stop() // the network's addresses changed (a new --bip)
		delete(h.servers, n.ID)
	}
	s := &netNames{id: n.ID, addr: addr, clients: n.Subnet, reload: h.reload}
	s.set(set)
	srv, err := dnsserver.Start(ctx, dnsserver.Config{
		Addr:      addr,
		Clients:   n.Subnet,
		Lookup:    s.lookup,
		Reverse:   s.reverse,
		Upstreams: s.upstreams,
		ReusePort: true,
	})
	if err != nil {
		return err
	}
	s.srv = srv
	h.servers[n.ID] = s
	return nil
}

func (h *nameHook) Remove(networkID string) {
	h.mu.Lock()
	s := h.servers[networkID]
	delete(h.servers, networkID)
	h.mu.Unlock()
	if s != nil {
		s.srv.Stop()
	}
}

// containerNetwork is the container service's Network over the network
// service: it turns a create's joins, ports and DNS settings into the
// service's endpoints and records, and its plumbing into the VM's NICs and
// the agent's configuration (the two sides' types have the same fields).
type containerNetwork struct{ svc *networksvc.Service }

func (n containerNetwork) Join(ctx context.Context, c *containers.Container, joins []containersvc.NetworkJoin) (err error) {
	defer func() {
		if err != nil {
			n.svc.Release(context.WithoutCancel(ctx), c.ID)
		}
	}()
	for _, j := range joins {
		o := networksvc.EndpointOptions{IP: j.Endpoint.IP, Aliases: j.Endpoint.Aliases, MAC: j.Endpoint.MAC}
		if _, err := n.svc.Connect(ctx, j.Network, networksvc.ContainerRef{ID: c.ID, Name: c.Name}, o); err != nil {
			return err
		}
	}
	nc := c.Config.Network
	if nc == nil {
		return nil
	}
	if err := n.svc.SetPorts(ctx, c.ID, publishedPorts(nc)); err != nil {
		return err
	}
	return n.svc.SetDNS(ctx, c.ID, networksvc.DNSConfig{
		Hostname: c.Config.Hostname, Domainname: c.Config.Domainname, Servers: nc.DNS, Search: nc.DNSSearch, Options: nc.DNSOptions, ExtraHosts: nc.ExtraHosts,
	})
}

// publishedPorts are the ports a container publishes: its -p bindings,
// then, with -P, each exposed port no binding names on a port the engine
// chooses at start.
func publishedPorts(nc *containers.NetworkConfig) []networksvc.PortBinding {
	out := make([]networksvc.PortBinding, 0, len(nc.PortBindings))
	bound := map[containers.Port]bool{}
	for _, b := range nc.PortBindings {
		out = append(out, networksvc.PortBinding(b))
		bound[containers.Port{Port: b.ContainerPort, Proto: b.Proto}] = true
	}
	if nc.PublishAll {
		for _, p := range nc.ExposedPorts {
			if !bound[p] {
				out = append(out, networksvc.PortBinding{Proto: p.Proto, ContainerPort: p.Port})
			}
		}
	}
	return out
}

func (n containerNetwork) Release(ctx context.Context, containerID string) error {
	return n.svc.Release(ctx, containerID)
}

func (n containerNetwork) Plumb(ctx context.Context, containerID string) (containersvc.Plumbing, error) {
	p, err := n.svc.Plumb(ctx, containerID)
	if err != nil {
		return containersvc.Plumbing{}, err
	}
	out := containersvc.Plumbing{Hosts: p.Hosts, ResolvConf: p.ResolvConf}
	for _, nic := range p.NICs {
		out.NICs = append(out.NICs, sandbox.NIC(nic))
	}
	for _, i := range p.Interfaces {
		out.Interfaces = append(out.Interfaces, agent.Interface(i))
	}
	for _, r := range p.Routes {
		out.Routes = append(out.Routes, agent.Route(r))
	}
	return out, nil
}

func (n containerNetwork) Unplumb(ctx context.Context, containerID string) error {
	return n.svc.Unplumb(ctx, containerID)
}

func (n containerNetwork) Rename(ctx context.Context, containerID, name string) error {
	return n.svc.Rename(ctx, containerID, name)
}
