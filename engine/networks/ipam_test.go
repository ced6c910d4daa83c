package networks

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseAddressing(t *testing.T) {
	for _, tc := range []struct {
		subnet, gateway, ipRange string
		wantSubnet, wantGateway  string
		wantRange                string
		wantErr                  string // substring; "" for success
	}{
		{subnet: "", wantSubnet: "invalid Prefix"},
		{subnet: "10.1.0.0/16", wantSubnet: "10.1.0.0/16", wantGateway: "10.1.0.1"},
		{subnet: "10.1.0.0/16", gateway: "10.1.255.254", wantSubnet: "10.1.0.0/16", wantGateway: "10.1.255.254"},
		{subnet: "10.1.0.0/16", ipRange: "10.1.4.0/24", wantSubnet: "10.1.0.0/16", wantGateway: "10.1.0.1", wantRange: "10.1.4.0/24"},
		{subnet: "10.1.0.0/30", wantSubnet: "10.1.0.0/30", wantGateway: "10.1.0.1"},
		{subnet: "10.1.0.0", wantErr: "invalid network config: invalid subnet 10.1.0.0: invalid CIDR block notation"},
		{subnet: "10.1.0.0/33", wantErr: "invalid subnet 10.1.0.0/33: invalid CIDR block notation"},
		{subnet: "banana", wantErr: "invalid subnet banana: invalid CIDR block notation"},
		{subnet: "10.1.2.3/16", wantErr: "invalid subnet 10.1.2.3/16: it should be 10.1.0.0/16"},
		{subnet: "fd00::/64", wantErr: "only IPv4 subnets are supported"},
		{subnet: "10.1.0.0/31", wantErr: "invalid subnet 10.1.0.0/31: it holds no address for a container"},
		{subnet: "10.1.0.0/16", gateway: "10.2.0.1", wantErr: "invalid gateway 10.2.0.1: parent subnet 10.1.0.0/16 doesn't contain this address"},
		{subnet: "10.1.0.0/16", gateway: "10.1.0.0", wantErr: "invalid gateway 10.1.0.0: it is the network or broadcast address"},
		{subnet: "10.1.0.0/16", gateway: "10.1.255.255", wantErr: "it is the network or broadcast address"},
		{subnet: "10.1.0.0/16", gateway: "ten", wantErr: "invalid gateway ten: invalid address"},
		{subnet: "10.1.0.0/16", ipRange: "10.2.0.0/24", wantErr: "invalid ip-range 10.2.0.0/24: parent subnet 10.1.0.0/16 doesn't contain ip-range"},
		{subnet: "10.1.0.0/16", ipRange: "10.0.0.0/8", wantErr: "invalid ip-range 10.0.0.0/8: CIDR block is bigger than its parent subnet 10.1.0.0/16"},
		{subnet: "10.1.0.0/16", ipRange: "10.1.0.7/24", wantErr: "invalid ip-range 10.1.0.7/24: it should be 10.1.0.0/24"},
		{subnet: "10.1.0.0/16", ipRange: "x", wantErr: "invalid ip-range x: invalid CIDR block notation"},
		{subnet: "10.1.0.0/24", gateway: "10.1.0.1", ipRange: "10.1.0.0/31", wantErr: "invalid ip-range 10.1.0.0/31: it holds no address for a container"},
		// Every problem is reported at once, as dockerd does.
		{subnet: "10.1.0.0/16", gateway: "10.9.0.1", ipRange: "10.8.0.0/24", wantErr: "ip-range 10.8.0.0/24: parent subnet 10.1.0.0/16 doesn't contain ip-range; invalid gateway 10.9.0.1"},
		{gateway: "10.1.0.1", wantErr: "needs a subnet"},
	} {
		a, err := parseAddressing(tc.subnet, tc.gateway, tc.ipRange)
		name := tc.subnet + "," + tc.gateway + "," + tc.ipRange
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("parseAddressing(%s) = %v, want an invalid-argument error containing %q", name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseAddressing(%s): %v", name, err)
			continue
		}
		if a.subnet.String() != tc.wantSubnet || (tc.wantGateway != "" && a.gateway.String() != tc.wantGateway) ||
			(tc.wantRange != "" && a.ipRange.String() != tc.wantRange) || (tc.wantRange == "" && a.ipRange.IsValid()) {
			t.Errorf("parseAddressing(%s) = %v %v %v, want %s %s %s", name, a.subnet, a.gateway, a.ipRange, tc.wantSubnet, tc.wantGateway, tc.wantRange)
		}
	}
}

