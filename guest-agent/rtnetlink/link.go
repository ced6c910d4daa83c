package rtnetlink

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Link is a network interface.
type Link struct {
	Index int
	Name  string
	// MAC is the hardware address; empty for links without one.
	MAC net.HardwareAddr
	MTU int
	// Flags are the IFF_* flags (IFF_UP, IFF_LOOPBACK...).
	Flags uint32
}

// Up reports whether the link is administratively up.
func (l Link) Up() bool { return l.Flags&unix.IFF_UP != 0 }

// Links lists the links of the namespace.
func (c *Conn) Links() ([]Link, error) {
	msgs, err := c.dump("list links", unix.RTM_GETLINK, unix.RTM_NEWLINK, ifInfo{family: unix.AF_UNSPEC}.bytes())
	if err != nil {
		return nil, err
	}
	links := make([]Link, 0, len(msgs))
	for _, m := range msgs {
		l, err := parseLink(m)
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		links = append(links, l)
	}
	return links, nil
}

func parseLink(b []byte) (Link, error) {
	info, rest, err := parseIfInfo(b)
	if err != nil {
		return Link{}, err
	}
	attrs, err := parseAttrs(rest)
	if err != nil {
		return Link{}, err
	}
	l := Link{Index: int(info.index), Flags: info.flags}
	for _, a := range attrs {
		switch a.typ {
		case unix.IFLA_IFNAME:
			l.Name = cString(a.data)
		case unix.IFLA_ADDRESS:
			l.MAC = append(net.HardwareAddr(nil), a.data...)
		case unix.IFLA_MTU:
			if len(a.data) == 4 {
				l.MTU = int(order.Uint32(a.data))
			}
		}
	}
	return l, nil
}

// Rename gives link index a new name. Linux 6.1 refuses to rename a link
// that is up (EBUSY).
func (c *Conn) Rename(index int, name string) error {
	return c.request(fmt.Sprintf("rename link %d to %q", index, name), unix.RTM_NEWLINK, 0,
		ifInfo{family: unix.AF_UNSPEC, index: int32(index)}.bytes(),
		attr{unix.IFLA_IFNAME, append([]byte(name), 0)})
}

// SetMTU sets the MTU of link index.
func (c *Conn) SetMTU(index, mtu int) error {
	b := make([]byte, 4)
	order.PutUint32(b, uint32(mtu))
	return c.request(fmt.Sprintf("set MTU of link %d to %d", index, mtu), unix.RTM_NEWLINK, 0,
		ifInfo{family: unix.AF_UNSPEC, index: int32(index)}.bytes(), attr{unix.IFLA_MTU, b})
}

// SetUp brings link index up or down.
func (c *Conn) SetUp(index int, up bool) error {
	info := ifInfo{family: unix.AF_UNSPEC, index: int32(index), change: unix.IFF_UP}
	op := fmt.Sprintf("set link %d down", index)
	if up {
		info.flags = unix.IFF_UP
		op = fmt.Sprintf("set link %d up", index)
	}
	return c.request(op, unix.RTM_NEWLINK, 0, info.bytes())
}

// SetMAC gives link index the hardware address mac. A virtio-net device
// takes it on (VIRTIO_NET_CTRL_MAC_ADDR_SET) while up.
func (c *Conn) SetMAC(index int, mac net.HardwareAddr) error {
	return c.request(fmt.Sprintf("set address of link %d to %s", index, mac), unix.RTM_NEWLINK, 0,
		ifInfo{family: unix.AF_UNSPEC, index: int32(index)}.bytes(), attr{unix.IFLA_ADDRESS, mac})
}
