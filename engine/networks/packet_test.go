package networks

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/networks/netnstest"
)

// The packet tests stand a namespace in for each container (a veth on the
// network's bridge instead of a VM's tap: the rules do not care which) and
// one for the world outside the host (a veth with 10.99.0.0/24, and a
// route back to the internal network's subnet only), all made by the
// test.

// peer is a namespace joined to the test's (the host's) by a veth pair.
type peer struct {
	ns   netns.NsHandle
	addr netip.Addr
}

// addPeer makes a namespace whose eth0 has addr (a prefix) and a default
// route via gw, joined to the host by a veth named hostSide, attached to
// bridge if it is not empty.
func addPeer(t *testing.T, hostSide, bridge, addr, gw string) peer {
	t.Helper()
	ns := netnstest.NewNS(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostSide}, PeerName: hostSide + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s: %v", hostSide, err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	inner, err := netlink.LinkByName(hostSide + "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(inner, int(ns)); err != nil {
		t.Fatal(err)
	}
	host, _ := netlink.LinkByName(hostSide)
	if bridge != "" {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetMaster(host, br); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	h := netnstest.Handle(t, ns)
	l, err := h.LinkByName(hostSide + "p")
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(addr)
	if err := h.LinkSetName(l, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if gw != "" {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			t.Fatalf("default route via %s: %v", gw, err)
		}
	}
	return peer{ns: ns, addr: p.Addr()}
}

// listen opens a TCP listener in ns (the host's if ns is -1) and returns
// a channel that yields the remote address of each connection accepted,
// after echoing a greeting.
func listen(t *testing.T, ns netns.NsHandle, addr string) <-chan netip.Addr {
	t.Helper()
	var l net.Listener
	open := func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	}
	var err error
	if ns == -1 {
		err = open()
	} else {
		err = netnstest.Do(ns, open)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan netip.Addr, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello\n")
			got <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			c.Close()
		}
	}()
	return got
}

// dial connects from ns to addr and reads the greeting.
func dial(ns netns.NsHandle, addr string, timeout time.Duration) error {
	var c net.Conn
	open := func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	}
	var err error
	if ns == -1 {
		err = open()
	} else {
		err = netnstest.Do(ns, open)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "hello\n" {
		return fmt.Errorf("read %q", b)
	}
	return nil
}

// hostWith brings up the bridges of nets (removed at cleanup) and
// forwarding, and returns the outside: a namespace at 10.99.0.2 on a veth
// whose host side, up0, is 10.99.0.1.
func hostWith(t *testing.T, h *Host, nets []Network) peer {
	t.Helper()
	for i := range nets {
		if err := h.EnsureBridge(&nets[i]); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.DeleteLink(nets[i].Bridge) })
	}
	if err := h.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	outside := addPeer(t, "up0", "", "10.99.0.2/24", "")
	if l, err := netlink.LinkByName("up0"); err != nil {
		t.Fatal(err)
	} else if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.99.0.1/24"))}); err != nil {
		t.Fatal(err)
	}
	return outside
}

const blocked = 400 * time.Millisecond

