package networks

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vmctl/vmctl/engine/networks/netnstest"
)

// The tests that change the host run in a network namespace of their own
// (netnstest): as root, the whole test binary is re-executed there.
func TestMain(m *testing.M) { netnstest.Main(m) }

func openHost(t *testing.T) *Host {
	t.Helper()
	netnstest.Require(t)
	h, err := OpenHost()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func testNetwork(name, bridge, subnet string) Network {
	p := netip.MustParsePrefix(subnet)
	return Network{ID: strings.Repeat(name[:1], 64), Name: name, Driver: DriverBridge, Bridge: bridge, Subnet: p, Gateway: p.Addr().Next(), MTU: 1500}
}

func TestBridgeAndTap(t *testing.T) {
	h := openHost(t)
	n := testNetwork("a", "br-test", "10.31.0.0/24")
	n.MTU = 1400
	for i := 0; i < 2; i++ { // the second time finds it as it is
		if err := h.EnsureBridge(&n); err != nil {
			t.Fatalf("EnsureBridge: %v", err)
		}
	}
	br, err := netlink.LinkByName("br-test")
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if br.Type() != "bridge" || br.Attrs().MTU != 1400 || br.Attrs().Flags&net.FlagUp == 0 || len(addrs) != 1 || addrs[0].IPNet.String() != "10.31.0.1/24" {
		t.Errorf("bridge: type %s, MTU %d, flags %v, addresses %v", br.Type(), br.Attrs().MTU, br.Attrs().Flags, addrs)
	}
	// A changed subnet replaces the address.
	n2 := testNetwork("a", "br-test", "10.32.0.0/16")
	n2.MTU = 1400
	if err := h.EnsureBridge(&n2); err != nil {
		t.Fatal(err)
	}
	if addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4); len(addrs) != 1 || addrs[0].IPNet.String() != "10.32.0.1/16" {
		t.Errorf("addresses after a subnet change: %v", addrs)
	}

	tap := TapName(strings.Repeat("ab", 32), 0)
	for i := 0; i < 2; i++ {
		if err := h.EnsureTap(tap, "br-test", 1400); err != nil {
			t.Fatalf("EnsureTap: %v", err)
		}
	}
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Flags&netlink.TUNTAP_NO_PI == 0 || tt.Flags&netlink.TUNTAP_VNET_HDR == 0 || tt.NonPersist {
		t.Errorf("tap = %#v, want a persistent tap with IFF_NO_PI|IFF_VNET_HDR", l)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().MTU != 1400 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap: master %d (bridge %d), MTU %d, flags %v", l.Attrs().MasterIndex, br.Attrs().Index, l.Attrs().MTU, l.Attrs().Flags)
	}
	if pi, err := netlink.LinkGetProtinfo(l); err != nil || !pi.Hairpin {
		t.Errorf("tap hairpin = %v, %v; want on", pi.Hairpin, err)
	}
	// The bridge keeps its own MAC, from the gateway, whatever its ports'
	// are: a tap with a lower one would otherwise become the bridge's.
	if err := netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if br, err := netlink.LinkByName("br-test"); err != nil || br.Attrs().HardwareAddr.String() != "02:42:0a:20:00:01" {
		t.Errorf("bridge MAC with a port of a lower one = %v, %v; want 02:42:0a:20:00:01 (from its gateway 10.32.0.1)", br.Attrs().HardwareAddr, err)
	}
	if taps, err := h.Taps(); err != nil || !slices.Equal(taps, []string{tap}) {
		t.Errorf("Taps = %v, %v", taps, err)
	}
	// A tap on a missing bridge is refused and leaves nothing.
	other := TapName(strings.Repeat("cd", 32), 1)
	if err := h.EnsureTap(other, "br-missing", 1500); err == nil {
		t.Error("EnsureTap on a missing bridge succeeded")
	}
	if ok, _ := h.LinkExists(other); ok {
		t.Error("a failed EnsureTap left its tap")
	}
	// Something else under a tap's or bridge's name is refused.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "br-veth"}, PeerName: "br-veth-peer"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	d := testNetwork("d", "br-veth", "10.33.0.0/24")
	if err := h.EnsureBridge(&d); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("EnsureBridge over a veth = %v", err)
	}
	// Removal, and removing what is gone.
	for _, name := range []string{tap, "br-test", "br-veth", "br-test"} {
		if err := h.DeleteLink(name); err != nil {
			t.Errorf("DeleteLink(%s): %v", name, err)
		}
	}
	if links, _ := netlink.LinkList(); len(links) != 1 {
		t.Errorf("links left: %d, want only lo", len(links))
	}
}

