package net

import "testing"

// offeredGuestBits are the negotiable bits the fuzzers pick from.
const offeredGuestBits = FeatureCSUM | FeatureGuestCSUM | FeatureMTU | FeatureGuestTSO4 | FeatureGuestTSO6 |
	FeatureGuestECN | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN | FeatureMrgRxBuf

// FuzzCheckTransmit feeds guest headers and frames, under any negotiation
// and MTU, to the transmit checks. They must never panic, and whatever they
// accept must be a header the host kernel can take without trusting the
// guest: only negotiated offloads, a checksum inside the frame, and for
// TSO a TCP header that really is where csum_start says.
func FuzzCheckTransmit(f *testing.F) {
	tso, l4 := tcpFrame(frameSpec{payload: 3000, tcpOpts: 12})
	var gh [HeaderSize]byte
	gsoHeader(tso, l4, gsoTCPv4, 1436).encode(gh[:])
	f.Add(uint64(offeredGuestBits), uint16(1500), gh[:], tso)
	tso6, l6 := tcpFrame(frameSpec{ipv6: true, vlan: true, payload: 3000})
	gsoHeader(tso6, l6, gsoTCPv6|gsoECN, 1400).encode(gh[:])
	f.Add(uint64(offeredGuestBits), uint16(1500), gh[:], tso6)
	small, sl4 := tcpFrame(frameSpec{payload: 40})
	netHeader{Flags: hdrNeedsCsum, CsumStart: uint16(sl4), CsumOffset: 16}.encode(gh[:])
	f.Add(uint64(FeatureCSUM|FeatureMTU), uint16(576), gh[:], small)
	f.Add(uint64(0), uint16(68), make([]byte, HeaderSize), plainFrame(60, 0))

	f.Fuzz(func(t *testing.T, features uint64, mtu uint16, hdr, frame []byte) {
		if len(hdr) < HeaderSize || int(mtu) < MinMTU {
			return
		}
		o := negotiate(features & offeredGuestBits)
		frameLen := len(frame)
		head := frame[:min(frameLen, headerWindow)]
		h, why := checkTransmit(o, int(mtu), decodeHeader(hdr), head, frameLen)
		if why != 0 {
			if h != (netHeader{}) {
				t.Fatalf("refused (%v) with a non-zero header %+v", why, h)
			}
			return
		}
		if frameLen < ethHeaderLen || frameLen > maxFrame {
			t.Fatalf("accepted a %d-byte frame", frameLen)
		}
		if h.NumBuffers != 0 || h.Flags&^hdrNeedsCsum != 0 {
			t.Fatalf("accepted header %+v carries guest bits", h)
		}
		if h.Flags == 0 {
			if h != (netHeader{}) {
				t.Fatalf("header %+v without NEEDS_CSUM is not all zero", h)
			}
			if frameLen > maxPlainFrame(o, int(mtu)) {
				t.Fatalf("accepted a plain %d-byte frame over MTU %d", frameLen, mtu)
			}
			return
		}
		if !o.txCsum {
			t.Fatalf("NEEDS_CSUM passed without CSUM negotiated")
		}
		start, off := int(h.CsumStart), int(h.CsumOffset)
		if start < ethHeaderLen || start+off+2 > frameLen || int(h.HdrLen) < start+off+2 || int(h.HdrLen) > frameLen {
			t.Fatalf("checksum fields %+v do not fit a %d-byte frame", h, frameLen)
		}
		gso := h.GSOType &^ gsoECN
		if gso == gsoNone {
			if h.GSOType != 0 || h.GSOSize != 0 || frameLen > maxPlainFrame(o, int(mtu)) {
				t.Fatalf("plain frame of %d bytes with header %+v", frameLen, h)
			}
			return
		}
		ipv6 := gso == gsoTCPv6
		switch {
		case gso == gsoTCPv4 && !o.txTSO4, gso == gsoTCPv6 && !o.txTSO6, gso != gsoTCPv4 && gso != gsoTCPv6:
			t.Fatalf("GSO type %#x passed under %+v", h.GSOType, o)
		case h.GSOType&gsoECN != 0 && !o.txECN:
			t.Fatalf("ECN passed without HOST_ECN")
		}
		l3, tcp, end, ok := tcpHeaders(head, ipv6)
		if !ok || tcp != start || end != int(h.HdrLen) || off != tcpCsumOffset || h.GSOSize == 0 {
			t.Fatalf("TSO header %+v does not match the frame's headers (%d %d %d %v)", h, l3, tcp, end, ok)
		}
		if end > len(head) {
			t.Fatalf("TSO headers end at %d, beyond the %d bytes copied before the checks", end, len(head))
		}
		if (frameLen-end+int(h.GSOSize)-1)/int(h.GSOSize) > maxGSOSegments {
			t.Fatalf("TSO frame of %d segments", (frameLen-end)/int(h.GSOSize))
		}
	})
}

// FuzzCheckReceive: whatever the tap sends, the guest gets only headers
// its negotiation allows.
func FuzzCheckReceive(f *testing.F) {
	var b [HeaderSize]byte
	netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.encode(b[:])
	f.Add(uint64(offeredGuestBits), uint16(1500), b[:], uint32(30000))
	f.Add(uint64(0), uint16(1500), b[:], uint32(1514))
	f.Fuzz(func(t *testing.T, features uint64, mtu uint16, hdr []byte, frameLen uint32) {
		if len(hdr) < HeaderSize || int(mtu) < MinMTU {
			return
		}
		o := negotiate(features & offeredGuestBits)
		g, why := checkReceive(o, int(mtu), decodeHeader(hdr), int(frameLen))
		if why != 0 {
			return
		}
		if !o.rxCsum && g.Flags != 0 {
			t.Fatalf("flags %#x without GUEST_CSUM", g.Flags)
		}
		if g.Flags&^(hdrNeedsCsum|hdrDataValid) != 0 || g.NumBuffers != 0 {
			t.Fatalf("header %+v", g)
		}
		if g.Flags&hdrNeedsCsum != 0 && int(g.CsumStart)+int(g.CsumOffset)+2 > int(frameLen) {
			t.Fatalf("checksum outside the frame: %+v, %d bytes", g, frameLen)
		}
		switch gso := g.GSOType &^ gsoECN; {
		case gso == gsoNone:
			if g.GSOType != 0 || int(frameLen) > maxPlainFrame(o, int(mtu)) {
				t.Fatalf("plain frame: %+v, %d bytes", g, frameLen)
			}
		case gso == gsoTCPv4 && o.rxTSO4, gso == gsoTCPv6 && o.rxTSO6:
			if g.GSOType&gsoECN != 0 && !o.rxECN || g.Flags&hdrNeedsCsum == 0 {
				t.Fatalf("TSO header %+v under %+v", g, o)
			}
		default:
			t.Fatalf("GSO type %#x under %+v", g.GSOType, o)
		}
	})
}
