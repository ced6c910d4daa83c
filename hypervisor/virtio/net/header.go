package net

import "encoding/binary"

// HeaderSize is the size of struct virtio_net_hdr with num_buffers: the
// guest's header on both queues (a VERSION_1 device always uses it), and
// the vnet header size the device sets on its tap, so that a frame needs
// the same header room on both sides.
const HeaderSize = 12

// Header flags and GSO types (virtio 1.2, 5.1.6; the same values as
// include/uapi/linux/virtio_net.h).
const (
	hdrNeedsCsum = 1
	hdrDataValid = 2

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoTCPv6 = 4
	gsoECN   = 0x80
)

// Frame layout limits.
const (
	ethHeaderLen = 14
	vlanTagLen   = 4
	// maxFrame is the largest frame, without the virtio header, taken in
	// either direction: an Ethernet header, two VLAN tags, an IPv6 header
	// and the largest IP payload (virtio 1.2, 5.1.6.3 counts 65589 bytes
	// without tags).
	maxFrame = ethHeaderLen + 2*vlanTagLen + 40 + 65535
	// headerWindow is how much of a transmitted frame the device copies
	// out of guest memory before checking it: every header the checks
	// read lies inside it, so the guest cannot change what was checked
	// before the host kernel reads it.
	headerWindow = 256
	// maxIPv6Extensions bounds the extension headers walked in a TSO
	// frame.
	maxIPv6Extensions = 4
	// maxGSOSegments bounds the segments one TSO frame may turn into in
	// the host kernel: a frame of 64 KiB with a one-byte gso_size would
	// otherwise become 65535 packets. Linux never sends an MSS below 48
	// bytes (tcp_min_snd_mss) less its TCP options, so a legitimate
	// 64 KiB frame stays well under it.
	maxGSOSegments = 4096
	// tcpCsumOffset is where the checksum lies in a TCP header.
	tcpCsumOffset = 16
)

// netHeader mirrors struct virtio_net_hdr_mrg_rxbuf
// (include/uapi/linux/virtio_net.h), little-endian on the wire.
type netHeader struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16
}

// decodeHeader reads a header. Preconditions: len(b) >= HeaderSize.
func decodeHeader(b []byte) netHeader {
	le := binary.LittleEndian
	return netHeader{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     le.Uint16(b[2:]),
		GSOSize:    le.Uint16(b[4:]),
		CsumStart:  le.Uint16(b[6:]),
		CsumOffset: le.Uint16(b[8:]),
		NumBuffers: le.Uint16(b[10:]),
	}
}

// encode writes h. Preconditions: len(b) >= HeaderSize.
func (h netHeader) encode(b []byte) {
	le := binary.LittleEndian
	b[0], b[1] = h.Flags, h.GSOType
	le.PutUint16(b[2:], h.HdrLen)
	le.PutUint16(b[4:], h.GSOSize)
	le.PutUint16(b[6:], h.CsumStart)
	le.PutUint16(b[8:], h.CsumOffset)
	le.PutUint16(b[10:], h.NumBuffers)
}

// maxPlainFrame is the largest frame without segmentation offload: the MTU
// plus an Ethernet header and one VLAN tag once the driver agreed to the
// MTU (virtio 1.2, 5.1.4.1), else anything up to maxFrame (a driver that
// did not negotiate VIRTIO_NET_F_MTU may pick its own).
func maxPlainFrame(o offloads, mtu int) int {
	if o.mtu {
		return mtu + ethHeaderLen + vlanTagLen
	}
	return maxFrame
}

// checkTransmit validates the header and frame a guest transmits against
// the negotiated offloads and returns the header to hand the host kernel.
// head is the start of the frame (up to headerWindow bytes, a private copy)
// and frameLen its whole length. The returned header is built from checked
// values only: guest bytes are never passed through. A zero reason means
// the frame may be sent.
//
// Preconditions: len(head) == min(frameLen, headerWindow).
func checkTransmit(o offloads, mtu int, g netHeader, head []byte, frameLen int) (netHeader, DropReason) {
	if frameLen < ethHeaderLen {
		return netHeader{}, TxMalformed
	}
	if frameLen > maxFrame {
		return netHeader{}, TxTooLong
	}
	// Flag bits other than NEEDS_CSUM are ignored (virtio 1.2, 5.1.6.2.2:
	// the device ignores bits it does not recognize; DATA_VALID and
	// RSC_INFO are the device's to set).
	needsCsum := g.Flags&hdrNeedsCsum != 0
	if needsCsum && !o.txCsum {
		return netHeader{}, TxNotNegotiated
	}
	gso := g.GSOType &^ gsoECN
	ecn := g.GSOType&gsoECN != 0
	if gso == gsoNone {
		if ecn {
			return netHeader{}, TxMalformed // the ECN bit qualifies a TSO type
		}
		if frameLen > maxPlainFrame(o, mtu) {
			return netHeader{}, TxTooLong
		}
		if !needsCsum {
			return netHeader{}, 0
		}
		start, off := int(g.CsumStart), int(g.CsumOffset)
		// The checksum starts after the Ethernet header and its field
		// lies inside the frame.
		if start < ethHeaderLen || start+off+2 > frameLen {
			return netHeader{}, TxMalformed
		}
		return netHeader{Flags: hdrNeedsCsum, HdrLen: uint16(start + off + 2),
			CsumStart: g.CsumStart, CsumOffset: g.CsumOffset}, 0
	}

	var ipv6 bool
	switch {
	case gso == gsoTCPv4 && o.txTSO4:
	case gso == gsoTCPv6 && o.txTSO6:
		ipv6 = true
	default:
		return netHeader{}, TxNotNegotiated // UFO, USO, unknown types, or TSO not agreed
	}
	if ecn && !o.txECN {
		return netHeader{}, TxNotNegotiated
	}
	if !needsCsum {
		return netHeader{}, TxMalformed // a TSO frame always needs its checksums
	}
	l3, l4, end, ok := tcpHeaders(head, ipv6)
	// The checksum to fill in is the TCP one: csum_start at the TCP header.
	if !ok || int(g.CsumStart) != l4 || g.CsumOffset != tcpCsumOffset {
		return netHeader{}, TxMalformed
	}
	size := int(g.GSOSize)
	payload := frameLen - end
	if size == 0 || payload > size*maxGSOSegments {
		return netHeader{}, TxMalformed
	}
	// Every segment, IP and TCP headers plus gso_size bytes, fits the MTU.
	limit := 65535
	if o.mtu {
		limit = mtu
	}
	if end-l3+size > limit {
		return netHeader{}, TxTooLong
	}
	return netHeader{Flags: hdrNeedsCsum, GSOType: g.GSOType, HdrLen: uint16(end), GSOSize: g.GSOSize,
		CsumStart: uint16(l4), CsumOffset: tcpCsumOffset}, 0
}

