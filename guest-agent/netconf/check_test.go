package netconf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func eth0(addrs ...string) Interface {
	return Interface{MAC: "02:42:ac:1e:00:02", Name: "eth0", Addresses: addrs}
}

func TestCheckRejects(t *testing.T) {
	many := func(n int, f func(i int) string) []string {
		var s []string
		for i := range n {
			s = append(s, f(i))
		}
		return s
	}
	tests := []struct {
		name string
		req  Request
		want string // part of the error
	}{
		{"bad MAC", Request{Interfaces: []Interface{{MAC: "02:42:zz:1e:00:02", Name: "eth0"}}}, "not an Ethernet address"},
		{"long MAC", Request{Interfaces: []Interface{{MAC: "02:42:ac:1e:00:02:00:01", Name: "eth0"}}}, "not an Ethernet address"},
		{"multicast MAC", Request{Interfaces: []Interface{{MAC: "01:00:5e:00:00:01", Name: "eth0"}}}, "not a unicast"},
		{"zero MAC", Request{Interfaces: []Interface{{MAC: "00:00:00:00:00:00", Name: "eth0"}}}, "not a unicast"},
		{"empty name", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01"}}}, "must be 1 to 15 bytes"},
		{"long name", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "abcdefghijklmnop"}}}, "must be 1 to 15 bytes"},
		{"name lo", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "lo"}}}, "not lo"},
		{"name with slash", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "a/b"}}}, "contains"},
		{"name with space", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "a b"}}}, "contains"},
		{"name with newline", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "a\nb"}}}, "contains"},
		{"address without prefix", Request{Interfaces: []Interface{eth0("10.0.0.2")}}, "not an address with a prefix length"},
		{"malformed address", Request{Interfaces: []Interface{eth0("10.0.0.300/24")}}, "not an address with a prefix length"},
		{"prefix too long", Request{Interfaces: []Interface{eth0("10.0.0.2/33")}}, "not an address with a prefix length"},
		{"zone", Request{Interfaces: []Interface{eth0("fe80::1%eth0/64")}}, "not an address with a prefix length"},
		{"mapped", Request{Interfaces: []Interface{eth0("::ffff:10.0.0.2/120")}}, "IPv4 mapped"},
		{"unspecified", Request{Interfaces: []Interface{eth0("0.0.0.0/8")}}, "cannot be"},
		{"multicast", Request{Interfaces: []Interface{eth0("224.0.0.1/24")}}, "cannot be"},
		{"loopback", Request{Interfaces: []Interface{eth0("127.0.0.2/8")}}, "cannot be"},
		{"prefix 0", Request{Interfaces: []Interface{eth0("10.0.0.2/0")}}, "prefix length 0"},
		{"MTU too small", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "eth0", MTU: 67}}}, "MTU 67"},
		{"MTU too large", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "eth0", MTU: 65536}}}, "MTU 65536"},
		{"MTU too small for IPv6", Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:01", Name: "eth0", MTU: 1000,
			Addresses: []string{"fd00::2/64"}}}}, "below IPv6"},
		{"same MAC twice", Request{Interfaces: []Interface{eth0(), {MAC: "02:42:AC:1E:00:02", Name: "eth1"}}}, "listed twice"},
		{"same name twice", Request{Interfaces: []Interface{eth0(), {MAC: "02:00:00:00:00:09", Name: "eth0"}}}, "listed twice"},
		{"same address twice", Request{Interfaces: []Interface{eth0("10.0.0.2/24"), {MAC: "02:00:00:00:00:09", Name: "eth1",
			Addresses: []string{"10.0.0.2/16"}}}}, "listed twice"},
		{"too many interfaces", Request{Interfaces: func() []Interface {
			var s []Interface
			for i := range maxInterfaces + 1 {
				s = append(s, Interface{MAC: fmt.Sprintf("02:00:00:00:00:%02x", i+1), Name: fmt.Sprintf("eth%d", i)})
			}
			return s
		}()}, "interfaces, at most"},
		{"too many addresses", Request{Interfaces: []Interface{eth0(many(maxAddresses+1, func(i int) string {
			return fmt.Sprintf("10.0.%d.2/24", i)
		})...)}}, "addresses, at most"},
		{"too many routes", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: func() []Route {
			var s []Route
			for i := range maxRoutes + 1 {
				s = append(s, Route{Destination: fmt.Sprintf("10.%d.0.0/16", i+1), Device: "eth0"})
			}
			return s
		}()}, "routes, at most"},
		{"gateway unreachable", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: []Route{{Gateway: "10.0.1.1"}}}, "unreachable"},
		{"gateway unreachable on its device", Request{
			Interfaces: []Interface{eth0("10.0.0.2/24"), {MAC: "02:00:00:00:00:09", Name: "eth1", Addresses: []string{"10.1.0.2/24"}}},
			Routes:     []Route{{Gateway: "10.1.0.1", Device: "eth0"}}}, "unreachable"},
		{"gateway is our address", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: []Route{{Gateway: "10.0.0.2"}}}, "itself"},
		{"gateway malformed", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: []Route{{Gateway: "10.0.0"}}}, "not an IP address"},
		{"gateway unspecified", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: []Route{{Gateway: "0.0.0.0"}}}, "cannot be a next hop"},
		{"gateway of another family", Request{Interfaces: []Interface{eth0("10.0.0.2/24")},
			Routes: []Route{{Destination: "fd00:9::/64", Gateway: "10.0.0.1"}}}, "family"},
		{"no gateway nor device", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: []Route{{Destination: "10.9.0.0/16"}}}, "neither"},
		{"unknown device", Request{Interfaces: []Interface{eth0("10.0.0.2/24")}, Routes: []Route{{Device: "eth9"}}}, "not an interface of the request"},
		{"destination with host bits", Request{Interfaces: []Interface{eth0("10.0.0.2/24")},
			Routes: []Route{{Destination: "10.9.0.1/16", Device: "eth0"}}}, "host bits"},
		{"destination malformed", Request{Interfaces: []Interface{eth0("10.0.0.2/24")},
			Routes: []Route{{Destination: "10.9.0.0", Device: "eth0"}}}, "not a network"},
		{"two default routes", Request{Interfaces: []Interface{eth0("10.0.0.2/24")},
			Routes: []Route{{Gateway: "10.0.0.1"}, {Destination: "0.0.0.0/0", Gateway: "10.0.0.3"}}}, "two routes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.req)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check() = %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
}

