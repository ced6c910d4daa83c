package net

import (
	"bytes"
	"testing"
)

// allOffloads is what a Linux guest negotiates with this device.
var allOffloads = negotiate(FeatureCSUM | FeatureGuestCSUM | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN |
	FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN | FeatureMrgRxBuf | FeatureMTU)

func TestNegotiateDependencies(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		want     offloads
		tap      int
	}{
		{"none", 0, offloads{}, 0},
		{"everything", FeatureCSUM | FeatureGuestCSUM | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN |
			FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN | FeatureMrgRxBuf | FeatureMTU,
			offloads{txCsum: true, txTSO4: true, txTSO6: true, txECN: true,
				rxCsum: true, rxTSO4: true, rxTSO6: true, rxECN: true, mergeable: true, mtu: true},
			tunFCSUM | tunFTSO4 | tunFTSO6 | tunFTSOECN},
		// A driver that acks a feature without its prerequisite gets
		// neither: no TSO on the tap without GUEST_CSUM.
		{"guest TSO without GUEST_CSUM", FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN, offloads{}, 0},
		{"host TSO without CSUM", FeatureHostTSO4 | FeatureHostECN, offloads{}, 0},
		{"ECN without TSO", FeatureCSUM | FeatureGuestCSUM | FeatureHostECN | FeatureGuestECN,
			offloads{txCsum: true, rxCsum: true}, tunFCSUM},
		{"receive checksum only", FeatureGuestCSUM, offloads{rxCsum: true}, tunFCSUM},
		{"IPv4 only", FeatureGuestCSUM | FeatureGuestTSO4, offloads{rxCsum: true, rxTSO4: true}, tunFCSUM | tunFTSO4},
	}
	for _, tt := range tests {
		got := negotiate(tt.features)
		if got != tt.want {
			t.Errorf("%s: negotiate(%#x) = %+v, want %+v", tt.name, tt.features, got, tt.want)
		}
		if f := got.tapFlags(); f != tt.tap {
			t.Errorf("%s: tapFlags() = %#x, want %#x", tt.name, f, tt.tap)
		}
	}
}