func TestChooseSubnet(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	pools := []AddressPool{{Base: p("10.10.0.0/16"), Size: 24}, {Base: p("192.168.0.0/23"), Size: 24}}
	for _, tc := range []struct {
		taken []netip.Prefix
		want  string
	}{
		{nil, "10.10.0.0/24"},
		{[]netip.Prefix{p("10.10.0.0/24"), p("10.10.1.128/25")}, "10.10.2.0/24"},
		// A host route that covers the whole first pool moves to the next.
		{[]netip.Prefix{p("10.0.0.0/8")}, "192.168.0.0/24"},
		{[]netip.Prefix{p("10.0.0.0/8"), p("192.168.0.5/32")}, "192.168.1.0/24"},
		{[]netip.Prefix{p("10.0.0.0/8"), p("192.168.0.0/16")}, ""},
	} {
		got, err := chooseSubnet(pools, tc.taken)
		if tc.want == "" {
			if !errdefs.IsUnavailable(err) {
				t.Errorf("chooseSubnet(%v) = %v, %v; want an unavailable error", tc.taken, got, err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("chooseSubnet(%v) = %v, %v; want %s", tc.taken, got, err, tc.want)
		}
	}
	// dockerd's defaults start at 172.17.0.0/16 and skip the default
	// network's subnet.
	got, err := chooseSubnet(DefaultAddressPools, []netip.Prefix{DefaultSubnet, p("172.17.0.0/16")})
	if err != nil || got != p("172.18.0.0/16") {
		t.Errorf("chooseSubnet(defaults) = %v, %v; want 172.18.0.0/16", got, err)
	}
}

func TestNextFree(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	n := &Network{Subnet: netip.MustParsePrefix("10.0.0.0/29"), Gateway: a("10.0.0.1")}
	taken := map[netip.Addr]bool{}
	isTaken := func(x netip.Addr) bool { return taken[x] }
	var got []string
	var last netip.Addr
	for {
		x, ok := nextFree(n, last, isTaken)
		if !ok {
			break
		}
		taken[x], last = true, x
		got = append(got, x.String())
	}
	// Never the network address, the gateway or the broadcast address.
	if want := "10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6"; strings.Join(got, " ") != want {
		t.Errorf("allocation order = %v, want %s", got, want)
	}
	// Next fit: after freeing .3 with .6 handed out last, .3 comes back
	// (wrapping); after freeing .3 and .5, .5 comes first when the last
	// was .4.
	delete(taken, a("10.0.0.3"))
	if x, ok := nextFree(n, a("10.0.0.6"), isTaken); !ok || x != a("10.0.0.3") {
		t.Errorf("after wrap: %v %v, want 10.0.0.3", x, ok)
	}
	delete(taken, a("10.0.0.5"))
	if x, ok := nextFree(n, a("10.0.0.4"), isTaken); !ok || x != a("10.0.0.5") {
		t.Errorf("next fit: %v %v, want 10.0.0.5", x, ok)
	}
	// A range: only its addresses, still never the reserved ones.
	r := &Network{Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: a("10.0.0.1"), IPRange: netip.MustParsePrefix("10.0.0.0/30")}
	if x, ok := nextFree(r, netip.Addr{}, func(netip.Addr) bool { return false }); !ok || x != a("10.0.0.2") {
		t.Errorf("range: %v %v, want 10.0.0.2", x, ok)
	}
	if x, ok := nextFree(r, netip.Addr{}, func(y netip.Addr) bool { return y == a("10.0.0.2") || y == a("10.0.0.3") }); ok {
		t.Errorf("full range handed out %v", x)
	}
}

func TestCheckRequested(t *testing.T) {
	n := &Network{Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
		IPRange: netip.MustParsePrefix("10.0.0.128/25")}
	for _, tc := range []struct {
		ip    string
		class func(error) bool
	}{
		{"10.0.0.5", nil}, // outside the range but inside the subnet: allowed, as dockerd
		{"10.0.0.200", nil},
		{"10.0.1.5", errdefs.IsInvalidArgument},
		{"10.0.0.1", errdefs.IsConflict},
		{"10.0.0.0", errdefs.IsInvalidArgument},
		{"10.0.0.255", errdefs.IsInvalidArgument},
	} {
		err := checkRequested(n, netip.MustParseAddr(tc.ip))
		if (tc.class == nil) != (err == nil) || (tc.class != nil && !tc.class(err)) {
			t.Errorf("checkRequested(%s) = %v", tc.ip, err)
		}
	}
}

func TestParseAddressPool(t *testing.T) {
	p, err := ParseAddressPool("base=10.10.0.0/16,size=24")
	if err != nil || p.Base.String() != "10.10.0.0/16" || p.Size != 24 {
		t.Errorf("ParseAddressPool = %v, %v", p, err)
	}
	for _, bad := range []string{"", "base=10.10.0.0/16", "size=24", "base=10.10.0.1/16,size=24", "base=10.10.0.0/16,size=8",
		"base=10.10.0.0/16,size=31", "base=fd00::/8,size=64", "base=10.10.0.0/16,size=x", "base=10.10.0.0/16,size=24,color=red"} {
		if _, err := ParseAddressPool(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseAddressPool(%q) = %v, want an invalid-argument error", bad, err)
		}
	}
}

func TestTapName(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for slot, want := range map[int]string{0: "vt0123456789ab", 1: "vt0123456789ab1", 10: "vt0123456789aba", 35: "vt0123456789abz"} {
		got := TapName(id, slot)
		if got != want || len(got) > 15 || !IsTapName(got) {
			t.Errorf("TapName(slot %d) = %q (IsTapName %v), want %q", slot, got, IsTapName(got), want)
		}
	}
	for _, other := range []string{"vt0123456789a", "vt0123456789ab0", "vt0123456789aB", "veth0123456789", "vmctl0", "vt0123456789abZ", "xx0123456789ab"} {
		if IsTapName(other) {
			t.Errorf("IsTapName(%q) = true", other)
		}
	}
}

func TestMACFor(t *testing.T) {
	if got := MACFor(netip.MustParseAddr("172.30.0.2")); string(got) != "\x02\x42\xac\x1e\x00\x02" {
		t.Errorf("MACFor = % x", got)
	}
}
