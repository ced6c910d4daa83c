package rtnetlink

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os/exec"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

func TestParseMessages(t *testing.T) {
	two := append(encode(unix.RTM_NEWLINK, 0, 7, []byte{1, 2, 3}), encode(unix.NLMSG_DONE, 0, 7, nil)...)
	msgs, err := parseMessages(two)
	if err != nil || len(msgs) != 2 || msgs[0].typ != unix.RTM_NEWLINK || msgs[0].seq != 7 ||
		len(msgs[0].data) != 4 || msgs[1].typ != unix.NLMSG_DONE {
		t.Fatalf("parseMessages(two messages) = %+v, %v", msgs, err)
	}
	bad := map[string][]byte{
		"short header":        make([]byte, 10),
		"length below header": func() []byte { b := encode(1, 0, 1, nil); order.PutUint32(b, 8); return b }(),
		"length past end":     func() []byte { b := encode(1, 0, 1, nil); order.PutUint32(b, 64); return b }(),
	}
	for name, b := range bad {
		if _, err := parseMessages(b); !errors.Is(err, errMalformed) {
			t.Errorf("parseMessages(%s) = %v, want errMalformed", name, err)
		}
	}
}

func TestParseAttrs(t *testing.T) {
	b := encode(0, 0, 0, nil, attr{unix.IFLA_IFNAME, []byte("eth0\x00")}, attr{unix.IFLA_MTU | unix.NLA_F_NESTED, []byte{1, 0, 0, 0}})
	attrs, err := parseAttrs(b[unix.SizeofNlMsghdr:])
	if err != nil || len(attrs) != 2 || attrs[0].typ != unix.IFLA_IFNAME || cString(attrs[0].data) != "eth0" ||
		attrs[1].typ != unix.IFLA_MTU {
		t.Fatalf("parseAttrs = %+v, %v", attrs, err)
	}
	for _, b := range [][]byte{{1, 0}, {3, 0, 1, 0}, {9, 0, 1, 0, 1, 2, 3, 4}} {
		if _, err := parseAttrs(b); !errors.Is(err, errMalformed) {
			t.Errorf("parseAttrs(%v) = %v, want errMalformed", b, err)
		}
	}
}

