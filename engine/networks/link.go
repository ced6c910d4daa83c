package networks

// Links: the bridges and taps of the host, through netlink.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host changes this process's network namespace: links, addresses,
// forwarding and the nftables table. It holds no state of its own: what
// it makes is named from the store's records, so another process (or
// this one after a restart) finds and removes it. Callers serialise
// changes with Store.LockHost.
type Host struct {
	nl *netlink.Handle
	// routeLocalnet is set on the bridges EnsureBridge brings up: the
	// kernel-only published ports (RuleOptions.KernelPorts) send the
	// host's loopback connections out by them.
	routeLocalnet bool
}

// SetRouteLocalnet chooses route_localnet for the bridges EnsureBridge
// brings up from now on: on for RuleOptions.KernelPorts, off otherwise
// (it is turned off again on a bridge a previous daemon turned on).
func (h *Host) SetRouteLocalnet(on bool) { h.routeLocalnet = on }

// OpenHost returns a Host on the calling process's network namespace.
func OpenHost() (*Host, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Host{nl: h}, nil
}

// Close releases the netlink socket.
func (h *Host) Close() { h.nl.Close() }

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

// EnsureBridge makes the network's bridge if it is missing and brings it
// to the network's state: MTU, the gateway address with the subnet's
// prefix (and no other IPv4 address), up. A bridge it makes is removed
// again if a later step fails.
func (h *Host) EnsureBridge(n *Network) (err error) {
	link, err := h.nl.LinkByName(n.Bridge)
	created := false
	switch {
	case isNotFound(err):
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = n.Bridge, n.MTU
		br := &netlink.Bridge{LinkAttrs: attrs}
		if err := h.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("creating bridge %s: %w", n.Bridge, err)
		}
		created = true
		if link, err = h.nl.LinkByName(n.Bridge); err != nil {
			h.nl.LinkDel(br)
			return fmt.Errorf("bridge %s: %w", n.Bridge, err)
		}
	case err != nil:
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	case link.Type() != "bridge":
		return fmt.Errorf("bridge %s: the host has an interface of that name that is a %s, not a bridge: rename it or choose another bridge name", n.Bridge, link.Type())
	}
	defer func() {
		if err != nil && created {
			h.nl.LinkDel(link)
		}
	}()
	// A bridge without an address of its own takes the lowest of its
	// ports' (the taps') and changes it as they come and go: containers
	// that knew the gateway by the old one lose it until their neighbour
	// entry expires. Its own, from the gateway as an endpoint's is from
	// its address, never changes.
	if mac := net.HardwareAddr(MACFor(n.Gateway)); !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := h.nl.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("bridge %s: setting its MAC %s: %w", n.Bridge, mac, err)
		}
	}
	if link.Attrs().MTU != n.MTU {
		if err := h.nl.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("bridge %s: setting MTU %d: %w", n.Bridge, n.MTU, err)
		}
	}
	want := netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
	addrs, err := h.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		// A stale address (the network's subnet changed with --bip) would
		// route the old subnet here.
		if err := h.nl.AddrDel(link, &a); err != nil {
			return fmt.Errorf("bridge %s: removing address %s: %w", n.Bridge, a.IPNet, err)
		}
	}
	if !have {
		addr := &netlink.Addr{IPNet: ipNet(want)}
		if err := h.nl.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("bridge %s: adding %s: %w", n.Bridge, want, err)
		}
	}
	if err := setSysctl(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/route_localnet", n.Bridge), h.routeLocalnet); err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s: bringing it up: %w", n.Bridge, err)
	}
	return nil
}

// setSysctl sets a boolean sysctl of the calling thread's namespace,
// writing only when it differs.
func setSysctl(path string, on bool) error {
	want := byte('0')
	if on {
		want = '1'
	}
	b, err := os.ReadFile(path)
	if err == nil && len(b) > 0 && b[0] == want {
		return nil
	}
	if err := os.WriteFile(path, []byte{want, '\n'}, 0o644); err != nil {
		return fmt.Errorf("setting %s: %w", path, err)
	}
	return nil
}

// DeleteLink removes an interface; a missing one is not an error.
func (h *Host) DeleteLink(name string) error {
	link, err := h.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := h.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return nil
}

// LinkExists reports whether the host has an interface of that name.
func (h *Host) LinkExists(name string) (bool, error) {
	_, err := h.nl.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// tapFlags are a VM tap's: Ethernet frames, no packet information header,
// and the virtio-net header in front of each frame, so that the VMM can
// pass offloads through. The VMM opens the tap with the same flags.
const tapFlags = netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR

// EnsureTap makes a persistent tap for an endpoint (or takes the one of
// that name a running VM already holds), attaches it to the bridge with
// hairpin mode on, sets its MTU and brings it up. A tap it makes is
// removed again if a later step fails.
func (h *Host) EnsureTap(name, bridge string, mtu int) (err error) {
	br, err := h.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("tap %s: bridge %s: %w", name, bridge, err)
	}
	link, err := h.nl.LinkByName(name)
	created := false
	switch {
	case isNotFound(err):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		// Queues 0: the tap is made persistent and the creating fd
		// closed; the VMM opens it by name.
		tap := &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TAP, Flags: tapFlags}
		if err := h.nl.LinkAdd(tap); err != nil {
			return fmt.Errorf("creating tap %s: %w", name, err)
		}
		created = true
		if link, err = h.nl.LinkByName(name); err != nil {
			h.nl.LinkDel(tap)
			return fmt.Errorf("tap %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("tap %s: %w", name, err)
	case link.Type() != "tuntap":
		return fmt.Errorf("tap %s: the host has an interface of that name that is a %s, not a tap", name, link.Type())
	}
	defer func() {
		if err != nil && created {
			h.nl.LinkDel(link)
		}
	}()
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.nl.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("tap %s: attaching it to %s: %w", name, bridge, err)
		}
	}
	if link.Attrs().MTU != mtu {
		if err := h.nl.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("tap %s: setting MTU %d: %w", name, mtu, err)
		}
	}
	// Hairpin: a frame may leave by the port it came in, so that a
	// container reaches itself through a published port.
	if err := h.nl.LinkSetHairpin(link, true); err != nil {
		return fmt.Errorf("tap %s: hairpin mode: %w", name, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("tap %s: bringing it up: %w", name, err)
	}
	return nil
}

// Taps returns the names of the host's taps that TapName could have made.
func (h *Host) Taps() ([]string, error) {
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "tuntap" && IsTapName(l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// TakenPrefixes returns the host's IPv4 routes and addresses, which a
// subnet chosen for a new network must not overlap (the default route
// aside).
func (h *Host) TakenPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	routes, err := h.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			out = append(out, p.Masked())
		}
	}
	addrs, err := h.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && !p.Addr().IsLoopback() {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// EnableForwarding turns on IPv4 forwarding in the namespace, which
// routing between the bridges and the host's other interfaces needs.
func (h *Host) EnableForwarding() error {
	if err := setSysctl("/proc/sys/net/ipv4/ip_forward", true); err != nil {
		return fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if !a.Is4() || bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