func TestGuestFeaturesFor(t *testing.T) {
	tests := []struct {
		tap  int
		want uint64
	}{
		{0, 0},
		{tunFTSO4, 0}, // TSO frames without partial checksums do not exist
		{tunFCSUM, FeatureGuestCSUM},
		{tunFCSUM | tunFTSOECN, FeatureGuestCSUM},
		{tunFCSUM | tunFTSO4 | tunFTSO6 | tunFTSOECN, FeatureGuestCSUM | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN},
	}
	for _, tt := range tests {
		if got := guestFeaturesFor(tt.tap); got != tt.want {
			t.Errorf("guestFeaturesFor(%#x) = %#x, want %#x", tt.tap, got, tt.want)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := netHeader{Flags: 1, GSOType: 0x81, HdrLen: 0x1234, GSOSize: 1448, CsumStart: 34, CsumOffset: 16, NumBuffers: 7}
	var b [HeaderSize]byte
	h.encode(b[:])
	want := []byte{1, 0x81, 0x34, 0x12, 0xa8, 0x05, 34, 0, 16, 0, 7, 0}
	if !bytes.Equal(b[:], want) {
		t.Fatalf("encode = % x, want % x", b, want)
	}
	if got := decodeHeader(b[:]); got != h {
		t.Fatalf("decode(encode(h)) = %+v, want %+v", got, h)
	}
}

// gsoHeader is the header a Linux driver puts on a TSO frame.
func gsoHeader(frame []byte, l4 int, typ uint8, mss uint16) netHeader {
	return netHeader{Flags: hdrNeedsCsum, GSOType: typ, HdrLen: uint16(len(frame)), // a hint only
		GSOSize: mss, CsumStart: uint16(l4), CsumOffset: 16}
}

func TestCheckTransmitAccepts(t *testing.T) {
	f4, l4v4 := tcpFrame(frameSpec{payload: 20000, tcpOpts: 12})
	f6, l4v6 := tcpFrame(frameSpec{ipv6: true, payload: 20000})
	fv, l4vl := tcpFrame(frameSpec{vlan: true, payload: 5000})
	small, l4s := tcpFrame(frameSpec{payload: 100})
	tests := []struct {
		name  string
		o     offloads
		g     netHeader
		frame []byte
		want  netHeader
	}{
		{"plain, nothing negotiated: guest junk in unused fields is not passed on", offloads{},
			netHeader{Flags: hdrDataValid | 0x40, HdrLen: 999, GSOSize: 7, CsumStart: 1, CsumOffset: 2, NumBuffers: 9},
			plainFrame(1514, 1), netHeader{}},
		{"checksum offload", allOffloads, netHeader{Flags: hdrNeedsCsum, CsumStart: uint16(l4s), CsumOffset: 16},
			small, netHeader{Flags: hdrNeedsCsum, HdrLen: uint16(l4s + 18), CsumStart: uint16(l4s), CsumOffset: 16}},
		{"TSO IPv4 with options: hdr_len computed, not the guest's hint", allOffloads, gsoHeader(f4, l4v4, gsoTCPv4, 1436), f4,
			netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: uint16(l4v4 + 32), GSOSize: 1436, CsumStart: uint16(l4v4), CsumOffset: 16}},
		{"TSO IPv6", allOffloads, gsoHeader(f6, l4v6, gsoTCPv6, 1440), f6,
			netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv6, HdrLen: uint16(l4v6 + 20), GSOSize: 1440, CsumStart: uint16(l4v6), CsumOffset: 16}},
		{"TSO IPv4 with ECN", allOffloads, gsoHeader(f4, l4v4, gsoTCPv4|gsoECN, 1436), f4,
			netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4 | gsoECN, HdrLen: uint16(l4v4 + 32), GSOSize: 1436, CsumStart: uint16(l4v4), CsumOffset: 16}},
		{"TSO behind a VLAN tag", allOffloads, gsoHeader(fv, l4vl, gsoTCPv4, 1456), fv,
			netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: uint16(l4vl + 20), GSOSize: 1456, CsumStart: uint16(l4vl), CsumOffset: 16}},
	}
	for _, tt := range tests {
		got, why := checkTransmit(tt.o, 1500, tt.g, tt.frame[:min(len(tt.frame), headerWindow)], len(tt.frame))
		if why != 0 || got != tt.want {
			t.Errorf("%s: checkTransmit = %+v, %v; want %+v, accepted", tt.name, got, why, tt.want)
		}
	}
}