// tcpHeaders parses the Ethernet header (with up to two VLAN tags), the IP
// header of the given version and the TCP header at the start of a frame,
// and returns where the IP and TCP headers start and where the TCP header
// ends. ok is false unless all of them lie inside head and describe an
// unfragmented TCP packet.
func tcpHeaders(head []byte, ipv6 bool) (l3, l4, end int, ok bool) {
	be := binary.BigEndian
	if len(head) < ethHeaderLen {
		return 0, 0, 0, false
	}
	etype := be.Uint16(head[12:])
	l3 = ethHeaderLen
	for tags := 0; tags < 2 && (etype == 0x8100 || etype == 0x88a8); tags++ {
		if l3+vlanTagLen > len(head) {
			return 0, 0, 0, false
		}
		etype = be.Uint16(head[l3+2:])
		l3 += vlanTagLen
	}
	if !ipv6 {
		if etype != 0x0800 || l3+20 > len(head) {
			return 0, 0, 0, false
		}
		ihl := int(head[l3]&0x0f) * 4
		fragment := be.Uint16(head[l3+6:])&0x3fff != 0 // MF or an offset
		if head[l3]>>4 != 4 || ihl < 20 || head[l3+9] != 6 || fragment {
			return 0, 0, 0, false
		}
		l4 = l3 + ihl
	} else {
		if etype != 0x86dd || l3+40 > len(head) || head[l3]>>4 != 6 {
			return 0, 0, 0, false
		}
		next := head[l3+6]
		l4 = l3 + 40
		// Hop-by-hop, routing and destination options may precede TCP;
		// a fragment header or anything else may not.
		for n := 0; next == 0 || next == 43 || next == 60; n++ {
			if n == maxIPv6Extensions || l4+8 > len(head) {
				return 0, 0, 0, false
			}
			next = head[l4]
			l4 += (int(head[l4+1]) + 1) * 8
		}
		if next != 6 {
			return 0, 0, 0, false
		}
	}
	if l4+20 > len(head) {
		return 0, 0, 0, false
	}
	end = l4 + int(head[l4+12]>>4)*4
	if end < l4+20 || end > len(head) {
		return 0, 0, 0, false
	}
	return l3, l4, end, true
}

// checkReceive turns the header the host kernel put on a frame into the
// guest's, and refuses frames the guest did not negotiate: a tap whose
// offloads match the negotiation never sends them, but frames queued
// before a renegotiation may. num_buffers is left for the caller.
func checkReceive(o offloads, mtu int, h netHeader, frameLen int) (netHeader, DropReason) {
	if frameLen < ethHeaderLen || frameLen > maxFrame {
		return netHeader{}, RxMalformed
	}
	needsCsum := h.Flags&hdrNeedsCsum != 0
	var g netHeader
	if o.rxCsum {
		g.Flags = h.Flags & (hdrNeedsCsum | hdrDataValid)
	} else if needsCsum {
		return netHeader{}, RxNotNegotiated // the guest would get a wrong checksum
	}
	if needsCsum {
		if int(h.CsumStart) < ethHeaderLen || int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
			return netHeader{}, RxMalformed
		}
		g.CsumStart, g.CsumOffset = h.CsumStart, h.CsumOffset
	}
	gso := h.GSOType &^ gsoECN
	ecn := h.GSOType&gsoECN != 0
	switch {
	case gso == gsoNone && !ecn:
		if frameLen > maxPlainFrame(o, mtu) {
			return netHeader{}, RxTooLong
		}
		return g, 0
	case gso == gsoTCPv4 && o.rxTSO4, gso == gsoTCPv6 && o.rxTSO6:
	default:
		return netHeader{}, RxNotNegotiated
	}
	if ecn && !o.rxECN {
		return netHeader{}, RxNotNegotiated
	}
	if !needsCsum || h.GSOSize == 0 {
		return netHeader{}, RxMalformed
	}
	g.GSOType, g.GSOSize, g.HdrLen = h.GSOType, h.GSOSize, h.HdrLen
	return g, 0
}
