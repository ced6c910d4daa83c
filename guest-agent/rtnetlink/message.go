package rtnetlink

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Netlink is in host byte order; addresses inside attributes are in network
// byte order, as raw bytes.
var order = binary.NativeEndian

// errMalformed marks a reply that does not parse as netlink. The kernel
// does not send those; it is checked anyway, so that a parser bug cannot
// read past a buffer.
var errMalformed = errors.New("malformed netlink message")

// message is one netlink message: its header fields and its payload.
type message struct {
	typ   uint16
	flags uint16
	seq   uint32
	pid   uint32
	data  []byte
}

// align rounds n up to NLMSG_ALIGNTO (and RTA_ALIGNTO): 4 bytes.
func align(n int) int { return (n + 3) &^ 3 }

// parseMessages splits a datagram into messages. Every length is checked
// against what is left of b.
func parseMessages(b []byte) ([]message, error) {
	var msgs []message
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return nil, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(b))
		}
		n := int(order.Uint32(b[0:4]))
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return nil, fmt.Errorf("%w: message length %d with %d bytes left", errMalformed, n, len(b))
		}
		msgs = append(msgs, message{
			typ:   order.Uint16(b[4:6]),
			flags: order.Uint16(b[6:8]),
			seq:   order.Uint32(b[8:12]),
			pid:   order.Uint32(b[12:16]),
			data:  b[unix.SizeofNlMsghdr:n],
		})
		b = b[min(align(n), len(b)):]
	}
	return msgs, nil
}

// attr is one routing attribute (struct rtattr and its payload).
type attr struct {
	typ  uint16
	data []byte
}

// parseAttrs splits a run of attributes. The nested and byte-order flags
// are cleared from each type.
func parseAttrs(b []byte) ([]attr, error) {
	var attrs []attr
	for len(b) > 0 {
		if len(b) < unix.SizeofRtAttr {
			return nil, fmt.Errorf("%w: %d trailing attribute bytes", errMalformed, len(b))
		}
		n := int(order.Uint16(b[0:2]))
		if n < unix.SizeofRtAttr || n > len(b) {
			return nil, fmt.Errorf("%w: attribute length %d with %d bytes left", errMalformed, n, len(b))
		}
		attrs = append(attrs, attr{
			typ:  order.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER),
			data: b[unix.SizeofRtAttr:n],
		})
		b = b[min(align(n), len(b)):]
	}
	return attrs, nil
}

// encode builds a request: a header, the fixed part of the family's
// message (ifinfomsg, ifaddrmsg, rtmsg) and its attributes.
func encode(typ, flags uint16, seq uint32, fixed []byte, attrs ...attr) []byte {
	size := unix.SizeofNlMsghdr + align(len(fixed))
	for _, a := range attrs {
		size += align(unix.SizeofRtAttr + len(a.data))
	}
	b := make([]byte, size)
	order.PutUint32(b[0:4], uint32(size))
	order.PutUint16(b[4:6], typ)
	order.PutUint16(b[6:8], flags)
	order.PutUint32(b[8:12], seq)
	// nlmsg_pid 0: the kernel fills in the socket's port.
	off := unix.SizeofNlMsghdr
	copy(b[off:], fixed)
	off += align(len(fixed))
	for _, a := range attrs {
		n := unix.SizeofRtAttr + len(a.data)
		order.PutUint16(b[off:off+2], uint16(n))
		order.PutUint16(b[off+2:off+4], a.typ)
		copy(b[off+unix.SizeofRtAttr:], a.data)
		off += align(n)
	}
	return b
}

// ifInfo is struct ifinfomsg (include/uapi/linux/rtnetlink.h).
type ifInfo struct {
	family uint8
	typ    uint16
	index  int32
	flags  uint32
	change uint32
}

func (m ifInfo) bytes() []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = m.family
	order.PutUint16(b[2:4], m.typ)
	order.PutUint32(b[4:8], uint32(m.index))
	order.PutUint32(b[8:12], m.flags)
	order.PutUint32(b[12:16], m.change)
	return b
}