func TestCheckPlans(t *testing.T) {
	req := Request{
		Interfaces: []Interface{
			{MAC: "02:42:AC:1E:00:02", Name: "eth0", Addresses: []string{"172.30.0.2/16", "fd00:30::2/64"}, MTU: 1400},
			{MAC: "02:00:00:00:00:09", Name: "eth1", Addresses: []string{"10.1.0.2/24"}},
		},
		Routes: []Route{
			{Gateway: "172.30.0.1"},
			{Gateway: "fd00:30::1"},
			{Destination: "10.50.0.0/16", Gateway: "10.1.0.1"},
			{Destination: "192.168.7.0/24", Device: "eth1"},
		},
	}
	p, err := check(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ifaces) != 2 || p.ifaces[0].mac.String() != "02:42:ac:1e:00:02" || p.ifaces[0].mtu != 1400 ||
		len(p.ifaces[0].addrs) != 2 || p.ifaces[0].addrs[0] != netip.MustParsePrefix("172.30.0.2/16") {
		t.Errorf("interfaces = %+v", p.ifaces)
	}
	want := []plannedRoute{
		{dst: netip.MustParsePrefix("0.0.0.0/0"), gw: netip.MustParseAddr("172.30.0.1"), iface: 0},
		{dst: netip.MustParsePrefix("::/0"), gw: netip.MustParseAddr("fd00:30::1"), iface: 0},
		{dst: netip.MustParsePrefix("10.50.0.0/16"), gw: netip.MustParseAddr("10.1.0.1"), iface: 1},
		{dst: netip.MustParsePrefix("192.168.7.0/24"), iface: 1},
	}
	if len(p.routes) != len(want) {
		t.Fatalf("routes = %+v, want %+v", p.routes, want)
	}
	for i, r := range want {
		if p.routes[i] != r {
			t.Errorf("route %d = %+v, want %+v", i, p.routes[i], r)
		}
	}
	// Neither destination nor gateway: an IPv4 default route on the link.
	p, err = check(Request{Interfaces: req.Interfaces, Routes: []Route{{Device: "eth1"}}})
	if err != nil || len(p.routes) != 1 || p.routes[0] != (plannedRoute{dst: netip.MustParsePrefix("0.0.0.0/0"), iface: 1}) {
		t.Errorf("device-only default route = %+v, %v", p.routes, err)
	}
}

// FuzzCheck: no request may panic the checker, and whatever it accepts
// is within its limits.
func FuzzCheck(f *testing.F) {
	f.Add("02:42:ac:1e:00:02", "eth0", "172.30.0.2/16", uint32(1500), "", "172.30.0.1", "")
	f.Add("02:42:ac:1e:00:02", "eth0", "fd00::2/64", uint32(1280), "fd01::/64", "fd00::1", "eth0")
	f.Add("zz", "", "x", uint32(0), "y", "z", "w")
	f.Fuzz(func(t *testing.T, mac, name, addr string, mtu uint32, dst, gw, dev string) {
		p, err := check(Request{
			Interfaces: []Interface{{MAC: mac, Name: name, Addresses: []string{addr}, MTU: mtu}},
			Routes:     []Route{{Destination: dst, Gateway: gw, Device: dev}},
		})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("check error %v is not ErrInvalid", err)
			}
			return
		}
		if len(p.ifaces[0].name) > 15 || p.ifaces[0].mtu != 0 && p.ifaces[0].mtu < minMTU {
			t.Fatalf("check accepted %+v", p.ifaces[0])
		}
		if r := p.routes[0]; r.iface != 0 {
			t.Fatalf("route %+v not on the request's interface", r)
		}
	})
}
