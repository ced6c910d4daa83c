package rtnetlink

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Address is an IP address with its prefix length on a link.
type Address struct {
	Index  int
	Prefix netip.Prefix
}

// Addresses lists the IPv4 and IPv6 addresses of every link.
func (c *Conn) Addresses() ([]Address, error) {
	msgs, err := c.dump("list addresses", unix.RTM_GETADDR, unix.RTM_NEWADDR, ifAddr{family: unix.AF_UNSPEC}.bytes())
	if err != nil {
		return nil, err
	}
	out := make([]Address, 0, len(msgs))
	for _, m := range msgs {
		a, ok, err := parseAddress(m)
		if err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// parseAddress reads an RTM_NEWADDR payload; ok is false for families
// other than IPv4 and IPv6.
func parseAddress(b []byte) (Address, bool, error) {
	m, rest, err := parseIfAddr(b)
	if err != nil {
		return Address{}, false, err
	}
	if m.family != unix.AF_INET && m.family != unix.AF_INET6 {
		return Address{}, false, nil
	}
	attrs, err := parseAttrs(rest)
	if err != nil {
		return Address{}, false, err
	}
	// IFA_LOCAL is the interface's own address; IFA_ADDRESS is the same or,
	// on a point-to-point IPv4 link, the peer's. IPv6 sends IFA_ADDRESS only.
	var local, address []byte
	for _, a := range attrs {
		switch a.typ {
		case unix.IFA_LOCAL:
			local = a.data
		case unix.IFA_ADDRESS:
			address = a.data
		}
	}
	raw := local
	if raw == nil {
		raw = address
	}
	ip, ok := netip.AddrFromSlice(raw)
	if !ok {
		return Address{}, false, fmt.Errorf("%w: address of %d bytes", errMalformed, len(raw))
	}
	if (m.family == unix.AF_INET) != ip.Is4() {
		return Address{}, false, fmt.Errorf("%w: address %s in family %d", errMalformed, ip, m.family)
	}
	p := netip.PrefixFrom(ip, int(m.prefixLen))
	if !p.IsValid() {
		return Address{}, false, fmt.Errorf("%w: prefix length %d for %s", errMalformed, m.prefixLen, ip)
	}
	return Address{Index: int(m.index), Prefix: p}, true, nil
}

func addrMsg(index int, p netip.Prefix) (ifAddr, []attr) {
	ip := p.Addr()
	m := ifAddr{family: unix.AF_INET, prefixLen: uint8(p.Bits()), index: uint32(index)}
	attrs := []attr{{unix.IFA_LOCAL, ip.AsSlice()}, {unix.IFA_ADDRESS, ip.AsSlice()}}
	if ip.Is6() {
		m.family = unix.AF_INET6
		// The host allocated the address for this interface alone:
		// duplicate address detection would only keep it unusable for a
		// second or so after the link comes up.
		m.flags = unix.IFA_F_NODAD
	} else if p.Bits() < 31 {
		// As `ip address add ... brd +`: the subnet's last address.
		attrs = append(attrs, attr{unix.IFA_BROADCAST, broadcast(p).AsSlice()})
	}
	return m, attrs
}

// broadcast is the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// AddAddress adds p (an address and its prefix length) to link index. The
// kernel adds the prefix's route with it. An address the link has already
// fails with EEXIST.
func (c *Conn) AddAddress(index int, p netip.Prefix) error {
	m, attrs := addrMsg(index, p)
	return c.request(fmt.Sprintf("add address %s to link %d", p, index), unix.RTM_NEWADDR,
		unix.NLM_F_CREATE|unix.NLM_F_EXCL, m.bytes(), attrs...)
}

// DeleteAddress removes p from link index.
func (c *Conn) DeleteAddress(index int, p netip.Prefix) error {
	m, attrs := addrMsg(index, p)
	return c.request(fmt.Sprintf("delete address %s from link %d", p, index), unix.RTM_DELADDR, 0, m.bytes(), attrs...)
}
