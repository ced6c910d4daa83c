package net

import (
	"bytes"
	"encoding/binary"
)

// Test frames: Ethernet (optionally VLAN-tagged), IPv4 or IPv6, TCP with
// the checksum field holding the pseudo-header sum as a driver leaves it
// for checksum offload, and a payload of a recognisable pattern.

var (
	guestMAC = [6]byte{0x02, 0, 0, 0, 0, 0x42}
	hostMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
)

type frameSpec struct {
	ipv6    bool
	vlan    bool
	payload int
	tcpOpts int // bytes of TCP options (a multiple of 4)
}

// tcpFrame builds a frame and returns it with the offset of its TCP header.
func tcpFrame(s frameSpec) (frame []byte, l4 int) {
	be := binary.BigEndian
	var b bytes.Buffer
	b.Write(hostMAC[:])
	b.Write(guestMAC[:])
	if s.vlan {
		b.Write([]byte{0x81, 0x00, 0x00, 0x07})
	}
	tcpLen := 20 + s.tcpOpts + s.payload
	if !s.ipv6 {
		b.Write([]byte{0x08, 0x00})
		ip := make([]byte, 20)
		ip[0] = 0x45
		be.PutUint16(ip[2:], uint16(min(20+tcpLen, 0xffff)))
		ip[6] = 0x40 // DF
		ip[8], ip[9] = 64, 6
		copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		be.PutUint16(ip[10:], ^onesSum(0, ip))
		b.Write(ip)
	} else {
		b.Write([]byte{0x86, 0xdd})
		ip := make([]byte, 40)
		ip[0] = 0x60
		be.PutUint16(ip[4:], uint16(min(tcpLen, 0xffff)))
		ip[6], ip[7] = 6, 64
		ip[8], ip[23] = 0xfd, 1  // fd00::1
		ip[24], ip[39] = 0xfd, 2 // fd00::2
		b.Write(ip)
	}
	l4 = b.Len()
	tcp := make([]byte, 20+s.tcpOpts)
	be.PutUint16(tcp[0:], 40000)
	be.PutUint16(tcp[2:], 5201)
	be.PutUint32(tcp[4:], 1000)
	tcp[12] = byte((20+s.tcpOpts)/4) << 4
	tcp[13] = 0x18 // PSH, ACK
	be.PutUint16(tcp[14:], 65535)
	for i := 20; i < len(tcp); i++ {
		tcp[i] = 1 // NOP options
	}
	b.Write(tcp)
	for i := range s.payload {
		b.WriteByte(byte(i*7 + i>>8))
	}
	frame = b.Bytes()
	// The pseudo-header sum, not inverted: what a driver leaves for the
	// device to finish (virtio 1.2, 5.1.6.2).
	be.PutUint16(frame[l4+16:], pseudoSum(frame, l4, s.ipv6))
	return frame, l4
}

// pseudoSum is the folded ones' complement sum of the TCP pseudo header of
// a test frame (its IP header has no options or extension headers).
func pseudoSum(frame []byte, l4 int, ipv6 bool) uint16 {
	addrs := frame[l4-8 : l4]
	if ipv6 {
		addrs = frame[l4-32 : l4]
	}
	sum := onesSum32(0, addrs) + 6 + uint32(len(frame)-l4)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// finishChecksum computes the checksum a device computes for a frame with
// NEEDS_CSUM: the ones' complement of the sum from start to the end,
// stored at start+off.
func finishChecksum(frame []byte, start, off int) []byte {
	f := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(f[start+off:], ^onesSum(0, f[start:]))
	return f
}

func onesSum(init uint32, b []byte) uint16 {
	s := onesSum32(init, b)
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func onesSum32(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum
}

// tcpChecksumOK verifies a complete TCP checksum.
func tcpChecksumOK(frame []byte, l4 int, ipv6 bool) bool {
	return onesSum(uint32(pseudoSum(frame, l4, ipv6)), frame[l4:]) == 0xffff
}

// plainFrame is an Ethernet frame of n bytes with a pattern fill.
func plainFrame(n int, fill byte) []byte {
	f := bytes.Repeat([]byte{fill}, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x42, 0x08, 0x00})
	return f
}
