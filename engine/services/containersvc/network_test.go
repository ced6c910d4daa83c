package containersvc

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// fakeNetwork gives every container the same plumbing, or fails.
type fakeNetwork struct {
	plumbing   Plumbing
	plumbErr   error
	joinErr    error
	releaseErr error
	mu         sync.Mutex
	plumbed    []string
	unplumbed  []string
	renamed    []string
	joined     map[string][]NetworkJoin // by container ID
	released   []string
}

func (n *fakeNetwork) Join(_ context.Context, c *Container, joins []NetworkJoin) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.joinErr != nil {
		return n.joinErr
	}
	if n.joined == nil {
		n.joined = map[string][]NetworkJoin{}
	}
	n.joined[c.ID] = joins
	return nil
}

func (n *fakeNetwork) Release(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.releaseErr != nil {
		return n.releaseErr
	}
	n.released = append(n.released, id)
	delete(n.joined, id)
	return nil
}

func (n *fakeNetwork) Plumb(_ context.Context, id string) (Plumbing, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.plumbed = append(n.plumbed, id)
	return n.plumbing, n.plumbErr
}

func (n *fakeNetwork) Unplumb(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unplumbed = append(n.unplumbed, id)
	return nil
}
func (n *fakeNetwork) Rename(_ context.Context, id, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.renamed = append(n.renamed, id+" "+name)
	return nil
}

// networkAgent is bootAgent with ConfigureNetwork.
type networkAgent struct {
	*bootAgent
	err error
}

func (a *networkAgent) ConfigureNetwork(_ context.Context, ifaces []agent.Interface, routes []agent.Route) error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	a.f.calls = append(a.f.calls, "configure network")
	a.f.ifaces = append(a.f.ifaces, ifaces)
	a.f.routes = append(a.f.routes, routes)
	return a.err
}

