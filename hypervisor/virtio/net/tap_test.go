package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio/mmiotest"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// netnsTap creates, in a network namespace of its own, an up tap with
// IFF_VNET_HDR and an AF_PACKET socket on it that carries virtio-net
// headers (PACKET_VNET_HDR): the test's view of the host kernel's side of
// the tap. Frames sent on the socket leave through the tap (to the
// device); frames the device writes arrive on it. Nothing leaves the
// namespace, which disappears with the last file.
func netnsTap(t *testing.T) (tap *os.File, pkt int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: a tap in a network namespace needs CAP_NET_ADMIN")
	}
	type result struct {
		tap *os.File
		pkt int
		err error
	}
	done := make(chan result)
	go func() {
		// The thread stays in the new namespace and is never unlocked:
		// it exits with this goroutine.
		runtime.LockOSThread()
		var r result
		r.tap, r.pkt, r.err = makeNetnsTap("vmnettest0")
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { unix.Close(r.pkt); r.tap.Close() })
	return r.tap, r.pkt
}

// makeNetnsTap does netnsTap's work on a locked thread.
func makeNetnsTap(name string) (*os.File, int, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, -1, err
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, err
	}
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, -1, err
	}
	tap := os.NewFile(uintptr(fd), "tap:"+name)
	fail := func(err error) (*os.File, int, error) { tap.Close(); return nil, -1, err }
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(sock)
	up, _ := unix.NewIfreq(name)
	up.SetUint16(unix.IFF_UP)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, up); err != nil {
		return fail(err)
	}
	idx, _ := unix.NewIfreq(name)
	if err := unix.IoctlIfreq(sock, unix.SIOCGIFINDEX, idx); err != nil {
		return fail(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	pkt, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fail(err)
	}
	if err := unix.SetsockoptInt(pkt, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(pkt)
		return fail(err)
	}
	if err := unix.SetsockoptTimeval(pkt, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 0, Usec: 200000}); err != nil {
		unix.Close(pkt)
		return fail(err)
	}
	if err := unix.Bind(pkt, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: int(idx.Uint32())}); err != nil {
		unix.Close(pkt)
		return fail(err)
	}
	return tap, pkt, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetVnetHdrLen is the header of a PACKET_VNET_HDR socket: struct
// virtio_net_hdr, without num_buffers.
const packetVnetHdrLen = 10

// hostSend sends a frame with a header through the tap to the device, as
// the host kernel's stack would.
func hostSend(t *testing.T, pkt int, h netHeader, frame []byte) {
	t.Helper()
	var b [HeaderSize]byte
	h.encode(b[:])
	if _, err := unix.Write(pkt, append(b[:packetVnetHdrLen], frame...)); err != nil {
		t.Fatalf("sending through the tap: %v", err)
	}
}

// hostReceive returns the next IPv4 frame the host kernel received from the
// tap, with its header, or false when none comes within timeout. Other
// traffic (the kernel's own IPv6 chatter, our own sends) is skipped.
func hostReceive(t *testing.T, pkt int, timeout time.Duration) (netHeader, []byte, bool) {
	t.Helper()
	buf := make([]byte, packetVnetHdrLen+maxFrame)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, from, err := unix.Recvfrom(pkt, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("receiving from the tap: %v", err)
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil || ll.Pkttype == unix.PACKET_OUTGOING || n < packetVnetHdrLen+ethHeaderLen {
			continue
		}
		frame := buf[packetVnetHdrLen:n]
		if binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
			continue
		}
		var hb [HeaderSize]byte
		copy(hb[:], buf[:packetVnetHdrLen])
		return decodeHeader(hb[:]), append([]byte(nil), frame...), true
	}
	return netHeader{}, nil, false
}

// realRig is a device on a real tap, driven by the queue mock.
type realRig struct {
	dev    *Device
	tr     *mmio.Transport
	rx, tx *queuetest.Driver
}

func bootReal(t *testing.T, dev *Device, acked uint64) *realRig {
	t.Helper()
	mem := queuetest.NewMemory(0x100000, 16<<20)
	r := &realRig{dev: dev}
	r.rx = queuetest.NewDriver(mem, 0x100000, 128, 4096)
	r.tx = queuetest.NewDriver(mem, r.rx.End(), 64, 4096)
	r.rx.EventIdx, r.tx.EventIdx = true, true
	r.tr = mmio.New(dev, mem, &countIRQ{})
	if _, err := mmiotest.Boot(r.tr, acked|virtio.FeatureVersion1, []*queuetest.Driver{r.rx, r.tx}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := r.rx.Add(queuetest.Writable(4096)); err != nil {
			t.Fatal(err)
		}
	}
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, rxQueue)
	return r
}

