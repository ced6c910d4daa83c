package networksvc

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"

	"github.com/vmctl/vmctl/engine/networks"
)

// links returns the names of the test namespace's interfaces but lo.
func links(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if l.Attrs().Name != "lo" {
			out = append(out, l.Attrs().Name)
		}
	}
	slices.Sort(out)
	return out
}

func masterOf(t *testing.T, name string) string {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m, err := netlink.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		t.Fatalf("master of %s: %v", name, err)
	}
	return m.Attrs().Name
}

// rules returns the comments of the loaded rules of a chain.
func rules(t *testing.T, h *networks.Host, chain string) []string {
	t.Helper()
	rs, err := h.LoadedRules()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Chain == chain {
			out = append(out, r.Comment)
		}
	}
	return out
}

func published(t *testing.T, h *networks.Host) []string {
	var out []string
	for _, c := range rules(t, h, "published") {
		if !strings.HasPrefix(c, "from ") {
			out = append(out, c)
		}
	}
	return out
}

func TestPlumbLifecycle(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	web, err := f.svc.Create(ctx, CreateOptions{Name: "web", Subnet: "10.50.0.0/24", Options: map[string]string{networks.OptionMTU: "1400"}})
	if err != nil {
		t.Fatal(err)
	}
	a := ctr('a', "alpha")
	if _, err := f.svc.Connect(ctx, "bridge", a, EndpointOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Connect(ctx, "web", a, EndpointOptions{Aliases: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetPorts(ctx, a.ID, []PortBinding{{Proto: "tcp", HostPort: 18080, ContainerPort: 80}, {Proto: "udp", ContainerPort: 53}}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetDNS(ctx, a.ID, DNSConfig{Hostname: "alpha-host", Search: []string{"example.org"}, ExtraHosts: []string{"gw:host-gateway"}}); err != nil {
		t.Fatal(err)
	}
	f.events.take()

	p, err := f.svc.Plumb(ctx, a.ID)
	if err != nil {
		t.Fatalf("Plumb: %v", err)
	}
	tap0, tap1 := networks.TapName(a.ID, 0), networks.TapName(a.ID, 1)
	if len(p.NICs) != 2 || p.NICs[0].Tap != tap0 || p.NICs[0].MAC.String() != "02:42:ac:1e:00:02" || p.NICs[0].MTU != 1500 ||
		p.NICs[1].Tap != tap1 || p.NICs[1].MTU != 1400 {
		t.Errorf("NICs = %+v", p.NICs)
	}
	if len(p.Interfaces) != 2 || p.Interfaces[0].Name != "eth0" || p.Interfaces[0].Addresses[0].String() != "172.30.0.2/16" ||
		p.Interfaces[1].Name != "eth1" || p.Interfaces[1].Addresses[0].String() != "10.50.0.2/24" || p.Interfaces[1].MAC.String() != p.NICs[1].MAC.String() {
		t.Errorf("Interfaces = %+v", p.Interfaces)
	}
	if len(p.Routes) != 1 || p.Routes[0].Destination.IsValid() || p.Routes[0].Gateway.String() != "172.30.0.1" || p.Routes[0].Device != "eth0" {
		t.Errorf("Routes = %+v", p.Routes)
	}
	if !strings.Contains(p.Hosts, "172.30.0.2\talpha-host\n") || !strings.Contains(p.Hosts, "172.30.0.1\tgw\n") {
		t.Errorf("Hosts =\n%s", p.Hosts)
	}
	if p.ResolvConf != "nameserver 172.30.0.1\nsearch example.org\n" {
		t.Errorf("ResolvConf = %q", p.ResolvConf)
	}
	if len(p.Ports) != 2 || p.Ports[0].HostPort != 18080 || p.Ports[1].Proto != "udp" || p.Ports[1].HostPort == 0 {
		t.Fatalf("Ports = %+v", p.Ports)
	}
	udpPort := p.Ports[1].HostPort
	if got := links(t); !slices.Equal(got, sorted(web.Bridge, tap0, tap1, "vmctl0")) {
		t.Errorf("links = %v", got)
	}
	if masterOf(t, tap0) != "vmctl0" || masterOf(t, tap1) != web.Bridge {
		t.Errorf("taps attached to %s and %s", masterOf(t, tap0), masterOf(t, tap1))
	}
	if got := published(t, f.host); len(got) != 2 || !strings.HasPrefix(got[0], "0.0.0.0:18080 -> tcp 172.30.0.2:80") {
		t.Errorf("published rules = %v", got)
	}
	if pp := f.proxies.published(a.ID); len(pp) != 2 || pp[0].Container.String() != "172.30.0.2:80" {
		t.Errorf("proxies = %+v", pp)
	}
	// DNS: names on the user network; the default network's server
	// answers no container names.
	f.names.mu.Lock()
	webNames, defNames := f.names.serving["web"], f.names.serving["bridge"]
	f.names.mu.Unlock()
	if len(webNames) != 3 || webNames["alpha"][0].String() != "10.50.0.2" || len(webNames["api"]) != 1 || len(webNames[a.ID[:12]]) != 1 || defNames == nil || len(defNames) != 0 {
		t.Errorf("DNS records: web %v, bridge %v", webNames, defNames)
	}
	if ev := f.events.take(); len(ev) != 0 {
		t.Errorf("plumbing reported %v", ev)
	}

	// A running container takes no new network.
	if _, err := f.svc.Connect(ctx, "web", ContainerRef{ID: a.ID, Name: "alpha"}, EndpointOptions{}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Connect of a running container = %v", err)
	}

	// A second container asking for a taken port fails and leaves nothing.
	b := ctr('b', "beta")
	if _, err := f.svc.Connect(ctx, "web", b, EndpointOptions{IP: netip.MustParseAddr("10.50.0.99")}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetPorts(ctx, b.ID, []PortBinding{{Proto: "tcp", HostPort: 18080, ContainerPort: 8080}}); err != nil {
		t.Fatal(err)
	}
	before := rules(t, f.host, "forward")
	if _, err := f.svc.Plumb(ctx, b.ID); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "port is already allocated") {
		t.Errorf("Plumb with a taken port = %v", err)
	}
	if ok, _ := f.host.LinkExists(networks.TapName(b.ID, 0)); ok {
		t.Error("a failed Plumb left its tap")
	}
	if after := rules(t, f.host, "forward"); !slices.Equal(before, after) {
		t.Errorf("a failed Plumb changed the rules:\n%v\n%v", before, after)
	}
	if eps, _ := f.svc.Endpoints(ctx, b.ID); len(eps) != 1 || eps[0].Plumbed() || eps[0].IP.String() != "10.50.0.99" {
		t.Errorf("endpoints after a failed Plumb = %+v", eps)
	}

	// The VM ends: everything but the addresses goes.
	if err := f.svc.Unplumb(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if got := links(t); !slices.Equal(got, sorted(web.Bridge, "vmctl0")) {
		t.Errorf("links after Unplumb = %v", got)
	}
	if ok, _ := f.host.HasTable(); ok {
		t.Error("the table outlived the last running container")
	}
	if len(f.proxies.published(a.ID)) != 0 || len(f.names.servers()) != 0 {
		t.Errorf("after Unplumb: proxies %v, DNS servers %v", f.proxies.published(a.ID), f.names.servers())
	}
	if err := f.svc.Unplumb(ctx, a.ID); err != nil {
		t.Errorf("second Unplumb: %v", err)
	}

	// A restart keeps the addresses; the ephemeral port is chosen again.
	p2, err := f.svc.Plumb(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Interfaces[0].Addresses[0] != p.Interfaces[0].Addresses[0] || p2.Interfaces[1].Addresses[0] != p.Interfaces[1].Addresses[0] {
		t.Errorf("addresses changed across a restart: %v, were %v", p2.Interfaces, p.Interfaces)
	}
	udpPort = p2.Ports[1].HostPort

	// A daemon restart: a new service, new proxies and DNS servers. A
	// container left plumbed that no longer runs and a stray tap are
	// swept; the running one keeps its taps and ports.
	c := ctr('c', "gamma")
	if _, err := f.svc.Connect(ctx, "bridge", c, EndpointOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Plumb(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	stray := networks.TapName(strings.Repeat("e", 64), 3)
	if err := f.host.EnsureTap(stray, "vmctl0", 1500); err != nil {
		t.Fatal(err)
	}
	f.reopen(t, true)
	if err := f.svc.Restore(ctx, []string{a.ID}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := links(t); !slices.Equal(got, sorted(web.Bridge, tap0, tap1, "vmctl0")) {
		t.Errorf("links after Restore = %v", got)
	}
	pp := f.proxies.published(a.ID)
	if len(pp) != 2 || pp[0].HostPort != 18080 || pp[1].HostPort != udpPort {
		t.Errorf("ports after Restore = %+v, want 18080 and %d", pp, udpPort)
	}
	if got := published(t, f.host); len(got) != 2 {
		t.Errorf("published rules after Restore = %v", got)
	}
	if eps, _ := f.svc.Endpoints(ctx, c.ID); eps[0].Plumbed() {
		t.Error("Restore left a container that does not run plumbed")
	}
	if got := f.names.servers(); !slices.Equal(got, []string{"bridge", "web"}) {
		t.Errorf("DNS servers after Restore = %v", got)
	}

	// Forced disconnect of a running container: that endpoint's tap and
	// names go, the other stays.
	if err := f.svc.Disconnect(ctx, "web", a.ID, false); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Disconnect of a running container = %v", err)
	}
	f.events.take()
	if err := f.svc.Disconnect(ctx, "web", a.ID, true); err != nil {
		t.Fatal(err)
	}
	if got := links(t); !slices.Equal(got, sorted(web.Bridge, tap0, "vmctl0")) {
		t.Errorf("links after a forced disconnect = %v", got)
	}
	if got := f.names.servers(); !slices.Equal(got, []string{"bridge"}) {
		t.Errorf("DNS servers after a forced disconnect = %v", got)
	}
	if ev := f.events.take(); !slices.Equal(ev, []string{"disconnect web aaaa"}) {
		t.Errorf("events = %v", ev)
	}

	// Removal: nothing of the container is left.
	for _, id := range []string{a.ID, b.ID, c.ID} {
		if err := f.svc.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if ev := f.events.take(); !slices.Equal(ev, []string{"disconnect bridge aaaa", "disconnect web bbbb", "disconnect bridge cccc"}) {
		t.Errorf("release events = %v", ev)
	}
	if eps, _ := f.store.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints after Release: %+v", eps)
	}
	if ok, _ := f.host.HasTable(); ok {
		t.Error("the table outlived the containers")
	}
	if err := f.svc.Remove(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if got := links(t); !slices.Equal(got, []string{"vmctl0"}) {
		t.Errorf("links after removing everything = %v (the default network's bridge stays)", got)
	}
	// Every address is free again: the next container gets the first.
	e, err := f.svc.Connect(ctx, "bridge", ctr('f', "phi"), EndpointOptions{})
	if err != nil || e.IP.String() != "172.30.0.4" {
		// Next fit: .2 and .3 were handed out last, so .4 comes first.
		t.Errorf("Connect after release = %v, %v", e.IP, err)
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// TestPlumbInternal: a container only on an internal network has no
// default route and publishes nothing; its name server is its network's.
func TestPlumbInternal(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	if _, err := f.svc.Create(ctx, CreateOptions{Name: "back", Subnet: "10.51.0.0/24", Internal: true}); err != nil {
		t.Fatal(err)
	}
	c := ctr('9', "nine")
	if _, err := f.svc.Connect(ctx, "back", c, EndpointOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SetPorts(ctx, c.ID, []PortBinding{{Proto: "tcp", HostPort: 18081, ContainerPort: 80}}); err != nil {
		t.Fatal(err)
	}
	p, err := f.svc.Plumb(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Routes) != 0 || len(p.Ports) != 0 || p.ResolvConf != "nameserver 10.51.0.1\n" || !strings.Contains(p.Hosts, "10.51.0.2\t"+c.ID[:12]+"\n") {
		t.Errorf("internal plumbing = %+v", p)
	}
	if got := published(t, f.host); len(got) != 0 {
		t.Errorf("published rules = %v", got)
	}
	if err := f.svc.Release(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Remove(ctx, "back"); err != nil {
		t.Fatal(err)
	}
	if got := links(t); len(got) != 0 && !slices.Equal(got, []string{"vmctl0"}) {
		t.Errorf("links left: %v", got)
	}
	// No networks, no network files but the host names.
	none := ctr('8', "eight")
	p, err = f.svc.Plumb(ctx, none.ID)
	if err != nil || len(p.NICs) != 0 || p.ResolvConf != "" || !strings.HasPrefix(p.Hosts, "127.0.0.1\tlocalhost\n") {
		t.Errorf("Plumb without networks = %+v, %v", p, err)
	}
}