func networkFixture(t *testing.T, configureErr error) (*bootFixture, *fakeNetwork) {
	f := newBootFixture(t)
	n := &fakeNetwork{plumbing: Plumbing{
		NICs: []sandbox.NIC{{Tap: "vt0123456789ab", MAC: net.HardwareAddr{2, 0x42, 0xac, 0x1e, 0, 2}, MTU: 1500}},
		Interfaces: []agent.Interface{{MAC: net.HardwareAddr{2, 0x42, 0xac, 0x1e, 0, 2}, Name: contract.InterfaceName(0),
			Addresses: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/16")}}},
		Routes:     []agent.Route{{Gateway: netip.MustParseAddr("172.30.0.1")}},
		Hosts:      "172.30.0.2\tweb\n",
		ResolvConf: "nameserver 172.30.0.1\n",
	}}
	f.svc.cfg.Network = n
	f.svc.newAgent = func(conn net.Conn) guestAgent {
		return &networkAgent{bootAgent: &bootAgent{f: f, conn: conn}, err: configureErr}
	}
	return f, n
}

// TestStartPlumbsNetwork: a start takes the run's network from the
// network service, gives the VM its NICs, has the agent configure them
// before the container is created in the guest's namespace, and releases
// the network when the VM is gone.
func TestStartPlumbsNetwork(t *testing.T) {
	f, n := networkFixture(t, nil)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "web", Hostname: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.run(c.ID); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !reflect.DeepEqual(n.plumbed, []string{c.ID}) || !reflect.DeepEqual(n.unplumbed, []string{c.ID}) {
		t.Errorf("plumbed %v, unplumbed %v; want the container once each", n.plumbed, n.unplumbed)
	}
	if len(f.starts) != 1 || !reflect.DeepEqual(f.starts[0].NICs, n.plumbing.NICs) {
		t.Errorf("VM NICs = %+v, want %+v", f.starts, n.plumbing.NICs)
	}
	if !reflect.DeepEqual(f.calls, []string{"configure network", "create"}) {
		t.Errorf("agent calls = %v, want the network configured before the create", f.calls)
	}
	if !reflect.DeepEqual(f.ifaces, [][]agent.Interface{n.plumbing.Interfaces}) || !reflect.DeepEqual(f.routes, [][]agent.Route{n.plumbing.Routes}) {
		t.Errorf("ConfigureNetwork got %+v, %+v", f.ifaces, f.routes)
	}
	want := agent.ContainerNetwork{Hosts: n.plumbing.Hosts, ResolvConf: n.plumbing.ResolvConf, HostnameFile: "web\n", ShareGuestNetwork: true}
	if len(f.networks) != 1 || f.networks[0] != want {
		t.Errorf("CreateContainer network = %+v, want %+v", f.networks, want)
	}
}

// TestStartWithoutEndpoints: a container the network service gives no
// NICs (--network none) boots without any, in a namespace of its own, with
// the files the service gives.
func TestStartWithoutEndpoints(t *testing.T) {
	f, n := networkFixture(t, nil)
	n.plumbing = Plumbing{Hosts: "127.0.0.1\tlocalhost\n"}
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "none", Hostname: "box"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.run(c.ID); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := agent.ContainerNetwork{Hosts: "127.0.0.1\tlocalhost\n", HostnameFile: "box\n"}
	if len(f.starts[0].NICs) != 0 || !reflect.DeepEqual(f.calls, []string{"create"}) || f.networks[0] != want {
		t.Errorf("NICs %+v, calls %v, network %+v; want none, create only, %+v", f.starts[0].NICs, f.calls, f.networks[0], want)
	}
}

func TestStartNetworkFailures(t *testing.T) {
	t.Run("plumb", func(t *testing.T) {
		f, n := networkFixture(t, nil)
		n.plumbErr = errors.New("no address left in 172.30.0.0/16")
		c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.run(c.ID); err == nil || !strings.Contains(err.Error(), "no address left") {
			t.Fatalf("start = %v, want the network service's error", err)
		}
		if got := f.counts().starts; got != 0 {
			t.Errorf("%d VMs started without a network", got)
		}
	})
	t.Run("configure", func(t *testing.T) {
		f, n := networkFixture(t, errors.New("no interface has MAC address 02:42:ac:1e:00:02"))
		c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.run(c.ID); err == nil || !strings.Contains(err.Error(), "configure the guest's network: no interface has MAC") {
			t.Fatalf("start = %v, want the agent's error", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		n.mu.Lock()
		defer n.mu.Unlock()
		if len(f.created) != 0 || !reflect.DeepEqual(n.unplumbed, []string{c.ID}) {
			t.Errorf("after a failed configure: %d containers created, unplumbed %v; want none, the container", len(f.created), n.unplumbed)
		}
	})
}

// A create joins its networks in order (NetworkMode's first, the default
// network for "default"), records its ports (the image's EXPOSE and -p's
// ports among the exposed ones) and DNS settings, and a removal releases
// the endpoints; a refused join leaves no container.
func TestCreateJoinsNetworks(t *testing.T) {
	f, n := networkFixture(t, nil)
	ctx := context.Background()
	ip := netip.MustParseAddr("10.99.0.7")
	c, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Name: "web",
		NetworkMode: "front", Networks: map[string]EndpointOptions{"front": {IP: ip}, "back": {Aliases: []string{"db"}}, "alpha": {}},
		PortBindings: []PortBinding{{Proto: "udp", HostPort: 53, ContainerPort: 53}}, PublishAll: true,
		ExposedPorts: []Port{{Port: 8080, Proto: "tcp"}}, DNS: []string{"10.0.0.53"}, ExtraHosts: []string{"h:10.1.1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	joins := n.joined[c.ID]
	var order []string
	for _, j := range joins {
		order = append(order, j.Network)
	}
	if !slices.Equal(order, []string{"front", "alpha", "back"}) || joins[0].Endpoint.IP != ip || !slices.Equal(joins[2].Endpoint.Aliases, []string{"db"}) {
		t.Errorf("joins = %+v, want front (with its IP) first, then alpha and back (with its alias)", joins)
	}
	nc := c.Config.Network
	wantExposed := []Port{{Port: 53, Proto: "udp"}, {Port: 80, Proto: "tcp"}, {Port: 8080, Proto: "tcp"}}
	if nc.Mode != "front" || !nc.PublishAll || !slices.Equal(nc.ExposedPorts, wantExposed) || !slices.Equal(nc.DNS, []string{"10.0.0.53"}) {
		t.Errorf("recorded network config = %+v, want mode front, -P, exposed %v, the DNS server", nc, wantExposed)
	}
	if got, err := f.svc.Get(c.ID); err != nil || got.Config.Network == nil || got.Config.Network.Mode != "front" {
		t.Errorf("stored record's network = %+v, %v", got.Config.Network, err)
	}

	d, err := f.svc.Create(ctx, CreateOptions{Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if j := n.joined[d.ID]; len(j) != 1 || j[0].Network != NetworkBridge || d.Config.Network.Mode != NetworkDefault {
		t.Errorf("a create without a network joins %+v with mode %q, want the default network (bridge), mode default", j, d.Config.Network.Mode)
	}
	// --domainname: recorded, in the spec (the guest sets it), and refused
	// when no host name could hold it.
	dn, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Hostname: "web", Domainname: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if dn.Config.Domainname != "example.org" || dn.Config.Spec == nil || dn.Config.Spec.Domainname != "example.org" {
		t.Errorf("--domainname: record %q, spec %+v", dn.Config.Domainname, dn.Config.Spec)
	}
	for _, bad := range []string{"a b", strings.Repeat("x", 65), "evil/../x"} {
		if _, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Domainname: bad}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("--domainname %q = %v, want invalid argument", bad, err)
		}
	}
	none, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", NetworkMode: NetworkNone})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.joined[none.ID]; ok || none.Config.Network.Mode != NetworkNone {
		t.Errorf("--network none joined %+v (mode %q)", n.joined[none.ID], none.Config.Network.Mode)
	}

	if err := f.svc.Remove(ctx, c.ID, RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(n.released, c.ID) {
		t.Errorf("removal released %v, want %s among them", n.released, c.ID)
	}

	n.joinErr = errs.New(errdefs.ErrConflict, "address 10.99.0.7 is in use")
	before, _ := f.svc.List()
	if _, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Name: "clash"}); !errdefs.IsConflict(err) {
		t.Fatalf("create with a refused join = %v, want the join's conflict", err)
	}
	if after, _ := f.svc.List(); len(after) != len(before) {
		t.Errorf("containers after a refused join: %d, want %d", len(after), len(before))
	}
	if _, err := f.svc.Get("clash"); !errdefs.IsNotFound(err) {
		t.Errorf("the refused container is still there: %v", err)
	}
}

func TestParseImagePort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Port
		ok   bool
	}{
		{"80/tcp", Port{Port: 80, Proto: "tcp"}, true},
		{"53/udp", Port{Port: 53, Proto: "udp"}, true},
		{"8080", Port{Port: 8080, Proto: "tcp"}, true},
		{"0/tcp", Port{}, false},
		{"70000/tcp", Port{}, false},
		{"80/sctp", Port{}, false},
		{"x/tcp", Port{}, false},
	} {
		got, err := parseImagePort(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseImagePort(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