// guestReceive returns the next IPv4 frame the guest got, following
// num_buffers, reposting the buffers it used.
func (r *realRig) guestReceive(t *testing.T) (netHeader, []byte) {
	t.Helper()
	for {
		u, err := r.rx.WaitUsed(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		h := decodeHeader(u.Data)
		frame := append([]byte(nil), u.Data[HeaderSize:]...)
		for i := 1; i < int(h.NumBuffers); i++ {
			u, ok, err := r.rx.PopUsed()
			if !ok || err != nil {
				t.Fatalf("buffer %d of %d missing (%v)", i+1, h.NumBuffers, err)
			}
			frame = append(frame, u.Data...)
		}
		for range h.NumBuffers {
			r.rx.Add(queuetest.Writable(4096))
		}
		mmiotest.Write32(r.tr, mmio.RegQueueNotify, rxQueue)
		if len(frame) >= ethHeaderLen && binary.BigEndian.Uint16(frame[12:]) == 0x0800 {
			return h, frame
		}
	}
}

func (r *realRig) guestSend(t *testing.T, h netHeader, frame []byte) {
	t.Helper()
	var hb [HeaderSize]byte
	h.encode(hb[:])
	data := append(hb[:], frame...)
	var segs []queuetest.Segment
	for len(data) > 0 {
		n := min(4096, len(data))
		segs = append(segs, queuetest.Readable(data[:n]))
		data = data[n:]
	}
	if _, err := r.tx.AddIndirect(segs...); err != nil {
		t.Fatal(err)
	}
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, txQueue)
	if _, err := r.tx.WaitUsed(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// On a real tap the host kernel hands the device TSO frames exactly when
// the guest negotiated them, and otherwise segments and checksums itself
// (a tap with offloads the guest refused would pass it frames it cannot
// take); what the guest transmits with offloads reaches the host kernel
// with the offloads intact.
func TestRealTapOffloads(t *testing.T) {
	tapFile, pkt := netnsTap(t)
	dev, err := New(Config{Tap: tapFile, MAC: guestMAC, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	want := FeatureGuestCSUM | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN
	if dev.Features()&want != want {
		t.Fatalf("features %#x lack the receive offloads this kernel's tap supports", dev.Features())
	}
	frame, l4 := tcpFrame(frameSpec{payload: 30000})
	tso := netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: uint16(l4 + 20), GSOSize: 1448, CsumStart: uint16(l4), CsumOffset: 16}

	t.Run("guest with receive offloads gets TSO frames", func(t *testing.T) {
		r := bootReal(t, dev, dev.Features())
		defer mmiotest.Write32(r.tr, mmio.RegStatus, 0)
		hostSend(t, pkt, tso, frame)
		h, got := r.guestReceive(t)
		if h.GSOType != gsoTCPv4 || h.GSOSize != 1448 || h.Flags&hdrNeedsCsum == 0 || int(h.CsumStart) != l4 || !bytes.Equal(got, frame) {
			t.Fatalf("guest got header %+v and %d bytes (equal %v); want the whole TSO frame", h, len(got), bytes.Equal(got, frame))
		}
	})

	t.Run("guest without receive offloads gets segments with checksums", func(t *testing.T) {
		r := bootReal(t, dev, FeatureMrgRxBuf|FeatureMTU|FeatureCSUM|FeatureHostTSO4|virtio.FeatureIndirectDesc|virtio.FeatureEventIdx)
		defer mmiotest.Write32(r.tr, mmio.RegStatus, 0)
		hostSend(t, pkt, tso, frame)
		var payload []byte
		for len(payload) < 30000 {
			h, seg := r.guestReceive(t)
			if h.Flags&hdrNeedsCsum != 0 || h.GSOType != gsoNone || len(seg) > 1514 {
				t.Fatalf("guest without GUEST_CSUM/GUEST_TSO4 got header %+v with a %d-byte frame", h, len(seg))
			}
			if !tcpChecksumOK(seg, l4, false) {
				t.Fatalf("segment at payload offset %d has a bad TCP checksum", len(payload))
			}
			payload = append(payload, seg[l4+20:]...)
		}
		if !bytes.Equal(payload, frame[l4+20:]) {
			t.Fatal("the segments' payload differs from the TSO frame's")
		}
	})

	t.Run("guest TSO reaches the host kernel; a lying header does not", func(t *testing.T) {
		r := bootReal(t, dev, dev.Features())
		defer mmiotest.Write32(r.tr, mmio.RegStatus, 0)
		r.guestSend(t, gsoHeader(frame, l4, gsoTCPv4, 1448), frame)
		h, got, ok := hostReceive(t, pkt, 5*time.Second)
		if !ok {
			t.Fatal("the host kernel got nothing")
		}
		if h.GSOType != gsoTCPv4 || h.GSOSize != 1448 || int(h.CsumStart) != l4 || !bytes.Equal(got, frame) {
			t.Fatalf("host got header %+v and %d bytes (equal %v); want the TSO frame", h, len(got), bytes.Equal(got, frame))
		}
		before := dev.Stats().Dropped[TxMalformed]
		bad := gsoHeader(frame, l4, gsoTCPv4, 1448)
		bad.CsumStart = uint16(l4 - 20) // the IP header
		r.guestSend(t, bad, frame)
		if _, _, ok := hostReceive(t, pkt, 300*time.Millisecond); ok {
			t.Fatal("a frame whose csum_start is not its TCP header reached the host kernel")
		}
		if dev.Stats().Dropped[TxMalformed] != before+1 {
			t.Errorf("drop not counted: %v", dev.Stats())
		}
	})
}