func TestCheckTransmitRejects(t *testing.T) {
	f4, l4 := tcpFrame(frameSpec{payload: 20000})
	f6, l6 := tcpFrame(frameSpec{ipv6: true, payload: 20000})
	good := gsoHeader(f4, l4, gsoTCPv4, 1460)
	with := func(mod func(*netHeader)) netHeader { h := good; mod(&h); return h }
	frameWith := func(mod func([]byte)) []byte { f := append([]byte(nil), f4...); mod(f); return f }
	noTSO4 := allOffloads
	noTSO4.txTSO4 = false
	noECN := allOffloads
	noECN.txECN = false
	tests := []struct {
		name  string
		o     offloads
		g     netHeader
		frame []byte
		want  DropReason
	}{
		{"runt", allOffloads, netHeader{}, plainFrame(13, 0), TxMalformed},
		{"beyond the MTU without TSO", allOffloads, netHeader{}, plainFrame(1500+18+1, 0), TxTooLong},
		{"NEEDS_CSUM without CSUM", offloads{}, netHeader{Flags: hdrNeedsCsum, CsumStart: 34, CsumOffset: 16}, plainFrame(100, 0), TxNotNegotiated},
		{"checksum field past the end", allOffloads, netHeader{Flags: hdrNeedsCsum, CsumStart: 90, CsumOffset: 9}, plainFrame(100, 0), TxMalformed},
		{"checksum start in the Ethernet header", allOffloads, netHeader{Flags: hdrNeedsCsum, CsumStart: 4, CsumOffset: 0}, plainFrame(100, 0), TxMalformed},
		{"checksum start far beyond the frame", allOffloads, netHeader{Flags: hdrNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}, plainFrame(100, 0), TxMalformed},
		{"ECN bit alone", allOffloads, netHeader{GSOType: gsoECN}, plainFrame(100, 0), TxMalformed},
		{"TSO4 not negotiated", noTSO4, good, f4, TxNotNegotiated},
		{"ECN not negotiated", noECN, with(func(h *netHeader) { h.GSOType |= gsoECN }), f4, TxNotNegotiated},
		{"UFO", allOffloads, with(func(h *netHeader) { h.GSOType = 3 }), f4, TxNotNegotiated},
		{"USO", allOffloads, with(func(h *netHeader) { h.GSOType = 5 }), f4, TxNotNegotiated},
		{"unknown GSO type", allOffloads, with(func(h *netHeader) { h.GSOType = 0x7f }), f4, TxNotNegotiated},
		{"TSO without NEEDS_CSUM", allOffloads, with(func(h *netHeader) { h.Flags = 0 }), f4, TxMalformed},
		{"TSO with gso_size 0", allOffloads, with(func(h *netHeader) { h.GSOSize = 0 }), f4, TxMalformed},
		{"TSO with absurdly many segments", allOffloads, with(func(h *netHeader) { h.GSOSize = 1 }), f4, TxMalformed},
		{"TSO segments beyond the MTU", allOffloads, with(func(h *netHeader) { h.GSOSize = 1461 }), f4, TxTooLong},
		{"TSO csum_start not the TCP header", allOffloads, with(func(h *netHeader) { h.CsumStart = 14 }), f4, TxMalformed},
		{"TSO csum_offset not TCP's", allOffloads, with(func(h *netHeader) { h.CsumOffset = 6 }), f4, TxMalformed},
		{"TCPV4 on an IPv6 frame", allOffloads, gsoHeader(f6, l6, gsoTCPv4, 1440), f6, TxMalformed},
		{"TCPV6 on an IPv4 frame", allOffloads, with(func(h *netHeader) { h.GSOType = gsoTCPv6 }), f4, TxMalformed},
		{"TSO on UDP", allOffloads, good, frameWith(func(f []byte) { f[14+9] = 17 }), TxMalformed},
		{"TSO on an IP fragment", allOffloads, good, frameWith(func(f []byte) { f[14+6] = 0x20 }), TxMalformed},
		{"TSO with IHL below 5", allOffloads, good, frameWith(func(f []byte) { f[14] = 0x44 }), TxMalformed},
		{"TSO with IP version 6 in an IPv4 ethertype", allOffloads, good, frameWith(func(f []byte) { f[14] = 0x65 }), TxMalformed},
		{"TSO with TCP data offset below 5", allOffloads, good, frameWith(func(f []byte) { f[l4+12] = 0x40 }), TxMalformed},
		{"TSO on ARP", allOffloads, good, frameWith(func(f []byte) { f[12], f[13] = 0x08, 0x06 }), TxMalformed},
		{"TSO frame shorter than its headers", allOffloads, good, f4[:l4+10], TxMalformed},
	}
	for _, tt := range tests {
		_, why := checkTransmit(tt.o, 1500, tt.g, tt.frame[:min(len(tt.frame), headerWindow)], len(tt.frame))
		if why != tt.want {
			t.Errorf("%s: checkTransmit reason = %v, want %v", tt.name, why, tt.want)
		}
	}
	// Without VIRTIO_NET_F_MTU the guest may choose a larger MTU.
	noMTU := allOffloads
	noMTU.mtu = false
	if _, why := checkTransmit(noMTU, 1500, netHeader{}, plainFrame(9000, 0)[:headerWindow], 9000); why != 0 {
		t.Errorf("a 9000-byte frame without VIRTIO_NET_F_MTU was refused: %v", why)
	}
	if _, why := checkTransmit(noMTU, 1500, netHeader{}, plainFrame(maxFrame+1, 0)[:headerWindow], maxFrame+1); why != TxTooLong {
		t.Errorf("a frame beyond maxFrame: reason %v, want %v", why, TxTooLong)
	}
}

