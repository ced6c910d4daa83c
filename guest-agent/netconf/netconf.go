// Package netconf configures the guest's network as the host asks
// (ConfigureNetwork): it checks the whole request first, then finds each
// interface by its MAC address, renames it, sets its MTU, adds its
// addresses, brings it and lo up, and adds the routes. A request the
// kernel refuses partway is undone step by step, so a failed request
// leaves the guest as it found it. Repeating a request that succeeded
// changes nothing.
//
// It works in the calling thread's network namespace (for the agent, the
// guest's root namespace) through rtnetlink. It does not create
// interfaces, run DHCP, or write a container's /etc files (see etcfiles).
package netconf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/rtnetlink"
)

// Interface is one NIC as the host describes it (NetworkInterface of the
// agent API).
type Interface struct {
	// MAC finds the interface.
	MAC string
	// Name is what it is renamed to.
	Name string
	// Addresses are IPv4 or IPv6 addresses in CIDR form.
	Addresses []string
	// MTU 0 keeps the device's.
	MTU uint32
}

// Route is a route of the main table (NetworkRoute of the agent API).
type Route struct {
	// Destination is a network in CIDR form; empty is the default route.
	Destination string
	// Gateway is the next hop; empty means the destination is on Device's
	// link.
	Gateway string
	// Device names an interface of the request.
	Device string
}

// Request is what to configure.
type Request struct {
	Interfaces []Interface
	Routes     []Route
}

// ErrInvalid marks a request that cannot be carried out as asked: a
// malformed value, an absent MAC, an unreachable gateway, or a value the
// kernel refused (an MTU the device does not take).
var ErrInvalid = errors.New("invalid network configuration")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Check validates req without touching the kernel.
func Check(req Request) error {
	_, err := check(req)
	return err
}

// Configure applies req in the calling thread's network namespace.
func Configure(req Request) error {
	p, err := check(req)
	if err != nil {
		return err
	}
	c, err := rtnetlink.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return apply(c, p)
}

// kernel is the part of rtnetlink.Conn apply uses; tests give it failures.
type kernel interface {
	Links() ([]rtnetlink.Link, error)
	Addresses() ([]rtnetlink.Address, error)
	Rename(index int, name string) error
	SetMTU(index, mtu int) error
	SetUp(index int, up bool) error
	AddAddress(index int, p netip.Prefix) error
	DeleteAddress(index int, p netip.Prefix) error
	ReplaceRoute(r rtnetlink.Route) error
	DeleteRoute(r rtnetlink.Route) error
}

var _ kernel = (*rtnetlink.Conn)(nil)

// undoStack holds the inverse of every change made so far.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

