package netconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/rtnetlink"
)

// fakeKernel keeps links, addresses and routes as Linux 6.1 would for the
// requests apply makes, and can fail one chosen change.
type fakeKernel struct {
	links  []rtnetlink.Link
	maxMTU map[int]int // by index; default 65535
	addrs  []rtnetlink.Address
	routes []rtnetlink.Route

	// failAt makes the failAt-th change (1-based) fail with failErr;
	// later changes (the undo) succeed.
	failAt  int
	failErr error
	changes int
}

func (k *fakeKernel) clone() *fakeKernel {
	c := *k
	c.links = slices.Clone(k.links)
	c.addrs = slices.Clone(k.addrs)
	c.routes = slices.Clone(k.routes)
	return &c
}

func (k *fakeKernel) state() string {
	return fmt.Sprintf("links %+v addrs %v routes %v", k.links, k.addrs, k.routes)
}

func (k *fakeKernel) change() error {
	k.changes++
	if k.changes == k.failAt {
		return k.failErr
	}
	return nil
}

func (k *fakeKernel) link(index int) (*rtnetlink.Link, error) {
	for i := range k.links {
		if k.links[i].Index == index {
			return &k.links[i], nil
		}
	}
	return nil, unix.ENODEV
}

func (k *fakeKernel) Links() ([]rtnetlink.Link, error)        { return slices.Clone(k.links), nil }
func (k *fakeKernel) Addresses() ([]rtnetlink.Address, error) { return slices.Clone(k.addrs), nil }

func (k *fakeKernel) Rename(index int, name string) error {
	if err := k.change(); err != nil {
		return err
	}
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if l.Up() {
		return unix.EBUSY // Linux 6.1 renames only links that are down
	}
	for _, o := range k.links {
		if o.Name == name && o.Index != index {
			return unix.EEXIST
		}
	}
	l.Name = name
	return nil
}

func (k *fakeKernel) SetMTU(index, mtu int) error {
	if err := k.change(); err != nil {
		return err
	}
	l, err := k.link(index)
	if err != nil {
		return err
	}
	max := 65535
	if m, ok := k.maxMTU[index]; ok {
		max = m
	}
	if mtu < 68 || mtu > max {
		return unix.EINVAL
	}
	l.MTU = mtu
	return nil
}

func (k *fakeKernel) SetUp(index int, up bool) error {
	if err := k.change(); err != nil {
		return err
	}
	l, err := k.link(index)
	if err != nil {
		return err
	}
	if up {
		l.Flags |= unix.IFF_UP
	} else {
		l.Flags &^= unix.IFF_UP
	}
	return nil
}

func (k *fakeKernel) AddAddress(index int, p netip.Prefix) error {
	if err := k.change(); err != nil {
		return err
	}
	a := rtnetlink.Address{Index: index, Prefix: p}
	if slices.Contains(k.addrs, a) {
		return unix.EEXIST
	}
	k.addrs = append(k.addrs, a)
	return nil
}

func (k *fakeKernel) DeleteAddress(index int, p netip.Prefix) error {
	if err := k.change(); err != nil {
		return err
	}
	i := slices.Index(k.addrs, rtnetlink.Address{Index: index, Prefix: p})
	if i < 0 {
		return unix.EADDRNOTAVAIL
	}
	k.addrs = slices.Delete(k.addrs, i, i+1)
	return nil
}

func (k *fakeKernel) ReplaceRoute(r rtnetlink.Route) error {
	if err := k.change(); err != nil {
		return err
	}
	if r.Gateway.IsValid() && !slices.ContainsFunc(k.addrs, func(a rtnetlink.Address) bool {
		return (r.Index == 0 || a.Index == r.Index) && a.Prefix.Contains(r.Gateway)
	}) {
		return unix.ENETUNREACH
	}
	k.routes = slices.DeleteFunc(k.routes, func(o rtnetlink.Route) bool { return o.Destination == r.Destination })
	k.routes = append(k.routes, r)
	return nil
}

func (k *fakeKernel) DeleteRoute(r rtnetlink.Route) error {
	if err := k.change(); err != nil {
		return err
	}
	i := slices.Index(k.routes, r)
	if i < 0 {
		return unix.ESRCH
	}
	k.routes = slices.Delete(k.routes, i, i+1)
	return nil
}

var (
	macA = net.HardwareAddr{0x02, 0x42, 0xac, 0x1e, 0, 2}
	macB = net.HardwareAddr{0x02, 0x42, 0xac, 0x1e, 0, 3}
)

// bootedGuest is a guest as the host finds it: the NIC that must become
// eth0 probed as eth1 and the other way round, one of them already up.
func bootedGuest() *fakeKernel {
	return &fakeKernel{links: []rtnetlink.Link{
		{Index: 1, Name: "lo", MTU: 65536, Flags: unix.IFF_LOOPBACK},
		{Index: 2, Name: "eth0", MAC: macB, MTU: 1500, Flags: unix.IFF_UP | unix.IFF_BROADCAST},
		{Index: 3, Name: "eth1", MAC: macA, MTU: 1500, Flags: unix.IFF_BROADCAST},
	}}
}

