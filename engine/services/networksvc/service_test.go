package networksvc

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/networks"
	"github.com/vmctl/vmctl/engine/networks/netnstest"
)

// The tests that plumb run in a network namespace of their own.
func TestMain(m *testing.M) { netnstest.Main(m) }

type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *recorder) Publish(e events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

// actions returns "action name [container]" for each event since the last
// call.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		s := e.Action + " " + e.Attributes["name"]
		if c := e.Attributes["container"]; c != "" {
			s += " " + c[:4]
		}
		if e.Type != events.TypeNetwork || e.Attributes["type"] != "bridge" || len(e.ID) != 64 {
			s += " (malformed)"
		}
		out = append(out, s)
	}
	r.evs = nil
	return out
}

// proxies holds each published port with a real socket, as the userland
// proxy does (it relays nothing): the kernel resolves port 0 and refuses
// a taken port.
type proxies struct {
	mu   sync.Mutex
	held map[string][]io.Closer
	got  map[string][]ProxiedPort
}

func newProxies() *proxies {
	return &proxies{held: map[string][]io.Closer{}, got: map[string][]ProxiedPort{}}
}

func (p *proxies) Publish(ctx context.Context, owner string, ports []ProxiedPort) ([]ProxiedPort, error) {
	p.Unpublish(owner)
	var held []io.Closer
	var out []ProxiedPort
	for _, pp := range ports {
		addr := netip.AddrPortFrom(pp.HostIP, pp.HostPort)
		if !pp.HostIP.IsValid() {
			addr = netip.AddrPortFrom(netip.IPv4Unspecified(), pp.HostPort)
		}
		var c io.Closer
		var port uint16
		var err error
		if pp.Proto == "tcp" {
			var l net.Listener
			if l, err = net.Listen("tcp4", addr.String()); err == nil {
				c, port = l, uint16(l.Addr().(*net.TCPAddr).Port)
			}
		} else {
			var l net.PacketConn
			if l, err = net.ListenPacket("udp4", addr.String()); err == nil {
				c, port = l, uint16(l.LocalAddr().(*net.UDPAddr).Port)
			}
		}
		if err != nil {
			for _, h := range held {
				h.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, errs.New(errdefs.ErrConflict, "Bind for %s failed: port is already allocated", addr)
			}
			return nil, err
		}
		held = append(held, c)
		pp.HostPort = port
		out = append(out, pp)
	}
	p.mu.Lock()
	p.held[owner], p.got[owner] = held, out
	p.mu.Unlock()
	return out, nil
}

func (p *proxies) Unpublish(owner string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.held[owner] {
		c.Close()
	}
	delete(p.held, owner)
	delete(p.got, owner)
}

func (p *proxies) published(owner string) []ProxiedPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[owner]
}

// names records what the DNS servers would answer.
type names struct {
	mu        sync.Mutex
	serving   map[string]map[string][]netip.Addr // by network name
	upstreams map[string]map[netip.Addr][]netip.AddrPort
	byID      map[string]string
}

func newNames() *names {
	return &names{serving: map[string]map[string][]netip.Addr{}, upstreams: map[string]map[netip.Addr][]netip.AddrPort{}, byID: map[string]string{}}
}

func (n *names) Serve(ctx context.Context, nw Network, set NameSet) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.serving[nw.Name], n.byID[nw.ID] = set.Records, nw.Name
	n.upstreams[nw.Name] = set.Upstreams
	return nil
}

func (n *names) Remove(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.serving, n.byID[id])
}