func expectFrom(t *testing.T, what string, got <-chan netip.Addr, want string) {
	t.Helper()
	select {
	case a := <-got:
		if a.String() != want {
			t.Errorf("%s: the server saw %s, want %s", what, a, want)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s: the server accepted nothing", what)
	}
}

func TestPackets(t *testing.T) {
	h := openHost(t)
	def := testNetwork("bridge", "vmctl0", "172.30.0.0/16")
	other := testNetwork("other", "br-other", "10.42.0.0/24")
	internal := testNetwork("internal", "br-internal", "10.43.0.0/24")
	internal.Internal = true
	nets := []Network{def, other, internal}
	outside := hostWith(t, h, nets)
	// The outside knows its way back to the internal network only, so
	// that nothing but the rules keeps it out.
	err := netnstest.Do(outside.ns, func() error {
		_, dst, _ := net.ParseCIDR("10.43.0.0/24")
		return netlink.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("10.99.0.1")})
	})
	if err != nil {
		t.Fatal(err)
	}
	c1 := addPeer(t, "vc1", "vmctl0", "172.30.0.2/16", "172.30.0.1")
	c2 := addPeer(t, "vc2", "br-other", "10.42.0.2/24", "10.42.0.1")
	c3 := addPeer(t, "vc3", "br-internal", "10.43.0.2/24", "10.43.0.1")
	id := func(c byte) string { return strings.Repeat(string(c), 64) }
	eps := []Endpoint{
		{NetworkID: def.ID, ContainerID: id('1'), IP: c1.addr, Tap: "vc1", Ports: []PortBinding{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}}},
		{NetworkID: other.ID, ContainerID: id('2'), IP: c2.addr, Tap: "vc2"},
		{NetworkID: internal.ID, ContainerID: id('3'), IP: c3.addr, Tap: "vc3"},
	}
	if err := h.ApplyRules(Ruleset(nets, eps, RuleOptions{})); err != nil {
		t.Fatal(err)
	}

	world := listen(t, outside.ns, "10.99.0.2:7000")
	t.Run("masquerade", func(t *testing.T) {
		for _, c := range []peer{c1, c2} {
			if err := dial(c.ns, "10.99.0.2:7000", 2*time.Second); err != nil {
				t.Fatalf("%s to the outside: %v", c.addr, err)
			}
			expectFrom(t, c.addr.String()+" to the outside", world, "10.99.0.1")
		}
	})
	t.Run("internal", func(t *testing.T) {
		if err := dial(c3.ns, "10.99.0.2:7000", blocked); err == nil {
			t.Error("a container on an internal network reached the outside")
		}
		// The host still reaches it (its gateway is the host's).
		in := listen(t, c3.ns, "10.43.0.2:7003")
		if err := dial(-1, "10.43.0.2:7003", 2*time.Second); err != nil {
			t.Errorf("host to a container on an internal network: %v", err)
		}
		expectFrom(t, "host to internal", in, "10.43.0.1")
		// Nor does the outside get in.
		if err := dial(outside.ns, "10.43.0.2:7003", blocked); err == nil {
			t.Error("the outside reached a container on an internal network")
		}
	})
	t.Run("isolation", func(t *testing.T) {
		srv := listen(t, c2.ns, "10.42.0.2:7001")
		if err := dial(c1.ns, "10.42.0.2:7001", blocked); err == nil {
			t.Error("a container reached another network's container")
		}
		if err := dial(c3.ns, "10.42.0.2:7001", blocked); err == nil {
			t.Error("a container on an internal network reached another network's container")
		}
		if err := dial(-1, "10.42.0.2:7001", 2*time.Second); err != nil {
			t.Errorf("host to a container: %v", err)
		}
		expectFrom(t, "host to container", srv, "10.42.0.1")
	})
	t.Run("published", func(t *testing.T) {
		srv := listen(t, c1.ns, "172.30.0.2:80")
		if err := dial(outside.ns, "10.99.0.1:8080", 2*time.Second); err != nil {
			t.Fatalf("outside to a published port: %v", err)
		}
		expectFrom(t, "outside to published port", srv, "10.99.0.2")
		// From the host itself, to its own address (output chain).
		if err := dial(-1, "10.99.0.1:8080", 2*time.Second); err != nil {
			t.Fatalf("host to a published port on its address: %v", err)
		}
		expectFrom(t, "host to published port", srv, "10.99.0.1")
		// Loopback is left to the userland proxy: nothing listens there.
		if err := dial(-1, "127.0.0.1:8080", blocked); err == nil {
			t.Error("127.0.0.1:8080 reached the container without a proxy")
		}
		// A port nobody published stays closed.
		if err := dial(outside.ns, "10.99.0.1:8081", blocked); err == nil {
			t.Error("an unpublished port reached something")
		}
	})
	t.Run("without the table", func(t *testing.T) {
		// The same traffic fails once the rules are gone: they, not the
		// topology, made it work.
		if err := h.DeleteRules(); err != nil {
			t.Fatal(err)
		}
		if err := dial(c1.ns, "10.99.0.2:7000", blocked); err == nil {
			t.Error("a container reached the outside without masquerading")
		}
		if err := dial(c3.ns, "10.99.0.2:7000", 2*time.Second); err != nil {
			t.Errorf("without the table, the internal network's way out is open, yet: %v", err)
		}
		expectFrom(t, "internal without the table", world, "10.43.0.2")
		if err := dial(outside.ns, "10.99.0.1:8080", blocked); err == nil {
			t.Error("a published port answered without the table")
		}
	})
}