// run undoes the changes, newest first, and reports what could not be
// undone.
func (u undoStack) run() error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// refused classifies the kernel's refusal of a value the host chose as
// invalid input; other failures stay internal errors.
func refused(err error) error {
	for _, e := range []unix.Errno{unix.EINVAL, unix.ERANGE, unix.EEXIST, unix.ENETUNREACH, unix.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return err
}

// apply carries out p. Sequence: find the links; rename (links that must
// be renamed are brought down first, Linux 6.1 refuses to rename a link
// that is up, and links whose names another interface of the request
// takes go through a temporary name, so names can be swapped); MTU;
// addresses; links and lo up; routes. On error everything done is undone.
func apply(k kernel, p plan) (err error) {
	links, err := k.Links()
	if err != nil {
		return err
	}
	found := make([]rtnetlink.Link, len(p.ifaces))
	for i, in := range p.ifaces {
		n := 0
		for _, l := range links {
			if l.Flags&unix.IFF_LOOPBACK == 0 && bytes.Equal(l.MAC, in.mac) {
				found[i] = l
				n++
			}
		}
		switch {
		case n == 0:
			return invalidf("no interface has MAC address %s (for %s)", in.mac, in.name)
		case n > 1:
			return invalidf("%d interfaces have MAC address %s", n, in.mac)
		}
	}
	// A target name held by a link outside the request cannot be freed.
	target := map[string]int{} // name -> index of the request interface that wants it
	for i, in := range p.ifaces {
		target[in.name] = i
	}
	for _, in := range p.ifaces {
		for _, l := range links {
			if l.Name == in.name && !slices.ContainsFunc(found, func(f rtnetlink.Link) bool { return f.Index == l.Index }) {
				return invalidf("interface name %s is taken by another interface (index %d)", in.name, l.Index)
			}
		}
	}

	var undo undoStack
	defer func() {
		if err != nil {
			if uerr := undo.run(); uerr != nil {
				err = fmt.Errorf("%w; undoing it failed too: %v", err, uerr)
			}
		}
	}()

	renames := []int{}
	for i, in := range p.ifaces {
		if found[i].Name != in.name {
			renames = append(renames, i)
		}
	}
	for _, i := range renames {
		l := found[i]
		if l.Up() {
			if err := k.SetUp(l.Index, false); err != nil {
				return err
			}
			undo.push(func() error { return k.SetUp(l.Index, true) })
		}
	}
	name := func(i int) string { return found[i].Name }
	rename := func(i int, to string) error {
		from := found[i].Name
		if err := k.Rename(found[i].Index, to); err != nil {
			return refused(err)
		}
		found[i].Name = to
		undo.push(func() error {
			if err := k.Rename(found[i].Index, from); err != nil {
				return err
			}
			found[i].Name = from
			return nil
		})
		return nil
	}
	for _, i := range renames {
		if j, ok := target[name(i)]; ok && j != i {
			if err := rename(i, "netconf"+strconv.Itoa(found[i].Index)); err != nil {
				return err
			}
		}
	}
	for _, i := range renames {
		if err := rename(i, p.ifaces[i].name); err != nil {
			return err
		}
	}

	for i, in := range p.ifaces {
		l := found[i]
		if in.mtu == 0 || in.mtu == l.MTU {
			continue
		}
		if err := k.SetMTU(l.Index, in.mtu); err != nil {
			return refused(err)
		}
		undo.push(func() error { return k.SetMTU(l.Index, l.MTU) })
	}

	have, err := k.Addresses()
	if err != nil {
		return err
	}
	for i, in := range p.ifaces {
		index := found[i].Index
		for _, a := range in.addrs {
			if hasAddress(have, index, a) {
				continue // a repeated request
			}
			if err := k.AddAddress(index, a); err != nil {
				return refused(err)
			}
			undo.push(func() error { return k.DeleteAddress(index, a) })
		}
	}

	up := make([]rtnetlink.Link, 0, len(found)+1)
	up = append(up, found...)
	lo := -1
	for _, l := range links {
		if l.Flags&unix.IFF_LOOPBACK != 0 {
			lo = len(up)
			up = append(up, l)
			break
		}
	}
	if lo < 0 {
		return errors.New("the guest has no loopback interface")
	}
	for i, l := range up {
		if l.Up() && (i == lo || !slices.Contains(renames, i)) {
			continue // up already, and not brought down above
		}
		if err := k.SetUp(l.Index, true); err != nil {
			return err
		}
		undo.push(func() error { return k.SetUp(l.Index, false) })
	}

	for _, r := range p.routes {
		rr := rtnetlink.Route{Destination: r.dst, Gateway: r.gw}
		if r.iface >= 0 {
			rr.Index = found[r.iface].Index
		}
		if err := k.ReplaceRoute(rr); err != nil {
			return refused(err)
		}
		undo.push(func() error { return k.DeleteRoute(rr) })
	}
	return nil
}

func hasAddress(have []rtnetlink.Address, index int, p netip.Prefix) bool {
	for _, a := range have {
		if a.Index == index && a.Prefix == p {
			return true
		}
	}
	return false
}
