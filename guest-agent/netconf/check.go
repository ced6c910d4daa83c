package netconf

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
)

// Limits on a request: far above what a VM has (one NIC per network it is
// connected to, a few routes), low enough that a broken host cannot make
// the agent do unbounded work.
const (
	maxInterfaces = 16
	maxAddresses  = 32 // per interface
	maxRoutes     = 64
)

// MTU bounds: the kernel refuses an Ethernet MTU below 68 (the IPv4
// minimum), virtio-net's MTU field is 16 bits, and IPv6 turns itself off on
// a link whose MTU is below 1280 (RFC 8200).
const (
	minMTU     = 68
	maxMTU     = 65535
	minIPv6MTU = 1280
)

// ifNameSize is IFNAMSIZ: a name has at most IFNAMSIZ-1 bytes.
const ifNameSize = 16

// plan is a request that passed check, in kernel terms.
type plan struct {
	ifaces []plannedInterface
	routes []plannedRoute
}

type plannedInterface struct {
	mac   net.HardwareAddr
	name  string
	addrs []netip.Prefix
	mtu   int // 0: keep the device's
}

type plannedRoute struct {
	dst netip.Prefix
	gw  netip.Addr // invalid: a link route
	// iface is the index in plan.ifaces of the route's interface.
	iface int
}

// check validates the whole request before anything is changed, and
// resolves each route to its interface.
func check(req Request) (plan, error) {
	if len(req.Interfaces) > maxInterfaces {
		return plan{}, invalidf("%d interfaces, at most %d", len(req.Interfaces), maxInterfaces)
	}
	if len(req.Routes) > maxRoutes {
		return plan{}, invalidf("%d routes, at most %d", len(req.Routes), maxRoutes)
	}
	var p plan
	names := map[string]int{}
	addrs := map[netip.Addr]bool{}
	for _, in := range req.Interfaces {
		pi, err := checkInterface(in)
		if err != nil {
			return plan{}, err
		}
		for _, q := range p.ifaces {
			if bytes.Equal(q.mac, pi.mac) {
				return plan{}, invalidf("MAC address %s is listed twice", pi.mac)
			}
		}
		if _, dup := names[pi.name]; dup {
			return plan{}, invalidf("interface name %q is listed twice", pi.name)
		}
		names[pi.name] = len(p.ifaces)
		for _, a := range pi.addrs {
			if addrs[a.Addr()] {
				return plan{}, invalidf("address %s is listed twice", a.Addr())
			}
			addrs[a.Addr()] = true
		}
		p.ifaces = append(p.ifaces, pi)
	}
	dsts := map[netip.Prefix]bool{}
	for _, r := range req.Routes {
		pr, err := checkRoute(r, p.ifaces, names)
		if err != nil {
			return plan{}, err
		}
		if dsts[pr.dst] {
			return plan{}, invalidf("two routes to %s", pr.dst)
		}
		dsts[pr.dst] = true
		p.routes = append(p.routes, pr)
	}
	return p, nil
}

func checkInterface(in Interface) (plannedInterface, error) {
	mac, err := net.ParseMAC(in.MAC)
	if err != nil || len(mac) != 6 {
		return plannedInterface{}, invalidf("MAC address %q is not an Ethernet address like 02:42:ac:1e:00:02", in.MAC)
	}
	if mac[0]&1 != 0 || bytes.Equal(mac, make(net.HardwareAddr, 6)) {
		return plannedInterface{}, invalidf("MAC address %s is not a unicast address", mac)
	}
	if err := checkName(in.Name); err != nil {
		return plannedInterface{}, err
	}
	if len(in.Addresses) > maxAddresses {
		return plannedInterface{}, invalidf("interface %s: %d addresses, at most %d", in.Name, len(in.Addresses), maxAddresses)
	}
	pi := plannedInterface{mac: mac, name: in.Name}
	hasIPv6 := false
	for _, s := range in.Addresses {
		a, err := checkAddress(s)
		if err != nil {
			return plannedInterface{}, fmt.Errorf("interface %s: %w", in.Name, err)
		}
		hasIPv6 = hasIPv6 || a.Addr().Is6()
		pi.addrs = append(pi.addrs, a)
	}
	if in.MTU != 0 {
		if in.MTU < minMTU || in.MTU > maxMTU {
			return plannedInterface{}, invalidf("interface %s: MTU %d is outside %d..%d", in.Name, in.MTU, minMTU, maxMTU)
		}
		if hasIPv6 && in.MTU < minIPv6MTU {
			return plannedInterface{}, invalidf("interface %s: MTU %d is below IPv6's minimum of %d", in.Name, in.MTU, minIPv6MTU)
		}
		pi.mtu = int(in.MTU)
	}
	return pi, nil
}