func swapRequest() Request {
	return Request{
		Interfaces: []Interface{
			{MAC: macA.String(), Name: "eth0", Addresses: []string{"172.30.0.2/16", "fd00:30::2/64"}, MTU: 1400},
			{MAC: macB.String(), Name: "eth1", Addresses: []string{"10.1.0.2/24"}},
		},
		Routes: []Route{
			{Gateway: "172.30.0.1"},
			{Gateway: "fd00:30::1", Device: "eth0"},
			{Destination: "10.50.0.0/16", Gateway: "10.1.0.1"},
		},
	}
}

func mustApply(t *testing.T, k *fakeKernel, req Request) error {
	t.Helper()
	p, err := check(req)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	return apply(k, p)
}

func TestApply(t *testing.T) {
	k := bootedGuest()
	if err := mustApply(t, k, swapRequest()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	up := uint32(unix.IFF_UP)
	wantLinks := []rtnetlink.Link{
		{Index: 1, Name: "lo", MTU: 65536, Flags: unix.IFF_LOOPBACK | up},
		{Index: 2, Name: "eth1", MAC: macB, MTU: 1500, Flags: unix.IFF_BROADCAST | up},
		{Index: 3, Name: "eth0", MAC: macA, MTU: 1400, Flags: unix.IFF_BROADCAST | up},
	}
	if !reflect.DeepEqual(k.links, wantLinks) {
		t.Errorf("links = %+v\nwant %+v", k.links, wantLinks)
	}
	wantAddrs := []rtnetlink.Address{
		{Index: 3, Prefix: netip.MustParsePrefix("172.30.0.2/16")},
		{Index: 3, Prefix: netip.MustParsePrefix("fd00:30::2/64")},
		{Index: 2, Prefix: netip.MustParsePrefix("10.1.0.2/24")},
	}
	if !reflect.DeepEqual(k.addrs, wantAddrs) {
		t.Errorf("addresses = %v, want %v", k.addrs, wantAddrs)
	}
	wantRoutes := []rtnetlink.Route{
		{Destination: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("172.30.0.1"), Index: 3},
		{Destination: netip.MustParsePrefix("::/0"), Gateway: netip.MustParseAddr("fd00:30::1"), Index: 3},
		{Destination: netip.MustParsePrefix("10.50.0.0/16"), Gateway: netip.MustParseAddr("10.1.0.1"), Index: 2},
	}
	if !reflect.DeepEqual(k.routes, wantRoutes) {
		t.Errorf("routes = %v, want %v", k.routes, wantRoutes)
	}

	// A repeated request (the host retrying) changes nothing but the
	// routes, which are replaced by themselves.
	before := k.state()
	k.changes = 0
	if err := mustApply(t, k, swapRequest()); err != nil {
		t.Fatalf("repeated apply: %v", err)
	}
	if k.changes != len(wantRoutes) || k.state() != before {
		t.Errorf("repeated apply made %d changes (want %d, the routes), state %s", k.changes, len(wantRoutes), k.state())
	}
}

// TestApplyUndoes fails each change of a full apply in turn: every failure
// must leave the guest exactly as it was.
func TestApplyUndoes(t *testing.T) {
	total := bootedGuest()
	if err := mustApply(t, total, swapRequest()); err != nil {
		t.Fatal(err)
	}
	if total.changes < 10 {
		t.Fatalf("a full apply made only %d changes", total.changes)
	}
	for n := 1; n <= total.changes; n++ {
		k := bootedGuest()
		initial := k.clone().state()
		k.failAt, k.failErr = n, unix.EIO
		err := mustApply(t, k, swapRequest())
		if !errors.Is(err, unix.EIO) {
			t.Errorf("change %d failing: apply = %v, want the failure", n, err)
		}
		if got := k.state(); got != initial {
			t.Errorf("change %d failing left\n%s\nwant\n%s", n, got, initial)
		}
	}
}

func TestApplyRefusesBeforeChanging(t *testing.T) {
	tests := []struct {
		name string
		k    func() *fakeKernel
		req  Request
		want string
	}{
		{"absent MAC", bootedGuest, Request{Interfaces: []Interface{{MAC: "02:00:00:00:00:77", Name: "eth0"}}}, "no interface has MAC address 02:00:00:00:00:77"},
		{"name held outside the request", bootedGuest, Request{Interfaces: []Interface{{MAC: macA.String(), Name: "eth0"}}}, "taken by another interface"},
		{"MAC on two links", func() *fakeKernel {
			k := bootedGuest()
			k.links = append(k.links, rtnetlink.Link{Index: 4, Name: "eth2", MAC: macA})
			return k
		}, Request{Interfaces: []Interface{{MAC: macA.String(), Name: "eth5"}}}, "2 interfaces have MAC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.k()
			err := mustApply(t, k, tt.req)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("apply = %v, want ErrInvalid saying %q", err, tt.want)
			}
			if k.changes != 0 {
				t.Errorf("apply made %d changes before refusing", k.changes)
			}
		})
	}
}

// TestApplyKernelRefusal: a value the kernel refuses (an MTU above what the
// device takes) is the caller's error, and is undone like any failure.
func TestApplyKernelRefusal(t *testing.T) {
	k := bootedGuest()
	k.maxMTU = map[int]int{3: 1300}
	initial := k.clone().state()
	err := mustApply(t, k, swapRequest())
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, unix.EINVAL) {
		t.Errorf("apply with an MTU the device refuses = %v, want ErrInvalid wrapping EINVAL", err)
	}
	if got := k.state(); got != initial {
		t.Errorf("refused apply left %s, want %s", got, initial)
	}
}