func TestParseError(t *testing.T) {
	ack := func(code int32, flags uint16, tail ...attr) message {
		data := make([]byte, unix.SizeofNlMsgerr)
		order.PutUint32(data[0:4], uint32(code))
		order.PutUint32(data[4:8], unix.SizeofNlMsghdr) // the capped request header
		if len(tail) > 0 {
			data = append(data, encode(0, 0, 0, nil, tail...)[unix.SizeofNlMsghdr:]...)
		}
		return message{typ: unix.NLMSG_ERROR, flags: flags, data: data}
	}
	tests := []struct {
		name  string
		m     message
		errno unix.Errno
		text  string
		bad   bool
	}{
		{name: "ack", m: ack(0, 0)},
		{name: "errno", m: ack(-int32(unix.EEXIST), 0), errno: unix.EEXIST},
		{name: "extended", m: ack(-int32(unix.EINVAL), unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS,
			attr{unix.NLMSGERR_ATTR_MSG, []byte("Invalid prefix\x00")}), errno: unix.EINVAL, text: "Invalid prefix"},
		{name: "positive code", m: ack(5, 0), bad: true},
		{name: "short", m: message{data: []byte{1, 2}}, bad: true},
	}
	for _, tt := range tests {
		errno, text, err := parseError(tt.m)
		if (err != nil) != tt.bad || errno != tt.errno || text != tt.text {
			t.Errorf("parseError(%s) = %v, %q, %v; want %v, %q, malformed %v", tt.name, errno, text, err, tt.errno, tt.text, tt.bad)
		}
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.2/24": "10.0.0.255", "172.30.5.9/16": "172.30.255.255", "192.168.1.1/30": "192.168.1.3", "10.1.2.3/8": "10.255.255.255",
	} {
		if got := broadcast(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

// FuzzParse feeds arbitrary datagrams to every parser: none may panic.
func FuzzParse(f *testing.F) {
	f.Add(encode(unix.RTM_NEWLINK, 0, 1, ifInfo{index: 2}.bytes(), attr{unix.IFLA_IFNAME, []byte("eth0\x00")}))
	f.Add(encode(unix.RTM_NEWADDR, 0, 1, ifAddr{family: unix.AF_INET, prefixLen: 24}.bytes(), attr{unix.IFA_LOCAL, []byte{10, 0, 0, 2}}))
	f.Add(encode(unix.RTM_NEWROUTE, 0, 1, rtMsg{family: unix.AF_INET6, dstLen: 200, typ: unix.RTN_UNICAST}.bytes(),
		attr{unix.RTA_DST, make([]byte, 16)}))
	f.Add(encode(unix.NLMSG_ERROR, unix.NLM_F_ACK_TLVS, 1, make([]byte, unix.SizeofNlMsgerr)))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := parseMessages(b)
		if err != nil {
			return
		}
		for _, m := range msgs {
			parseLink(m.data)
			parseAddress(m.data)
			parseRoute(m.data)
			parseError(m)
		}
	})
}

// ipJSON runs `ip -j ARGS` in the caller's namespace and decodes its output.
func ipJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-j"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ip %v: %v", args, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// TestAgainstKernel drives a real namespace and checks each change with
// iproute2's view of it.
func TestAgainstKernel(t *testing.T) {
	testenv.NetNS(t)
	const mac = "02:00:00:00:00:0a"
	testenv.Veth(t, "v0", "v1", mac)
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	links, err := c.Links()
	if err != nil {
		t.Fatal(err)
	}
	var v0 Link
	for _, l := range links {
		if l.MAC.String() == mac {
			v0 = l
		}
	}
	if v0.Name != "v0" || v0.MTU != 1500 || v0.Up() || v0.Index == 0 {
		t.Fatalf("Links() = %+v, want v0 with MAC %s, MTU 1500, down", links, mac)
	}
	if !slices.ContainsFunc(links, func(l Link) bool { return l.Name == "lo" && l.Flags&unix.IFF_LOOPBACK != 0 }) {
		t.Errorf("Links() = %+v, no loopback lo", links)
	}

	if err := c.Rename(v0.Index, "eth7"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMTU(v0.Index, 1400); err != nil {
		t.Fatal(err)
	}
	if err := c.SetUp(v0.Index, true); err != nil {
		t.Fatal(err)
	}
	var ipLinks []struct {
		Ifname  string   `json:"ifname"`
		MTU     int      `json:"mtu"`
		Flags   []string `json:"flags"`
		Address string   `json:"address"`
	}
	ipJSON(t, &ipLinks, "link", "show", "dev", "eth7")
	if len(ipLinks) != 1 || ipLinks[0].MTU != 1400 || ipLinks[0].Address != mac || !slices.Contains(ipLinks[0].Flags, "UP") {
		t.Errorf("after rename, MTU and up: ip link = %+v", ipLinks)
	}
	if err := c.SetUp(v0.Index, false); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMTU(v0.Index, 10); !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetMTU(10) = %v, want EINVAL", err)
	}
	var kerr *Error
	if err := c.Rename(v0.Index, "lo"); !errors.As(err, &kerr) || kerr.Errno != unix.EEXIST {
		t.Errorf("Rename to lo = %v, want an *Error with EEXIST", err)
	}

	p4, p6 := netip.MustParsePrefix("10.9.8.7/24"), netip.MustParsePrefix("fd00:1::7/64")
	for _, p := range []netip.Prefix{p4, p6} {
		if err := c.AddAddress(v0.Index, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AddAddress(v0.Index, p4); !errors.Is(err, unix.EEXIST) {
		t.Errorf("adding %s twice = %v, want EEXIST", p4, err)
	}
	if err := c.SetUp(v0.Index, true); err != nil {
		t.Fatal(err)
	}
	addrs, err := c.Addresses()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{p4, p6} {
		if !slices.Contains(addrs, Address{Index: v0.Index, Prefix: p}) {
			t.Errorf("Addresses() = %v, want %s on link %d", addrs, p, v0.Index)
		}
	}
	var ipAddrs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Broadcast string `json:"broadcast"`
		} `json:"addr_info"`
	}
	ipJSON(t, &ipAddrs, "-4", "address", "show", "dev", "eth7")
	if len(ipAddrs) != 1 || len(ipAddrs[0].AddrInfo) != 1 || ipAddrs[0].AddrInfo[0].Local != "10.9.8.7" ||
		ipAddrs[0].AddrInfo[0].PrefixLen != 24 || ipAddrs[0].AddrInfo[0].Broadcast != "10.9.8.255" {
		t.Errorf("ip -4 address = %+v, want 10.9.8.7/24 brd 10.9.8.255", ipAddrs)
	}

	def4 := Route{Destination: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.9.8.1"), Index: v0.Index}
	def6 := Route{Destination: netip.MustParsePrefix("::/0"), Gateway: netip.MustParseAddr("fd00:1::1")}
	net4 := Route{Destination: netip.MustParsePrefix("192.168.50.0/24"), Index: v0.Index}
	for _, r := range []Route{def4, def6, net4, def4} { // def4 twice: replaced, not refused
		if err := c.ReplaceRoute(r); err != nil {
			t.Fatalf("ReplaceRoute(%s): %v", r, err)
		}
	}
	unreachable := Route{Destination: netip.MustParsePrefix("10.77.0.0/16"), Gateway: netip.MustParseAddr("10.200.0.1")}
	if err := c.ReplaceRoute(unreachable); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("ReplaceRoute via an unreachable gateway = %v, want ENETUNREACH", err)
	}
	routes, err := c.Routes()
	if err != nil {
		t.Fatal(err)
	}
	want6 := def6
	want6.Index = v0.Index
	for _, r := range []Route{def4, want6, net4} {
		if !slices.Contains(routes, r) {
			t.Errorf("Routes() = %v, want %s", routes, r)
		}
	}
	var ipRoutes []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	}
	ipJSON(t, &ipRoutes, "-4", "route", "show", "default")
	if len(ipRoutes) != 1 || ipRoutes[0].Gateway != "10.9.8.1" || ipRoutes[0].Dev != "eth7" {
		t.Errorf("ip -4 route show default = %+v, want one via 10.9.8.1 dev eth7", ipRoutes)
	}

	for _, r := range []Route{def4, def6, net4} {
		if err := c.DeleteRoute(r); err != nil {
			t.Errorf("DeleteRoute(%s): %v", r, err)
		}
	}
	for _, p := range []netip.Prefix{p4, p6} {
		if err := c.DeleteAddress(v0.Index, p); err != nil {
			t.Errorf("DeleteAddress(%s): %v", p, err)
		}
	}
	addrs, _ = c.Addresses()
	routes, _ = c.Routes()
	for _, a := range addrs {
		if a.Index == v0.Index && a.Prefix.Addr().Is4() || a.Prefix == p6 {
			t.Errorf("address %s left after deletion", a.Prefix)
		}
	}
	for _, r := range routes {
		if r.Gateway.IsValid() {
			t.Errorf("route %s left after deletion", r)
		}
	}
}

// TestHardwareAddrCopy: a link's MAC must not alias the receive buffer,
// which the next request reuses.
func TestHardwareAddrCopy(t *testing.T) {
	testenv.NetNS(t)
	testenv.Veth(t, "v0", "v1", "02:00:00:00:00:01")
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := c.Links()
	if err != nil {
		t.Fatal(err)
	}
	macs := map[string]string{}
	for _, l := range first {
		macs[l.Name] = l.MAC.String()
	}
	c.Addresses()
	c.Links()
	for _, l := range first {
		if l.MAC.String() != macs[l.Name] {
			t.Errorf("MAC of %s changed to %s after later requests", l.Name, l.MAC)
		}
	}
}