// checkName applies the kernel's rules for interface names
// (dev_valid_name, net/core/dev.c), and keeps lo for the loopback.
func checkName(name string) error {
	if name == "" || len(name) >= ifNameSize || name == "." || name == ".." || name == "lo" {
		return invalidf("interface name %q must be 1 to %d bytes, not lo, . or ..", name, ifNameSize-1)
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c == 0 || c == ' ' || c >= '\t' && c <= '\r' {
			return invalidf("interface name %q contains %q", name, c)
		}
	}
	return nil
}

// checkAddress parses an interface address in CIDR form.
func checkAddress(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalidf("address %q is not an address with a prefix length like 172.30.0.2/16", s)
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return netip.Prefix{}, invalidf("address %s is IPv4 mapped into IPv6: give it as IPv4", s)
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback():
		return netip.Prefix{}, invalidf("address %s cannot be an interface's address", s)
	case p.Bits() == 0:
		return netip.Prefix{}, invalidf("address %s has prefix length 0", s)
	}
	return p, nil
}

func checkRoute(r Route, ifaces []plannedInterface, names map[string]int) (plannedRoute, error) {
	pr := plannedRoute{iface: -1}
	what := "route to " + r.Destination
	if r.Destination == "" {
		what = "default route"
	}
	if r.Device != "" {
		i, ok := names[r.Device]
		if !ok {
			return plannedRoute{}, invalidf("%s: device %q is not an interface of the request", what, r.Device)
		}
		pr.iface = i
	}
	if r.Gateway != "" {
		gw, err := netip.ParseAddr(r.Gateway)
		if err != nil || gw.Zone() != "" || gw.Is4In6() {
			return plannedRoute{}, invalidf("%s: gateway %q is not an IP address", what, r.Gateway)
		}
		if gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback() {
			return plannedRoute{}, invalidf("%s: gateway %s cannot be a next hop", what, gw)
		}
		pr.gw = gw
	} else if pr.iface < 0 {
		return plannedRoute{}, invalidf("%s has neither a gateway nor a device", what)
	}
	switch {
	case r.Destination != "":
		dst, err := netip.ParsePrefix(r.Destination)
		if err != nil || dst.Addr().Is4In6() {
			return plannedRoute{}, invalidf("route destination %q is not a network like 10.1.0.0/16", r.Destination)
		}
		if dst != dst.Masked() {
			return plannedRoute{}, invalidf("route destination %s has host bits set (the network is %s)", dst, dst.Masked())
		}
		pr.dst = dst
	case pr.gw.Is6():
		pr.dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	default:
		pr.dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	if !pr.gw.IsValid() {
		return pr, nil
	}
	if pr.gw.Is4() != pr.dst.Addr().Is4() {
		return plannedRoute{}, invalidf("%s: gateway %s is not of the destination's family", what, pr.gw)
	}
	// The gateway must be on a link the request configures: the kernel
	// refuses a route through a gateway it cannot reach (ENETUNREACH), and
	// finding that out only after the addresses are in place would mean
	// undoing them.
	for i, in := range ifaces {
		if pr.iface >= 0 && i != pr.iface {
			continue
		}
		for _, a := range in.addrs {
			if a.Addr() == pr.gw {
				return plannedRoute{}, invalidf("%s: gateway %s is an address of interface %s itself", what, pr.gw, in.name)
			}
			if a.Contains(pr.gw) {
				pr.iface = i
				return pr, nil
			}
		}
	}
	if pr.iface >= 0 {
		return plannedRoute{}, invalidf("%s: gateway %s is unreachable: no address of %s has it in its subnet", what, pr.gw, r.Device)
	}
	return plannedRoute{}, invalidf("%s: gateway %s is unreachable: no interface address has it in its subnet", what, pr.gw)
}