func parseIfInfo(b []byte) (ifInfo, []byte, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return ifInfo{}, nil, fmt.Errorf("%w: ifinfomsg of %d bytes", errMalformed, len(b))
	}
	return ifInfo{
		family: b[0],
		typ:    order.Uint16(b[2:4]),
		index:  int32(order.Uint32(b[4:8])),
		flags:  order.Uint32(b[8:12]),
		change: order.Uint32(b[12:16]),
	}, b[unix.SizeofIfInfomsg:], nil
}

// ifAddr is struct ifaddrmsg (include/uapi/linux/if_addr.h).
type ifAddr struct {
	family    uint8
	prefixLen uint8
	flags     uint8
	scope     uint8
	index     uint32
}

func (m ifAddr) bytes() []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0], b[1], b[2], b[3] = m.family, m.prefixLen, m.flags, m.scope
	order.PutUint32(b[4:8], m.index)
	return b
}

func parseIfAddr(b []byte) (ifAddr, []byte, error) {
	if len(b) < unix.SizeofIfAddrmsg {
		return ifAddr{}, nil, fmt.Errorf("%w: ifaddrmsg of %d bytes", errMalformed, len(b))
	}
	return ifAddr{family: b[0], prefixLen: b[1], flags: b[2], scope: b[3], index: order.Uint32(b[4:8])},
		b[unix.SizeofIfAddrmsg:], nil
}

// rtMsg is struct rtmsg (include/uapi/linux/rtnetlink.h).
type rtMsg struct {
	family, dstLen, srcLen, tos, table, protocol, scope, typ uint8
	flags                                                    uint32
}

func (m rtMsg) bytes() []byte {
	b := make([]byte, unix.SizeofRtMsg)
	b[0], b[1], b[2], b[3] = m.family, m.dstLen, m.srcLen, m.tos
	b[4], b[5], b[6], b[7] = m.table, m.protocol, m.scope, m.typ
	order.PutUint32(b[8:12], m.flags)
	return b
}

func parseRtMsg(b []byte) (rtMsg, []byte, error) {
	if len(b) < unix.SizeofRtMsg {
		return rtMsg{}, nil, fmt.Errorf("%w: rtmsg of %d bytes", errMalformed, len(b))
	}
	return rtMsg{
		family: b[0], dstLen: b[1], srcLen: b[2], tos: b[3],
		table: b[4], protocol: b[5], scope: b[6], typ: b[7],
		flags: order.Uint32(b[8:12]),
	}, b[unix.SizeofRtMsg:], nil
}

// parseError reads an NLMSG_ERROR payload (struct nlmsgerr): the negative
// errno (0 for an acknowledgement) and, with extended acknowledgements,
// the kernel's message for it.
func parseError(m message) (errno unix.Errno, text string, err error) {
	if len(m.data) < unix.SizeofNlMsgerr {
		return 0, "", fmt.Errorf("%w: nlmsgerr of %d bytes", errMalformed, len(m.data))
	}
	code := int32(order.Uint32(m.data[0:4]))
	if code > 0 || code < -4095 {
		return 0, "", fmt.Errorf("%w: error code %d", errMalformed, code)
	}
	if m.flags&unix.NLM_F_ACK_TLVS == 0 {
		return unix.Errno(-code), "", nil
	}
	// With NETLINK_CAP_ACK the request comes back as its header only, and
	// the extended acknowledgement's attributes follow it.
	rest := m.data[unix.SizeofNlMsgerr:]
	if m.flags&unix.NLM_F_CAPPED == 0 {
		// The whole request was echoed: its length is in its header.
		n := int(order.Uint32(m.data[4:8]))
		if n < unix.SizeofNlMsghdr || 4+n > len(m.data) {
			return unix.Errno(-code), "", nil
		}
		rest = m.data[min(4+align(n), len(m.data)):]
	}
	attrs, perr := parseAttrs(rest)
	if perr != nil {
		return unix.Errno(-code), "", nil
	}
	for _, a := range attrs {
		if a.typ == unix.NLMSGERR_ATTR_MSG {
			text = cString(a.data)
		}
	}
	return unix.Errno(-code), text, nil
}

// cString is b up to its first NUL byte.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