func TestTakenPrefixes(t *testing.T) {
	h := openHost(t)
	n := testNetwork("p", "br-prefix", "10.34.0.0/24")
	if err := h.EnsureBridge(&n); err != nil {
		t.Fatal(err)
	}
	defer h.DeleteLink("br-prefix")
	got, err := h.TakenPrefixes()
	if err != nil || !slices.Contains(got, netip.MustParsePrefix("10.34.0.0/24")) {
		t.Errorf("TakenPrefixes = %v, %v", got, err)
	}
}

func TestEnableForwarding(t *testing.T) {
	h := openHost(t)
	if err := h.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Errorf("ip_forward = %q, %v", b, err)
	}
}

func loaded(t *testing.T, h *Host) map[string][]string {
	t.Helper()
	rules, err := h.LoadedRules()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, r := range rules {
		out[r.Chain] = append(out[r.Chain], render(r.Exprs))
	}
	return out
}

func TestRuleset(t *testing.T) {
	h := openHost(t)
	def := testNetwork("bridge", "vmctl0", "172.30.0.0/16")
	in := testNetwork("inside", "br-inside", "10.40.0.0/24")
	in.Internal = true
	web := testNetwork("web", "br-web", "10.41.0.0/24")
	c1, c2 := strings.Repeat("1", 64), strings.Repeat("2", 64)
	eps := []Endpoint{
		{NetworkID: def.ID, ContainerID: c1, IP: netip.MustParseAddr("172.30.0.2"), Tap: TapName(c1, 0), Ports: []PortBinding{
			{Proto: "tcp", HostPort: 8080, ContainerPort: 80},
			{Proto: "udp", HostIP: netip.MustParseAddr("10.99.0.1"), HostPort: 5353, ContainerPort: 53},
			{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 9000, ContainerPort: 90},
		}},
		// Not plumbed: its ports are not published.
		{NetworkID: web.ID, ContainerID: c2, IP: netip.MustParseAddr("10.41.0.2"), Ports: []PortBinding{{Proto: "tcp", HostPort: 81, ContainerPort: 80}}},
		{NetworkID: in.ID, ContainerID: c2, IP: netip.MustParseAddr("10.40.0.2"), Tap: TapName(c2, 1)},
	}
	if err := h.ApplyRules(Ruleset([]Network{web, def, in}, eps, RuleOptions{})); err != nil {
		t.Fatalf("ApplyRules: %v", err)
	}
	want := map[string][]string{
		"published": {
			`iifname "br-inside" return`,
			`iifname "br-web" return`,
			`iifname "vmctl0" return`,
			`nfproto ipv4 ip daddr 10.99.0.1 l4proto udp th dport 5353 dnat to 172.30.0.2:53`,
			`nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local l4proto tcp th dport 8080 dnat to 172.30.0.2:80`,
		},
		"isolation":  {`oifname "br-inside" drop`, `oifname "br-web" drop`, `oifname "vmctl0" drop`},
		"prerouting": {"jump published"},
		"output":     {"jump published"},
		"postrouting": {
			`nfproto ipv4 ip saddr 10.41.0.0/24 oifname != "br-web" masquerade`,
			`nfproto ipv4 ip saddr 172.30.0.0/16 oifname != "vmctl0" masquerade`,
		},
		"forward": {
			`iifname "br-inside" oifname "br-inside" accept`,
			`iifname "br-web" oifname "br-web" accept`,
			`iifname "vmctl0" oifname "vmctl0" accept`,
			`iifname "br-inside" drop`,
			`oifname "br-inside" drop`,
			`iifname "br-inside" jump isolation`,
			`iifname "br-web" jump isolation`,
			`iifname "vmctl0" jump isolation`,
			"ct state established,related accept",
			`iifname "br-web" accept`,
			`iifname "vmctl0" accept`,
			`nfproto ipv4 oifname "vmctl0" ip daddr 172.30.0.2 l4proto udp th dport 53 accept`,
			`nfproto ipv4 oifname "vmctl0" ip daddr 172.30.0.2 l4proto tcp th dport 80 accept`,
			`nfproto ipv4 oifname "vmctl0" ip daddr 172.30.0.2 l4proto tcp th dport 90 accept`,
		},
	}
	got := loaded(t, h)
	for chain, rules := range want {
		if !slices.Equal(got[chain], rules) {
			t.Errorf("chain %s:\n got %s\nwant %s", chain, strings.Join(got[chain], "\n     "), strings.Join(rules, "\n     "))
		}
	}
	if len(got) != len(want) {
		t.Errorf("chains %v, want %d", got, len(want))
	}
	// Base chains hook where they should, with policy accept.
	c, _ := nftables.New()
	chains, _ := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	for _, ch := range chains {
		if ch.Hooknum != nil && (ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept) {
			t.Errorf("base chain %s has policy %v, want accept", ch.Name, ch.Policy)
		}
	}
	// Without the userland proxy: containers are DNATed too (no return),
	// the host's loopback has its own chain, DNATed connections are
	// masqueraded out of the bridges and allowed across them, and
	// loopback destinations from the bridges are dropped before anything.
	if err := h.ApplyRules(Ruleset([]Network{web, def, in}, eps, RuleOptions{KernelPorts: true})); err != nil {
		t.Fatalf("ApplyRules: %v", err)
	}
	kwant := map[string][]string{
		"published": {
			`nfproto ipv4 ip daddr 10.99.0.1 l4proto udp th dport 5353 dnat to 172.30.0.2:53`,
			`nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local l4proto tcp th dport 8080 dnat to 172.30.0.2:80`,
		},
		"loopback": {
			`nfproto ipv4 ip daddr 127.0.0.0/8 l4proto tcp th dport 8080 dnat to 172.30.0.2:80`,
			`nfproto ipv4 ip daddr 127.0.0.1 l4proto tcp th dport 9000 dnat to 172.30.0.2:90`,
		},
		"output": {"jump published", "jump loopback"},
		"guard": {
			`nfproto ipv4 iifname "br-inside" ip daddr 127.0.0.0/8 drop`,
			`nfproto ipv4 iifname "br-web" ip daddr 127.0.0.0/8 drop`,
			`nfproto ipv4 iifname "vmctl0" ip daddr 127.0.0.0/8 drop`,
		},
		"postrouting": {
			`nfproto ipv4 oifname "br-inside" ct status dnat ip saddr 127.0.0.0/8 masquerade`,
			`nfproto ipv4 ip saddr 10.40.0.0/24 oifname "br-inside" ct status dnat masquerade`,
			`nfproto ipv4 ip saddr 10.41.0.0/24 oifname != "br-web" masquerade`,
			`nfproto ipv4 oifname "br-web" ct status dnat ip saddr 127.0.0.0/8 masquerade`,
			`nfproto ipv4 ip saddr 10.41.0.0/24 oifname "br-web" ct status dnat masquerade`,
			`nfproto ipv4 ip saddr 172.30.0.0/16 oifname != "vmctl0" masquerade`,
			`nfproto ipv4 oifname "vmctl0" ct status dnat ip saddr 127.0.0.0/8 masquerade`,
			`nfproto ipv4 ip saddr 172.30.0.0/16 oifname "vmctl0" ct status dnat masquerade`,
		},
	}
	got = loaded(t, h)
	for chain, rules := range kwant {
		if !slices.Equal(got[chain], rules) {
			t.Errorf("without the proxy, chain %s:\n got %s\nwant %s", chain, strings.Join(got[chain], "\n     "), strings.Join(rules, "\n     "))
		}
	}
	if f := got["forward"]; len(f) < 7 || f[5] != `iifname "br-web" ct status dnat accept` || f[6] != `iifname "vmctl0" ct status dnat accept` {
		t.Errorf("without the proxy, chain forward: %s", strings.Join(f, "\n     "))
	}

	// A second load replaces the table whole.
	if err := h.ApplyRules(Ruleset([]Network{def}, nil, RuleOptions{})); err != nil {
		t.Fatal(err)
	}
	got = loaded(t, h)
	if len(got["published"]) != 1 || len(got["forward"]) != 4 || len(got["postrouting"]) != 1 {
		t.Errorf("after reload: %v", got)
	}
	if err := h.DeleteRules(); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.HasTable(); ok || err != nil {
		t.Errorf("HasTable after DeleteRules = %v, %v", ok, err)
	}
	if err := h.DeleteRules(); err != nil {
		t.Errorf("DeleteRules without a table: %v", err)
	}
}

