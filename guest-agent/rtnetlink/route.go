package rtnetlink

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Route is a unicast route of the main table.
type Route struct {
	// Destination is the network reached; a prefix of length 0 is the
	// default route of its family.
	Destination netip.Prefix
	// Gateway is the next hop; the zero Addr means the destination is on
	// the link (a device route).
	Gateway netip.Addr
	// Index is the output link; 0 lets the kernel choose by the gateway.
	Index int
}

func (r Route) String() string {
	s := r.Destination.String()
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Index != 0 {
		s += fmt.Sprintf(" dev %d", r.Index)
	}
	return s
}

func routeMsg(r Route, forDelete bool) (rtMsg, []attr) {
	m := rtMsg{
		family:   unix.AF_INET,
		dstLen:   uint8(r.Destination.Bits()),
		table:    unix.RT_TABLE_MAIN,
		protocol: unix.RTPROT_BOOT, // what `ip route add` sets
		scope:    unix.RT_SCOPE_UNIVERSE,
		typ:      unix.RTN_UNICAST,
	}
	if r.Destination.Addr().Is6() {
		m.family = unix.AF_INET6
	}
	if !r.Gateway.IsValid() {
		m.scope = unix.RT_SCOPE_LINK
	}
	if forDelete {
		// Match routes of any scope, as `ip route del` does.
		m.scope = unix.RT_SCOPE_NOWHERE
	}
	var attrs []attr
	if r.Destination.Bits() > 0 {
		attrs = append(attrs, attr{unix.RTA_DST, r.Destination.Addr().AsSlice()})
	}
	if r.Gateway.IsValid() {
		attrs = append(attrs, attr{unix.RTA_GATEWAY, r.Gateway.AsSlice()})
	}
	if r.Index != 0 {
		b := make([]byte, 4)
		order.PutUint32(b, uint32(r.Index))
		attrs = append(attrs, attr{unix.RTA_OIF, b})
	}
	return m, attrs
}

// ReplaceRoute adds r, replacing a route to the same destination (so a
// repeated request changes nothing).
func (c *Conn) ReplaceRoute(r Route) error {
	m, attrs := routeMsg(r, false)
	return c.request("add route "+r.String(), unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, m.bytes(), attrs...)
}

// DeleteRoute removes r.
func (c *Conn) DeleteRoute(r Route) error {
	m, attrs := routeMsg(r, true)
	return c.request("delete route "+r.String(), unix.RTM_DELROUTE, 0, m.bytes(), attrs...)
}

// Routes lists the unicast routes of the main table.
func (c *Conn) Routes() ([]Route, error) {
	msgs, err := c.dump("list routes", unix.RTM_GETROUTE, unix.RTM_NEWROUTE, rtMsg{family: unix.AF_UNSPEC}.bytes())
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, b := range msgs {
		r, ok, err := parseRoute(b)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// parseRoute reads an RTM_NEWROUTE payload; ok is false for routes other
// than unicast IPv4 and IPv6 routes of the main table.
func parseRoute(b []byte) (Route, bool, error) {
	m, rest, err := parseRtMsg(b)
	if err != nil {
		return Route{}, false, err
	}
	if (m.family != unix.AF_INET && m.family != unix.AF_INET6) || m.typ != unix.RTN_UNICAST {
		return Route{}, false, nil
	}
	attrs, err := parseAttrs(rest)
	if err != nil {
		return Route{}, false, err
	}
	table := uint32(m.table)
	dst := netip.IPv4Unspecified()
	if m.family == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	}
	var r Route
	for _, a := range attrs {
		switch a.typ {
		case unix.RTA_TABLE:
			if len(a.data) == 4 {
				table = order.Uint32(a.data)
			}
		case unix.RTA_DST:
			ip, ok := netip.AddrFromSlice(a.data)
			if !ok {
				return Route{}, false, fmt.Errorf("%w: route destination of %d bytes", errMalformed, len(a.data))
			}
			dst = ip
		case unix.RTA_GATEWAY:
			ip, ok := netip.AddrFromSlice(a.data)
			if !ok {
				return Route{}, false, fmt.Errorf("%w: route gateway of %d bytes", errMalformed, len(a.data))
			}
			r.Gateway = ip
		case unix.RTA_OIF:
			if len(a.data) == 4 {
				r.Index = int(order.Uint32(a.data))
			}
		}
	}
	if table != unix.RT_TABLE_MAIN {
		return Route{}, false, nil
	}
	if (m.family == unix.AF_INET) != dst.Is4() {
		return Route{}, false, fmt.Errorf("%w: destination %s in family %d", errMalformed, dst, m.family)
	}
	r.Destination, err = dst.Prefix(int(m.dstLen))
	if err != nil {
		return Route{}, false, fmt.Errorf("%w: prefix length %d for %s", errMalformed, m.dstLen, dst)
	}
	return r, true, nil
}
