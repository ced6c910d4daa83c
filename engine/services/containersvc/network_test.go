package containersvc

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// fakeNetwork gives every container the same plumbing, or fails.
type fakeNetwork struct {
	plumbing  Plumbing
	plumbErr  error
	mu        sync.Mutex
	plumbed   []string
	unplumbed []string
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