// TestForeignTables: another table's forward chain with policy drop is
// reported, and loading and removing our table leaves it as it was.
func TestForeignTables(t *testing.T) {
	h := openHost(t)
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	filter := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
	drop := nftables.ChainPolicyDrop
	c.AddChain(&nftables.Chain{Name: "FORWARD", Table: filter, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Policy: &drop})
	other := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "firewall"})
	c.AddChain(&nftables.Chain{Name: "in", Table: other, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter, Policy: &drop})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.DelTable(filter)
		c.DelTable(other)
		c.Flush()
	}()
	got, err := h.ForwardBlockers()
	if err != nil || len(got) != 1 || got[0].String() != "table ip filter, chain FORWARD: policy drop" {
		t.Errorf("ForwardBlockers = %v, %v", got, err)
	}
	n := testNetwork("bridge", "vmctl0", "172.30.0.0/16")
	if err := h.ApplyRules(Ruleset([]Network{n}, nil, RuleOptions{})); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.ForwardBlockers(); len(got) != 1 {
		t.Errorf("our own forward chain is reported: %v", got)
	}
	if err := h.DeleteRules(); err != nil {
		t.Fatal(err)
	}
	tables, _ := c.ListTables()
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"filter", "firewall"}) {
		t.Errorf("tables after ours came and went: %v", names)
	}
}
