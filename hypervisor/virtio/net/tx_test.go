package net

import (
	"bytes"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio/mmiotest"
)

func TestTransmitPlain(t *testing.T) {
	r := newRig(t, rigOpts{})
	// Junk in fields that flags 0 and GSO_NONE make meaningless.
	f := plainFrame(1514, 0xab)
	r.send(t, netHeader{Flags: hdrDataValid, HdrLen: 9, CsumStart: 3, CsumOffset: 4, NumBuffers: 7}, f, 3)
	h, got := r.tapRead(t, 5*time.Second)
	if h != (netHeader{}) || !bytes.Equal(got, f) {
		t.Fatalf("tap got header %+v and %d bytes; want a zero header and the frame", h, len(got))
	}
	if s := r.stats(); s.TxFrames != 1 || s.TxBytes != 1514 {
		t.Errorf("stats %v", s)
	}
}

func TestTransmitOffloads(t *testing.T) {
	r := newRig(t, rigOpts{})
	// Checksum offload.
	small, l4 := tcpFrame(frameSpec{payload: 300})
	r.send(t, netHeader{Flags: hdrNeedsCsum, CsumStart: uint16(l4), CsumOffset: 16}, small, 2)
	h, got := r.tapRead(t, 5*time.Second)
	want := netHeader{Flags: hdrNeedsCsum, HdrLen: uint16(l4 + 18), CsumStart: uint16(l4), CsumOffset: 16}
	if h != want || !bytes.Equal(got, small) {
		t.Fatalf("checksum offload: tap header %+v, want %+v (frame equal: %v)", h, want, bytes.Equal(got, small))
	}
	// TSO, the frame in many small descriptors: the headers straddle them.
	big, l4 := tcpFrame(frameSpec{payload: 40000, tcpOpts: 12})
	r.send(t, gsoHeader(big, l4, gsoTCPv4, 1436), big, 40)
	h, got = r.tapRead(t, 5*time.Second)
	want = netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: uint16(l4 + 32), GSOSize: 1436, CsumStart: uint16(l4), CsumOffset: 16}
	if h != want || !bytes.Equal(got, big) {
		t.Fatalf("TSO: tap header %+v, want %+v (frame equal: %v)", h, want, bytes.Equal(got, big))
	}
}

// Bad frames are dropped and counted, and the queue keeps working.
func TestTransmitDropsBadFrames(t *testing.T) {
	r := newRig(t, rigOpts{features: virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | FeatureMrgRxBuf | FeatureMTU})
	small, l4 := tcpFrame(frameSpec{payload: 300})
	big, bl4 := tcpFrame(frameSpec{payload: 20000})
	r.send(t, netHeader{Flags: hdrNeedsCsum, CsumStart: uint16(l4), CsumOffset: 16}, small, 1) // no CSUM
	r.send(t, gsoHeader(big, bl4, gsoTCPv4, 1460), big, 1)                                     // no HOST_TSO4
	r.send(t, netHeader{}, plainFrame(1519, 1), 1)                                             // beyond the MTU
	r.send(t, netHeader{}, plainFrame(5, 1), 1)                                                // runt
	r.tapQuiet(t)
	s := r.stats()
	if s.Dropped[TxNotNegotiated] != 2 || s.Dropped[TxTooLong] != 1 || s.Dropped[TxMalformed] != 1 || s.TxFrames != 0 {
		t.Fatalf("stats after four bad frames: %v", s)
	}
	f := plainFrame(1518, 2)
	r.send(t, netHeader{}, f, 1)
	if _, got := r.tapRead(t, 5*time.Second); !bytes.Equal(got, f) {
		t.Fatal("a good frame after the bad ones did not reach the tap")
	}
}

// A chain with more buffers than one writev takes is still sent whole.
func TestTransmitManyBuffers(t *testing.T) {
	r := newRig(t, rigOpts{})
	frame := plainFrame(256+1030, 0)
	for i := range frame[14:] {
		frame[14+i] = byte(i)
	}
	// An indirect table: the header and the header window in one buffer,
	// then one byte per descriptor.
	table := r.tx.End()
	data := table + 16*1024
	hdr := make([]byte, HeaderSize)
	if err := r.mem.WriteAt(append(hdr, frame...), data); err != nil {
		t.Fatal(err)
	}
	const n = 1 + 1023
	r.tx.WriteTableDescriptor(table, 0, descriptorAt(data, HeaderSize+256, true, 1))
	for i := uint16(1); i < n; i++ {
		r.tx.WriteTableDescriptor(table, i, descriptorAt(data+HeaderSize+256+uint64(i-1), 1, i+1 < n, i+1))
	}
	r.tx.WriteDescriptor(0, queueDesc(table, 16*n))
	r.tx.Publish(0)
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, txQueue)
	_, got := r.tapRead(t, 5*time.Second)
	if want := frame[:256+1023]; !bytes.Equal(got, want) {
		t.Fatalf("tap got %d bytes, want the %d-byte frame", len(got), len(want))
	}
}

// A guest that floods the transmit queue with garbage neither stops the
// device nor makes it write anything to the tap.
func TestTransmitGarbage(t *testing.T) {
	r := newRig(t, rigOpts{})
	for i := range 200 {
		junk := make([]byte, 12+i*7)
		for j := range junk {
			junk[j] = byte(i*31 + j*17)
		}
		junk[1] = byte(i) | 1 // always a GSO type, never plain
		r.send(t, decodeHeader(junk), junk[12:], 1+i%5)
	}
	r.tapQuiet(t)
	if s := r.stats(); s.TxFrames != 0 {
		t.Fatalf("garbage reached the tap: %v", s)
	}
	f := plainFrame(100, 1)
	r.send(t, netHeader{}, f, 1)
	if _, got := r.tapRead(t, 5*time.Second); !bytes.Equal(got, f) {
		t.Fatal("the device stopped sending after garbage")
	}
}
