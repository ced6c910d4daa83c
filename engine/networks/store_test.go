package networks

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
)

func openStore(t *testing.T, root string, opts DaemonOptions) *Store {
	t.Helper()
	s, err := Open(root, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func ctr(i int) ContainerRef {
	return ContainerRef{ID: fmt.Sprintf("%064x", 0xc0ffee000+i), Name: fmt.Sprintf("c%d", i)}
}

func TestDefaultNetwork(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, DaemonOptions{})
	n, err := s.Get(DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Default || n.Bridge != DefaultBridge || n.Subnet != DefaultSubnet || n.Gateway.String() != "172.30.0.1" || len(n.ID) != 64 || n.MTU != DefaultMTU {
		t.Errorf("default network = %+v", n)
	}
	// Reopening without options keeps it, ID and all.
	s = openStore(t, root, DaemonOptions{})
	if again, _ := s.Get(DefaultName); again.ID != n.ID {
		t.Errorf("reopen made a new default network: %s, was %s", again.ID, n.ID)
	}
	// The daemon's flags change it while it has no containers.
	s = openStore(t, root, DaemonOptions{BIP: "10.20.0.1/24", FixedCIDR: "10.20.0.128/25", MTU: 1400})
	n2, _ := s.Get(DefaultName)
	if n2.ID != n.ID || n2.Subnet.String() != "10.20.0.0/24" || n2.Gateway.String() != "10.20.0.1" || n2.IPRange.String() != "10.20.0.128/25" || n2.MTU != 1400 {
		t.Errorf("default network after --bip = %+v", n2)
	}
	e, err := s.Connect(DefaultName, ctr(1), EndpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.IP.String() != "10.20.0.128" {
		t.Errorf("first address with --fixed-cidr = %s, want 10.20.0.128 (a range's own first address is a host of the subnet)", e.IP)
	}
	// User networks get the daemon's MTU.
	u, err := s.Create(CreateOptions{Name: "u"}, nil)
	if err != nil || u.MTU != 1400 {
		t.Errorf("user network MTU = %d, %v; want 1400", u.MTU, err)
	}
	// Not while a container is on it; but a process without the flags
	// (vmctl serving itself) opens the store as it is.
	if _, err := Open(root, DaemonOptions{BIP: "10.30.0.1/24"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Open with a new --bip and a container on the network = %v, want a failed precondition", err)
	}
	openStore(t, root, DaemonOptions{})
	// A bad flag is refused.
	for _, o := range []DaemonOptions{{BIP: "10.0.0.0"}, {BIP: "10.0.0.0/24"}, {FixedCIDR: "10.0.0.0/24"}, {MTU: 20}} {
		if _, err := Open(t.TempDir(), o); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Open(%+v) = %v, want an invalid-argument error", o, err)
		}
	}
}

func TestAddressPoolsKept(t *testing.T) {
	root := t.TempDir()
	pools := []AddressPool{{Base: netip.MustParsePrefix("10.200.0.0/16"), Size: 24}}
	openStore(t, root, DaemonOptions{AddressPools: pools})
	// A process without the flag cuts subnets from the daemon's pools.
	s := openStore(t, root, DaemonOptions{})
	n, err := s.Create(CreateOptions{Name: "p"}, nil)
	if err != nil || n.Subnet.String() != "10.200.0.0/24" {
		t.Errorf("Create without --subnet = %v, %v; want 10.200.0.0/24", n.Subnet, err)
	}
}

func TestCreateValidation(t *testing.T) {
	s := openStore(t, t.TempDir(), DaemonOptions{})
	if _, err := s.Create(CreateOptions{Name: "one", Subnet: "10.1.0.0/16"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o       CreateOptions
		class   func(error) bool
		message string
	}{
		{CreateOptions{Name: "one"}, errdefs.IsConflict, "network with name one already exists"},
		{CreateOptions{Name: "two", Subnet: "10.1.128.0/24"}, errdefs.IsConflict, "invalid pool request: Pool overlaps with other one on this address space"},
		{CreateOptions{Name: "two", Subnet: "172.30.5.0/24"}, errdefs.IsConflict, "Pool overlaps"},
		{CreateOptions{Name: "two", Subnet: "10.2.0.0/16", Gateway: "10.3.0.1"}, errdefs.IsInvalidArgument, "invalid gateway 10.3.0.1"},
		{CreateOptions{Name: "two", Subnet: "10.2.0.0/16", IPRange: "10.3.0.0/24"}, errdefs.IsInvalidArgument, "invalid ip-range 10.3.0.0/24"},
		{CreateOptions{Name: "two", Subnet: "10.2.0.0/99"}, errdefs.IsInvalidArgument, "invalid subnet 10.2.0.0/99"},
		{CreateOptions{Name: "bridge"}, errdefs.IsPermissionDenied, "operation is not permitted on predefined bridge network"},
		{CreateOptions{Name: "none"}, errdefs.IsPermissionDenied, "predefined none network"},
		{CreateOptions{Name: "a b"}, errdefs.IsInvalidArgument, "invalid network name"},
		{CreateOptions{Name: ""}, errdefs.IsInvalidArgument, "invalid network name"},
		{CreateOptions{Name: "two", Driver: "overlay"}, errdefs.IsInvalidArgument, `network driver "overlay" is not supported`},
		{CreateOptions{Name: "two", Options: map[string]string{OptionMTU: "9x"}}, errdefs.IsInvalidArgument, OptionMTU},
		{CreateOptions{Name: "two", Options: map[string]string{OptionBridgeName: "much-too-long-name"}}, errdefs.IsInvalidArgument, OptionBridgeName},
		{CreateOptions{Name: "two", Options: map[string]string{OptionBridgeName: DefaultBridge}}, errdefs.IsConflict, "already the bridge of network bridge"},
	} {
		_, err := s.Create(tc.o, nil)
		if err == nil || !tc.class(err) || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("Create(%+v) = %v, want %q", tc.o, err, tc.message)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Errorf("after refused creates, List = %v, %v; want bridge and one", list, err)
	}
	// Without --subnet: the pools, skipping the host's routes.
	n, err := s.Create(CreateOptions{Name: "auto", Options: map[string]string{OptionMTU: "1450", "com.example.other": "kept"}},
		[]netip.Prefix{netip.MustParsePrefix("172.16.0.0/13")})
	if err != nil || n.Subnet.String() != "172.24.0.0/16" || n.Gateway.String() != "172.24.0.1" || n.MTU != 1450 ||
		n.Bridge != "br-"+n.ID[:12] || n.Options["com.example.other"] != "kept" {
		t.Errorf("Create(auto) = %+v, %v", n, err)
	}
}

func TestGet(t *testing.T) {
	s := openStore(t, t.TempDir(), DaemonOptions{})
	n, err := s.Create(CreateOptions{Name: "web", Subnet: "10.5.0.0/24"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"web", n.ID, n.ID[:5]} {
		if got, err := s.Get(ref); err != nil || got.ID != n.ID {
			t.Errorf("Get(%q) = %v, %v", ref, got.ID, err)
		}
	}
	if _, err := s.Get("nope"); !errdefs.IsNotFound(err) || err.Error() != "network nope not found" {
		t.Errorf("Get(nope) = %v", err)
	}
	// A name wins over an ID prefix.
	m, err := s.Create(CreateOptions{Name: n.ID[:4], Subnet: "10.6.0.0/24"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(n.ID[:4]); got.ID != m.ID {
		t.Errorf("Get(name that is also an ID prefix) = %s, want the named network", got.Name)
	}
}

func TestConnectAllocates(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, DaemonOptions{})
	n, err := s.Create(CreateOptions{Name: "small", Subnet: "10.9.0.0/29"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A requested address is honoured...
	e, err := s.Connect("small", ctr(0), EndpointOptions{IP: netip.MustParseAddr("10.9.0.4"), Aliases: []string{"db"}})
	if err != nil || e.IP.String() != "10.9.0.4" || !e.StaticIP || e.MAC.String() != "02:42:0a:09:00:04" || e.Slot != 0 {
		t.Fatalf("Connect(--ip) = %+v, %v", e, err)
	}
	// ...and refused when taken, outside the subnet or the gateway.
	for _, ip := range []string{"10.9.0.4", "10.9.0.1", "10.9.1.4", "10.9.0.7"} {
		if _, err := s.Connect("small", ctr(99), EndpointOptions{IP: netip.MustParseAddr(ip)}); err == nil {
			t.Errorf("Connect(--ip %s) succeeded", ip)
		}
	}
	if _, err := s.Connect("small", ctr(0), EndpointOptions{}); !errdefs.IsConflict(err) {
		t.Errorf("second Connect of one container = %v, want a conflict", err)
	}
	// Reopening keeps every allocation (persistence).
	s = openStore(t, root, DaemonOptions{})
	var got []string
	for i := 1; ; i++ {
		e, err := s.Connect(n.ID, ctr(i), EndpointOptions{})
		if err != nil {
			if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "no available IPv4 addresses on this network's address pools: small") {
				t.Errorf("Connect when full = %v", err)
			}
			break
		}
		got = append(got, e.IP.String())
	}
	if want := "10.9.0.2 10.9.0.3 10.9.0.5 10.9.0.6"; strings.Join(got, " ") != want {
		t.Errorf("addresses = %v, want %s", got, want)
	}
	// Releasing frees the address; next fit hands out the one after the
	// last first, wrapping to the freed one.
	if _, err := s.Release(ctr(2).ID); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Connect("small", ctr(50), EndpointOptions{}); err != nil || e.IP.String() != "10.9.0.3" {
		t.Errorf("Connect after release = %v, %v; want 10.9.0.3", e.IP, err)
	}
	// The default network takes neither --ip nor aliases, as dockerd.
	if _, err := s.Connect(DefaultName, ctr(60), EndpointOptions{IP: netip.MustParseAddr("172.30.0.9")}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Connect(bridge, --ip) = %v", err)
	}
	if _, err := s.Connect(DefaultName, ctr(60), EndpointOptions{Aliases: []string{"x"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Connect(bridge, --alias) = %v", err)
	}
	if _, err := s.Connect(DefaultName, ctr(60), EndpointOptions{MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Connect(multicast MAC) = %v", err)
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	e, err = s.Connect(DefaultName, ctr(60), EndpointOptions{MAC: mac})
	if err != nil || e.MAC.String() != mac.String() || !e.StaticMAC {
		t.Errorf("Connect(--mac-address) = %+v, %v", e, err)
	}
}

func TestEndpointsAndRemove(t *testing.T) {
	s := openStore(t, t.TempDir(), DaemonOptions{})
	a, _ := s.Create(CreateOptions{Name: "a", Subnet: "10.1.0.0/24"}, nil)
	if _, err := s.Create(CreateOptions{Name: "b", Subnet: "10.2.0.0/24"}, nil); err != nil {
		t.Fatal(err)
	}
	c := ctr(1)
	for _, net := range []string{"bridge", "a", "b"} {
		if _, err := s.Connect(net, c, EndpointOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Disconnect("bridge", c.ID); err != nil {
		t.Fatal(err)
	}
	// The freed slot is taken first.
	if e, err := s.Connect("bridge", c, EndpointOptions{}); err != nil || e.Slot != 0 {
		t.Errorf("reconnect slot = %d, %v; want 0", e.Slot, err)
	}
	eps, err := s.ContainerEndpoints(c.ID)
	if err != nil || len(eps) != 3 || eps[0].Slot != 0 || eps[1].NetworkID != a.ID || eps[2].Slot != 2 {
		t.Errorf("ContainerEndpoints = %+v, %v", eps, err)
	}
	if _, err := s.Disconnect("a", ctr(2).ID); !errdefs.IsNotFound(err) {
		t.Errorf("Disconnect of a container not connected = %v", err)
	}
	if _, err := s.Remove("a"); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "has active endpoints") {
		t.Errorf("Remove with an endpoint = %v", err)
	}
	if _, err := s.Remove("bridge"); !errdefs.IsPermissionDenied(err) || err.Error() != "bridge is a pre-defined network and cannot be removed" {
		t.Errorf("Remove(bridge) = %v", err)
	}
	// Plumbing is recorded per endpoint.
	eps[1].Tap, eps[1].Ports = TapName(c.ID, 1), []PortBinding{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}}
	if err := s.SetPlumbing(eps[1:2]); err != nil {
		t.Fatal(err)
	}
	all, _ := s.Endpoints()
	plumbed := 0
	for _, e := range all {
		if e.Plumbed() {
			plumbed++
			if e.NetworkID != a.ID || len(e.Ports) != 1 || e.Ports[0].HostPort != 8080 {
				t.Errorf("plumbed endpoint = %+v", e)
			}
		}
	}
	if plumbed != 1 {
		t.Errorf("%d plumbed endpoints, want 1", plumbed)
	}
	// Settings live with the container until its release.
	err = s.UpdateSettings(c.ID, func(st *Settings) error {
		st.Ports = []PortBinding{{Proto: "udp", ContainerPort: 53}}
		st.DNS.Hostname = "h"
		return nil
	})
	if st, _ := s.Settings(c.ID); err != nil || st.DNS.Hostname != "h" || len(st.Ports) != 1 {
		t.Errorf("Settings = %+v, %v", st, err)
	}
	gone, err := s.Release(c.ID)
	if err != nil || len(gone) != 3 {
		t.Errorf("Release = %d endpoints, %v", len(gone), err)
	}
	if st, _ := s.Settings(c.ID); len(st.Ports) != 0 || st.DNS.Hostname != "" {
		t.Errorf("settings after Release = %+v", st)
	}
	if eps, _ := s.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints after Release: %+v", eps)
	}
	if _, err := s.Remove(a.ID[:8]); err != nil {
		t.Errorf("Remove after release: %v", err)
	}
	// By ID: "a" alone could be a prefix of another network's random ID.
	if _, err := s.Get(a.ID); !errdefs.IsNotFound(err) {
		t.Errorf("Get after Remove = %v", err)
	}
	// Its subnet and name are free again.
	if _, err := s.Create(CreateOptions{Name: "a", Subnet: "10.1.0.0/24"}, nil); err != nil {
		t.Errorf("re-create: %v", err)
	}
}

// TestConcurrentAllocation allocates from two stores on one root, as two
// processes would (each with its own lock file description), and from
// several goroutines in each: every address is handed out once.
func TestConcurrentAllocation(t *testing.T) {
	root := t.TempDir()
	s1 := openStore(t, root, DaemonOptions{})
	s2 := openStore(t, root, DaemonOptions{})
	if _, err := s1.Create(CreateOptions{Name: "n", Subnet: "10.7.0.0/24"}, nil); err != nil {
		t.Fatal(err)
	}
	const perWorker = 15
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := 0; w < 8; w++ {
		s := s1
		if w%2 == 1 {
			s = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				c := ctr(w*100 + i)
				e, err := s.Connect("n", c, EndpointOptions{})
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				if other, dup := seen[e.IP]; dup {
					errc <- fmt.Errorf("%s handed to %s and %s", e.IP, other, c.Name)
				}
				seen[e.IP] = c.Name
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if len(seen) != 8*perWorker {
		t.Errorf("%d addresses handed out, want %d", len(seen), 8*perWorker)
	}
}