func TestCheckTransmitIPv6Extensions(t *testing.T) {
	f, l4 := tcpFrame(frameSpec{ipv6: true, payload: 3000})
	// Insert a destination options header (8 bytes) before TCP.
	withExt := func(n int, kind byte) ([]byte, int) {
		var b []byte
		b = append(b, f[:l4]...)
		b[14+6] = kind
		for i := range n {
			next := kind
			if i == n-1 {
				next = 6
			}
			b = append(b, next, 0, 1, 4, 0, 0, 0, 0) // 8 bytes, a PadN option
		}
		return append(b, f[l4:]...), l4 + 8*n
	}
	for _, tt := range []struct {
		n    int
		kind byte
		ok   bool
	}{{1, 60, true}, {4, 60, true}, {5, 60, false}, {1, 0, true}, {1, 44, false}} {
		frame, tcp := withExt(tt.n, tt.kind)
		_, why := checkTransmit(allOffloads, 1500, gsoHeader(frame, tcp, gsoTCPv6, 1400), frame[:headerWindow], len(frame))
		if (why == 0) != tt.ok {
			t.Errorf("%d extension headers of type %d: reason %v, want accepted %v", tt.n, tt.kind, why, tt.ok)
		}
	}
	// An extension header reaching past the bytes copied before the checks
	// (it would put the TCP header where the guest can still change it).
	frame, tcp := withExt(1, 60)
	frame[l4+1] = 30 // 248 bytes
	frame = append(frame[:tcp], append(make([]byte, 240), frame[tcp:]...)...)
	_, why := checkTransmit(allOffloads, 1500, gsoHeader(frame, tcp+240, gsoTCPv6, 1400), frame[:headerWindow], len(frame))
	if why != TxMalformed {
		t.Errorf("TCP header beyond the header window: reason %v, want %v", why, TxMalformed)
	}
}

func TestCheckReceive(t *testing.T) {
	noGuestCsum := allOffloads
	noGuestCsum.rxCsum, noGuestCsum.rxTSO4, noGuestCsum.rxTSO6, noGuestCsum.rxECN = false, false, false, false
	noTSO6 := allOffloads
	noTSO6.rxTSO6 = false
	tso := netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16, NumBuffers: 5}
	tests := []struct {
		name     string
		o        offloads
		h        netHeader
		frameLen int
		want     netHeader
		why      DropReason
	}{
		{"plain", allOffloads, netHeader{}, 1514, netHeader{}, 0},
		{"data valid kept with GUEST_CSUM", allOffloads, netHeader{Flags: hdrDataValid}, 1514, netHeader{Flags: hdrDataValid}, 0},
		{"data valid cleared without GUEST_CSUM", noGuestCsum, netHeader{Flags: hdrDataValid | 4}, 1514, netHeader{}, 0},
		{"TSO passed on, num_buffers left to the device", allOffloads, tso, 30000,
			netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, 0},
		{"partial checksum without GUEST_CSUM", noGuestCsum, netHeader{Flags: hdrNeedsCsum, CsumStart: 34, CsumOffset: 16}, 100, netHeader{}, RxNotNegotiated},
		{"TSO6 not negotiated", noTSO6, netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv6, GSOSize: 1400, CsumStart: 54, CsumOffset: 16}, 30000, netHeader{}, RxNotNegotiated},
		{"UFO", allOffloads, netHeader{Flags: hdrNeedsCsum, GSOType: 3, GSOSize: 1400, CsumStart: 34, CsumOffset: 6}, 30000, netHeader{}, RxNotNegotiated},
		{"checksum outside the frame", allOffloads, netHeader{Flags: hdrNeedsCsum, CsumStart: 90, CsumOffset: 16}, 100, netHeader{}, RxMalformed},
		{"beyond the MTU without TSO", allOffloads, netHeader{}, 1519, netHeader{}, RxTooLong},
		{"runt", allOffloads, netHeader{}, 10, netHeader{}, RxMalformed},
	}
	for _, tt := range tests {
		got, why := checkReceive(tt.o, 1500, tt.h, tt.frameLen)
		if why != tt.why || (why == 0 && got != tt.want) {
			t.Errorf("%s: checkReceive = %+v, %v; want %+v, %v", tt.name, got, why, tt.want, tt.why)
		}
	}
}
