package netconf

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

// ipState is iproute2's view of the namespace, for comparisons.
func ipState(t *testing.T) string {
	t.Helper()
	var out []string
	for _, args := range [][]string{
		{"-o", "link", "show"},
		{"-o", "address", "show"},
		{"route", "show", "table", "main"},
		{"-6", "route", "show", "table", "main"},
	} {
		b, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		out = append(out, string(b))
	}
	return strings.Join(out, "\n")
}

type ipLink struct {
	Name     string   `json:"ifname"`
	MTU      int      `json:"mtu"`
	Flags    []string `json:"flags"`
	Address  string   `json:"address"`
	AddrInfo []struct {
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func ipLinks(t *testing.T) map[string]ipLink {
	t.Helper()
	b, err := exec.Command("ip", "-j", "address", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var links []ipLink
	if err := json.Unmarshal(b, &links); err != nil {
		t.Fatal(err)
	}
	m := map[string]ipLink{}
	for _, l := range links {
		m[l.Name] = l
	}
	return m
}

func (l ipLink) has(addr string) bool {
	for _, a := range l.AddrInfo {
		if a.Local+"/"+strconv.Itoa(a.PrefixLen) == addr {
			return true
		}
	}
	return false
}

// TestConfigureKernel configures a real namespace the way a guest boots:
// two NICs probed in the other order than the host names them.
func TestConfigureKernel(t *testing.T) {
	testenv.NetNS(t)
	testenv.Veth(t, "eth1", "peer1", "02:42:ac:1e:00:02") // must become eth0
	testenv.Veth(t, "eth0", "peer0", "02:42:ac:1e:00:03") // must become eth1
	if out, err := exec.Command("ip", "link", "set", "eth0", "up").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	req := Request{
		Interfaces: []Interface{
			{MAC: "02:42:ac:1e:00:02", Name: "eth0", Addresses: []string{"172.30.0.2/16", "fd00:30::2/64"}, MTU: 1400},
			{MAC: "02:42:AC:1E:00:03", Name: "eth1", Addresses: []string{"10.1.0.2/24"}},
		},
		Routes: []Route{
			{Gateway: "172.30.0.1"},
			{Gateway: "fd00:30::1"},
			{Destination: "10.50.0.0/16", Gateway: "10.1.0.1", Device: "eth1"},
			{Destination: "192.168.7.0/24", Device: "eth1"},
		},
	}
	if err := Configure(req); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	links := ipLinks(t)
	e0, e1, lo := links["eth0"], links["eth1"], links["lo"]
	if e0.Address != "02:42:ac:1e:00:02" || e0.MTU != 1400 || !slices.Contains(e0.Flags, "UP") ||
		!e0.has("172.30.0.2/16") || !e0.has("fd00:30::2/64") {
		t.Errorf("eth0 = %+v", e0)
	}
	if e1.Address != "02:42:ac:1e:00:03" || e1.MTU != 1500 || !slices.Contains(e1.Flags, "UP") || !e1.has("10.1.0.2/24") {
		t.Errorf("eth1 = %+v", e1)
	}
	if !slices.Contains(lo.Flags, "UP") || !lo.has("127.0.0.1/8") {
		t.Errorf("lo = %+v, want up with 127.0.0.1/8", lo)
	}
	routes := ipState(t)
	for _, want := range []string{
		"default via 172.30.0.1 dev eth0", "default via fd00:30::1 dev eth0",
		"10.50.0.0/16 via 10.1.0.1 dev eth1", "192.168.7.0/24 dev eth1 scope link",
	} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}

	// The host retries: nothing changes.
	before := ipState(t)
	if err := Configure(req); err != nil {
		t.Fatalf("repeated Configure: %v", err)
	}
	if after := ipState(t); after != before {
		t.Errorf("a repeated request changed the namespace:\n%s\nwas\n%s", after, before)
	}
}

// TestConfigureKernelUndo: the kernel refuses the last address of a
// request (IPv6 is off on that link), after interfaces were renamed,
// resized, addressed and brought up: the namespace must be as before.
func TestConfigureKernelUndo(t *testing.T) {
	testenv.NetNS(t)
	testenv.Veth(t, "eth1", "peer1", "02:42:ac:1e:00:02")
	testenv.Veth(t, "eth0", "peer0", "02:42:ac:1e:00:03")
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", []byte("1"), 0); err != nil {
		t.Fatalf("disable IPv6 on eth0: %v", err)
	}
	initial := ipState(t)
	err := Configure(Request{
		Interfaces: []Interface{
			{MAC: "02:42:ac:1e:00:02", Name: "eth0", Addresses: []string{"172.30.0.2/16"}, MTU: 1400},
			{MAC: "02:42:ac:1e:00:03", Name: "eth1", Addresses: []string{"10.1.0.2/24", "fd00:31::2/64"}},
		},
		Routes: []Route{{Gateway: "172.30.0.1"}},
	})
	if err == nil {
		t.Fatal("Configure succeeded with an address the kernel refuses")
	}
	t.Logf("Configure = %v", err)
	if after := ipState(t); after != initial {
		t.Errorf("a refused request left:\n%s\nwas\n%s", after, initial)
	}
}
