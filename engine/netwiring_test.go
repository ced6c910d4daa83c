package engine

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/networks"
	"github.com/vmctl/vmctl/engine/networks/netnstest"
	"github.com/vmctl/vmctl/engine/networks/portproxy"
	"github.com/vmctl/vmctl/engine/services/networksvc"
)

// The hooks' tests listen on addresses of a namespace of their own.
func TestMain(m *testing.M) { netnstest.Main(m) }

func lookup(ctx context.Context, server, name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", server)
	}}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip4", name)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs, err
}

func TestNameHook(t *testing.T) {
	netnstest.Require(t)
	host, err := networks.OpenHost()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	n := networksvc.Network{ID: "n1", Name: "web", Bridge: "br-names", MTU: 1500,
		Subnet: netip.MustParsePrefix("10.70.0.0/24"), Gateway: netip.MustParseAddr("10.70.0.1")}
	if err := host.EnsureBridge(&n); err != nil {
		t.Fatal(err)
	}
	defer host.DeleteLink(n.Bridge)
	ctx := context.Background()
	h := newNameHook()
	a, b := netip.MustParseAddr("10.70.0.5"), netip.MustParseAddr("10.70.0.6")
	if err := h.Serve(ctx, n, networksvc.NameSet{Records: map[string][]netip.Addr{"alpha": {a}, "Shared": {a, b}}}); err != nil {
		t.Fatal(err)
	}
	defer h.Remove(n.ID)
	if got, err := lookup(ctx, "10.70.0.1:53", "alpha."); err != nil || !slices.Equal(got, []netip.Addr{a}) {
		t.Errorf("alpha = %v, %v", got, err)
	}
	if got, err := lookup(ctx, "10.70.0.1:53", "shared."); err != nil || !slices.Equal(got, []netip.Addr{a, b}) {
		t.Errorf("shared (an alias of two) = %v, %v", got, err)
	}
	// New records replace the old at once, on the same server.
	if err := h.Serve(ctx, n, networksvc.NameSet{Records: map[string][]netip.Addr{"beta": {b}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := lookup(ctx, "10.70.0.1:53", "beta."); err != nil || !slices.Equal(got, []netip.Addr{b}) {
		t.Errorf("beta = %v, %v", got, err)
	}
	if got, err := lookup(ctx, "10.70.0.1:53", "alpha."); err == nil && slices.Contains(got, a) {
		t.Errorf("alpha still answered after its record went: %v", got)
	}
	h.Remove(n.ID)
	if got, err := lookup(ctx, "10.70.0.1:53", "beta."); err == nil {
		t.Errorf("a removed server answered: %v", got)
	}
}

// Engines of one data root in two processes both serve a network's names
// on its gateway; a name one of them has not seen (a container the other
// started) is read from the store, once per reloadEvery.
func TestNameHookShared(t *testing.T) {
	netnstest.Require(t)
	host, err := networks.OpenHost()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	n := networksvc.Network{ID: "n2", Name: "shared", Bridge: "br-shared", MTU: 1500,
		Subnet: netip.MustParsePrefix("10.71.0.0/24"), Gateway: netip.MustParseAddr("10.71.0.1")}
	if err := host.EnsureBridge(&n); err != nil {
		t.Fatal(err)
	}
	defer host.DeleteLink(n.Bridge)
	ctx := context.Background()
	a, g := netip.MustParseAddr("10.71.0.5"), netip.MustParseAddr("10.71.0.7")
	var reloads atomic.Int32
	store := networksvc.NameSet{Records: map[string][]netip.Addr{"alpha": {a}, "gamma": {g}},
		Upstreams: map[netip.Addr][]netip.AddrPort{a: nil, g: {netip.MustParseAddrPort("10.71.0.53:53")}}}
	first, second := newNameHook(), newNameHook()
	for _, h := range []*nameHook{first, second} {
		h.reload = func(id string) (networksvc.NameSet, error) {
			if id != n.ID {
				t.Errorf("reload(%q), want %q", id, n.ID)
			}
			reloads.Add(1)
			return store, nil
		}
	}
	if err := first.Serve(ctx, n, networksvc.NameSet{Records: map[string][]netip.Addr{"alpha": {a}}, Upstreams: map[netip.Addr][]netip.AddrPort{a: nil}}); err != nil {
		t.Fatal(err)
	}
	defer first.Remove(n.ID)
	if err := second.Serve(ctx, n, store); err != nil {
		t.Fatalf("a second engine's server on the same gateway: %v", err)
	}
	defer second.Remove(n.ID)
	for range 4 { // the kernel spreads queries over both
		if got, err := lookup(ctx, "10.71.0.1:53", "alpha."); err != nil || !slices.Equal(got, []netip.Addr{a}) {
			t.Errorf("alpha = %v, %v", got, err)
		}
	}
	s := first.servers[n.ID]
	if got := s.lookup("gamma"); got != nil || reloads.Load() != 0 {
		t.Errorf("a fresh table reloaded on a miss: %v, %d reloads", got, reloads.Load())
	}
	s.loaded.Store(time.Now().Add(-2 * reloadEvery).UnixNano())
	if got := s.lookup("gamma"); !slices.Equal(got, []netip.Addr{g}) || reloads.Load() != 1 {
		t.Errorf("gamma after the table aged = %v (%d reloads), want %v from one reload", got, reloads.Load(), g)
	}
	if got := s.lookup("nothing"); got != nil || reloads.Load() != 1 {
		t.Errorf("a miss right after a reload read the store again: %v, %d reloads", got, reloads.Load())
	}
	if got := s.reverse(g); !slices.Equal(got, []string{"gamma"}) {
		t.Errorf("reverse of %v = %v", g, got)
	}
	// A client's own name servers, from the reloaded table; a known client
	// without any reads nothing again.
	if got := s.upstreams(g); len(got) != 1 || got[0].String() != "10.71.0.53:53" {
		t.Errorf("gamma's name servers = %v", got)
	}
	if got := s.upstreams(a); got != nil || reloads.Load() != 1 {
		t.Errorf("alpha's name servers = %v (%d reloads), want none from the table", got, reloads.Load())
	}
}

func TestProxyHook(t *testing.T) {
	netnstest.Require(t)
	ctx := context.Background()
	h := proxyHook{portproxy.NewManager(portproxy.Options{})}
	ports := []networksvc.ProxiedPort{{PortBinding: networksvc.PortBinding{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), ContainerPort: 80},
		Container: netip.MustParseAddrPort("10.70.0.5:80")}}
	got, err := h.Publish(ctx, "a", ports)
	if err != nil || len(got) != 1 || got[0].HostPort == 0 || got[0].ContainerPort != 80 || got[0].Container != ports[0].Container {
		t.Fatalf("Publish = %+v, %v", got, err)
	}
	taken := ports
	taken[0].HostPort = got[0].HostPort
	if _, err := h.Publish(ctx, "b", taken); !errdefs.IsConflict(err) {
		t.Errorf("Publish of a taken port = %v, want a conflict", err)
	}
	h.Unpublish("a")
	if _, err := h.Publish(ctx, "b", taken); err != nil {
		t.Errorf("Publish after Unpublish: %v", err)
	}
	h.Unpublish("b")
}