// Without the userland proxy (dockerd's --userland-proxy=false), the
// rules alone carry what the proxy would: the host's connections to a
// published port on 127.0.0.1, a container reaching its own or a
// neighbour's published port through the host, another network's
// container reaching it; and route_localnet, which that needs on the
// bridges, gives a container no way to the host's loopback services.
func TestPacketsKernelPorts(t *testing.T) {
	h := openHost(t)
	h.SetRouteLocalnet(true)
	def := testNetwork("bridge", "vmctl0", "172.30.0.0/16")
	other := testNetwork("other", "br-other", "10.42.0.0/24")
	nets := []Network{def, other}
	outside := hostWith(t, h, nets)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/vmctl0/route_localnet"); err != nil || string(b) != "1\n" {
		t.Fatalf("route_localnet of the bridge: %q, %v; want 1", b, err)
	}
	c1 := addPeer(t, "vc1", "vmctl0", "172.30.0.2/16", "172.30.0.1")
	c1b := addPeer(t, "vc1b", "vmctl0", "172.30.0.3/16", "172.30.0.1")
	c2 := addPeer(t, "vc2", "br-other", "10.42.0.2/24", "10.42.0.1")
	// Hairpin on the container's port, as EnsureTap sets on a VM's tap.
	if l, err := netlink.LinkByName("vc1"); err != nil {
		t.Fatal(err)
	} else if err := netlink.LinkSetHairpin(l, true); err != nil {
		t.Fatal(err)
	}
	id := func(c byte) string { return strings.Repeat(string(c), 64) }
	eps := []Endpoint{
		{NetworkID: def.ID, ContainerID: id('1'), IP: c1.addr, Tap: "vc1", Ports: []PortBinding{
			{Proto: "tcp", HostPort: 8080, ContainerPort: 80},
			{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8090, ContainerPort: 90}}},
		{NetworkID: def.ID, ContainerID: id('4'), IP: c1b.addr, Tap: "vc1b"},
		{NetworkID: other.ID, ContainerID: id('2'), IP: c2.addr, Tap: "vc2"},
	}
	if err := h.ApplyRules(Ruleset(nets, eps, RuleOptions{KernelPorts: true})); err != nil {
		t.Fatal(err)
	}
	srv := listen(t, c1.ns, "172.30.0.2:80")
	srv90 := listen(t, c1.ns, "172.30.0.2:90")
	try := func(what string, ns netns.NsHandle, addr string, got <-chan netip.Addr, from string) {
		t.Helper()
		if err := dial(ns, addr, 2*time.Second); err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		expectFrom(t, what, got, from)
	}
	try("host to 127.0.0.1:8080", -1, "127.0.0.1:8080", srv, "172.30.0.1")
	try("host to 127.0.0.1:8090 (published on 127.0.0.1)", -1, "127.0.0.1:8090", srv90, "172.30.0.1")
	try("outside to the host's address", outside.ns, "10.99.0.1:8080", srv, "10.99.0.2")
	try("the container to its own published port", c1.ns, "172.30.0.1:8080", srv, "172.30.0.1")
	// Twice: the host routes the first back out of the bridge it came
	// in by, and a redirect that sent the neighbour straight to the
	// container (which routes nothing) for the host's address would break
	// the second.
	try("a neighbour to the published port", c1b.ns, "10.99.0.1:8080", srv, "172.30.0.1")
	try("a neighbour to the published port, again", c1b.ns, "10.99.0.1:8080", srv, "172.30.0.1")
	if rs, err := netnstest.Handle(t, c1b.ns).RouteGet(net.ParseIP("10.99.0.1")); err != nil || len(rs) != 1 || !rs[0].Gw.Equal(net.ParseIP("172.30.0.1")) {
		t.Errorf("the neighbour's route to the host's address after the hairpin: %+v, %v; want via 172.30.0.1", rs, err)
	}
	try("another network's container to the published port", c2.ns, "10.99.0.1:8080", srv, "172.30.0.1")
	if err := dial(outside.ns, "10.99.0.1:8090", blocked); err == nil {
		t.Error("a port published on 127.0.0.1 answered the outside")
	}
	if err := dial(c2.ns, "172.30.0.2:80", blocked); err == nil {
		t.Error("another network's container reached the container's address directly")
	}

	// A container that routes 127.1.2.3 to its gateway (its kernel is its
	// own: it drops its local 127/8 route and accepts loopback sources)
	// must not reach the host's loopback-only services.
	loop := listen(t, -1, "127.1.2.3:7005")
	ch := netnstest.Handle(t, c1.ns)
	local, err := ch.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range local {
		if r.Dst != nil && r.Dst.String() == "127.0.0.0/8" {
			if err := ch.RouteDel(&r); err != nil {
				t.Fatalf("removing the container's local 127.0.0.0/8 route: %v", err)
			}
		}
	}
	eth0, err := ch.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("127.1.2.3/32")
	if err := ch.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: dst, Gw: net.ParseIP("172.30.0.1")}); err != nil {
		t.Fatal(err)
	}
	if err := netnstest.Do(c1.ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/eth0/route_localnet", []byte("1\n"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	if err := dial(c1.ns, "127.1.2.3:7005", blocked); err == nil {
		t.Error("a container reached a service on the host's loopback")
	}
	// The same attempt without the guard chain gets through: the guard,
	// not the container's set-up, stopped it.
	if err := h.ApplyRules(Ruleset(nets, eps, RuleOptions{})); err != nil {
		t.Fatal(err)
	}
	try("loopback through the bridge without the guard", c1.ns, "127.1.2.3:7005", loop, "172.30.0.2")

	// Back to the proxy's rules and route_localnet off: the loopback port
	// is the proxy's again (nothing listens here), and the bridge's
	// route_localnet, on from before, is turned off.
	h.SetRouteLocalnet(false)
	if err := h.EnsureBridge(&nets[0]); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/vmctl0/route_localnet"); err != nil || string(b) != "0\n" {
		t.Fatalf("route_localnet of the bridge after turning it off: %q, %v; want 0", b, err)
	}
	if err := dial(-1, "127.0.0.1:8080", blocked); err == nil {
		t.Error("127.0.0.1:8080 reached the container with the proxy's rules")
	}
}