func (n *names) servers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for k := range n.serving {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type fixture struct {
	svc     *Service
	store   *networks.Store
	host    *networks.Host
	events  *recorder
	proxies *proxies
	names   *names
	root    string
}

// newFixture makes a service over a new store; withHost gives it the host
// (the test's namespace), which needs root.
func newFixture(t *testing.T, withHost bool) *fixture {
	t.Helper()
	f := &fixture{root: t.TempDir(), events: &recorder{}}
	f.reopen(t, withHost)
	if withHost {
		// The default network's bridge outlives its containers by design;
		// the next test starts without it.
		t.Cleanup(func() { f.host.DeleteLink(networks.DefaultBridge); f.host.DeleteRules() })
	}
	return f
}

// reopen makes a new service over the same data root, as a restarted
// daemon does: new proxies and DNS servers, the store and host as they are.
func (f *fixture) reopen(t *testing.T, withHost bool) {
	t.Helper()
	var err error
	if f.store, err = networks.Open(f.root, networks.DaemonOptions{}); err != nil {
		t.Fatal(err)
	}
	if withHost {
		netnstest.Require(t)
		if f.host, err = networks.OpenHost(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.host.Close)
	}
	if f.proxies != nil {
		// The previous daemon's sockets went with its process.
		for owner := range f.proxies.held {
			f.proxies.Unpublish(owner)
		}
	}
	f.proxies, f.names = newProxies(), newNames()
	f.svc = New(Config{Store: f.store, Host: f.host, Events: f.events, Proxies: f.proxies, Names: f.names})
}

func ctr(c byte, name string) ContainerRef {
	return ContainerRef{ID: strings.Repeat(string(c), 64), Name: name}
}

func TestCreateListPrune(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	web, err := f.svc.Create(ctx, CreateOptions{Name: "web", Subnet: "10.60.0.0/24", Labels: map[string]string{"tier": "front"}})
	if err != nil {
		t.Fatal(err)
	}
	db, err := f.svc.Create(ctx, CreateOptions{Name: "db", Labels: map[string]string{"tier": "back", "keep": ""}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Create(ctx, CreateOptions{Name: "web"}); !errdefs.IsConflict(err) {
		t.Errorf("duplicate name: %v", err)
	}
	if got := f.events.take(); !slices.Equal(got, []string{"create web", "create db"}) {
		t.Errorf("events = %v", got)
	}
	if _, err := f.svc.Connect(ctx, "db", ctr('d', "pg"), EndpointOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filters map[string][]string
		want    string
	}{
		{nil, "bridge db web"},
		{map[string][]string{"name": {"we"}}, "web"},
		{map[string][]string{"name": {"^d"}}, "db"},
		{map[string][]string{"name": {"[", "eb"}}, "web"}, // not a regular expression: contained
		{map[string][]string{"id": {web.ID[:6]}}, "web"},
		{map[string][]string{"label": {"tier"}}, "db web"},
		{map[string][]string{"label": {"tier=back"}}, "db"},
		{map[string][]string{"label": {"tier", "keep"}}, "db"},
		{map[string][]string{"driver": {"bridge"}}, "bridge db web"},
		{map[string][]string{"driver": {"bridg"}}, ""},
		{map[string][]string{"type": {"builtin"}}, "bridge"},
		{map[string][]string{"type": {"custom"}}, "db web"},
		{map[string][]string{"dangling": {"true"}}, "web"},
		{map[string][]string{"dangling": {"0"}}, "bridge db"},
		{map[string][]string{"scope": {"local"}, "name": {"db"}}, "db"},
	} {
		list, err := f.svc.List(ctx, tc.filters)
		var names []string
		for _, n := range list {
			names = append(names, n.Name)
		}
		if err != nil || strings.Join(names, " ") != tc.want {
			t.Errorf("List(%v) = %v, %v; want %s", tc.filters, names, err, tc.want)
		}
	}
	for _, bad := range []map[string][]string{{"colour": {"red"}}, {"type": {"odd"}}, {"dangling": {"maybe"}}, {"dangling": {"true", "false"}}} {
		if _, err := f.svc.List(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("List(%v) = %v, want an invalid-argument error", bad, err)
		}
	}
	if got, err := f.svc.Get(ctx, db.ID[:10]); err != nil || got.Name != "db" {
		t.Errorf("Get(prefix) = %v, %v", got.Name, err)
	}
	if eps, err := f.svc.NetworkEndpoints(ctx, "db"); err != nil || len(eps) != 1 || eps[0].ContainerName != "pg" {
		t.Errorf("NetworkEndpoints(db) = %+v, %v", eps, err)
	}
	if err := f.svc.Remove(ctx, "db"); !errdefs.IsConflict(err) {
		t.Errorf("Remove(db) with a container = %v", err)
	}
	if err := f.svc.Remove(ctx, "bridge"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("Remove(bridge) = %v", err)
	}
	if err := f.svc.Remove(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("Remove(nope) = %v", err)
	}
	if _, err := f.svc.Prune(ctx, map[string][]string{"until": {"soon"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Prune(until=soon) = %v", err)
	}
	if _, err := f.svc.Prune(ctx, map[string][]string{"dangling": {"true"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Prune(dangling) = %v", err)
	}
	// Nothing is old enough yet.
	if got, err := f.svc.Prune(ctx, map[string][]string{"until": {"1h"}}); err != nil || len(got) != 0 {
		t.Errorf("Prune(until=1h) = %v, %v", got, err)
	}
	if got, err := f.svc.Prune(ctx, map[string][]string{"label!": {"tier=front"}}); err != nil || len(got) != 0 {
		t.Errorf("Prune(label!=tier=front) = %v, %v", got, err)
	}
	f.events.take()
	got, err := f.svc.Prune(ctx, nil)
	if err != nil || !slices.Equal(got, []string{"web"}) {
		t.Errorf("Prune = %v, %v; want web (db has a container, bridge is the default)", got, err)
	}
	if ev := f.events.take(); !slices.Equal(ev, []string{"destroy web"}) {
		t.Errorf("prune events = %v", ev)
	}
}

func TestSettingsValidation(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	c := ctr('a', "a")
	for _, bad := range [][]PortBinding{
		{{Proto: "sctp", ContainerPort: 80}},
		{{Proto: "tcp", ContainerPort: 0}},
		{{Proto: "tcp", ContainerPort: 80, HostIP: netip.MustParseAddr("::1")}},
	} {
		if err := f.svc.SetPorts(ctx, c.ID, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("SetPorts(%+v) = %v", bad, err)
		}
	}
	for _, bad := range []string{"nocolon", "host:", ":1.2.3.4", "host:not-an-ip", "a b:1.2.3.4"} {
		if err := f.svc.SetDNS(ctx, c.ID, DNSConfig{ExtraHosts: []string{bad}}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("SetDNS(--add-host %s) = %v", bad, err)
		}
	}
	if err := f.svc.SetDNS(ctx, c.ID, DNSConfig{ExtraHosts: []string{"h:1.2.3.4", "g=host-gateway", "v6:::1", "b:[fe80::1]"}}); err != nil {
		t.Errorf("SetDNS: %v", err)
	}
	// An engine without host networking cannot start networked containers.
	if _, err := f.svc.Plumb(ctx, c.ID); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Plumb without host networking = %v", err)
	}
}

func TestResolvAndHosts(t *testing.T) {
	gw := netip.MustParseAddr("172.30.0.1")
	if got := resolvConf(DNSConfig{}, gw, false); got != "nameserver 172.30.0.1\n" {
		t.Errorf("resolv.conf = %q", got)
	}
	dns := DNSConfig{Servers: []string{"10.0.0.53", "10.0.0.54"}, Search: []string{"a.example", "b.example"}, Options: []string{"ndots:2"}}
	got := resolvConf(dns, gw, false)
	if want := "nameserver 10.0.0.53\nnameserver 10.0.0.54\nsearch a.example b.example\noptions ndots:2\n"; got != want {
		t.Errorf("resolv.conf = %q, want %q", got, want)
	}
	// On a user network the gateway's server stays, and forwards to them.
	if got, want := resolvConf(dns, gw, true), "nameserver 172.30.0.1\nsearch a.example b.example\noptions ndots:2\n"; got != want {
		t.Errorf("resolv.conf on a user network = %q, want %q", got, want)
	}
	hosts := hostsFile("web", "example.org", netip.MustParseAddr("172.30.0.2"), extraHosts(DNSConfig{ExtraHosts: []string{"db:10.1.1.1", "host.docker.internal:host-gateway"}}, gw))
	for _, line := range []string{"127.0.0.1\tlocalhost\n", "10.1.1.1\tdb\n", "172.30.0.1\thost.docker.internal\n", "172.30.0.2\tweb.example.org web\n"} {
		if !strings.Contains(hosts, line) {
			t.Errorf("hosts lacks %q:\n%s", line, hosts)
		}
	}
	if strings.Index(hosts, "db") > strings.Index(hosts, "web.example.org") {
		t.Errorf("extra hosts come after the container's own line:\n%s", hosts)
	}
}
