package net

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio/mmiotest"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

// fakeTap is a SOCK_SEQPACKET socketpair: like a tap, it keeps frame
// boundaries, and its device end is a non-blocking *os.File.
func fakeTap(t testing.TB) (dev, peer *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev, peer = os.NewFile(uintptr(fds[0]), "tap-dev"), os.NewFile(uintptr(fds[1]), "tap-peer")
	t.Cleanup(func() { dev.Close(); peer.Close() })
	return dev, peer
}

// recordingControl stands in for the tap's ioctls. It accepts offload flag
// sets within supported and records every call.
type recordingControl struct {
	mu        sync.Mutex
	supported int
	hdrSizes  []int
	offloads  []int
}

func (c *recordingControl) setVnetHdrSize(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hdrSizes = append(c.hdrSizes, n)
	return nil
}

func (c *recordingControl) setOffload(flags int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if flags&^c.supported != 0 {
		return syscall.EINVAL
	}
	c.offloads = append(c.offloads, flags)
	return nil
}

func (c *recordingControl) lastOffload() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offloads[len(c.offloads)-1]
}

const allTapOffloads = tunFCSUM | tunFTSO4 | tunFTSO6 | tunFTSOECN

type rig struct {
	dev    *Device
	ctl    *recordingControl
	tr     *mmio.Transport
	mem    *queuetest.Memory
	rx, tx *queuetest.Driver
	peer   *os.File
	acked  uint64
}

type rigOpts struct {
	features uint64 // what the driver acks (0: everything offered)
	mtu      int
	rxSlot   uint32 // receive data slot size (default 2048)
	rxSize   uint16
}

func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	tap, peer := fakeTap(t)
	ctl := &recordingControl{supported: allTapOffloads}
	dev, err := newDevice(Config{Tap: tap, MAC: guestMAC, MTU: o.mtu}, ctl)
	if err != nil {
		t.Fatal(err)
	}
	if o.rxSlot == 0 {
		o.rxSlot = 2048
	}
	if o.rxSize == 0 {
		o.rxSize = 64
	}
	r := &rig{dev: dev, ctl: ctl, peer: peer}
	r.mem = queuetest.NewMemory(0x100000, 16<<20)
	r.rx = queuetest.NewDriver(r.mem, 0x100000, o.rxSize, o.rxSlot)
	r.tx = queuetest.NewDriver(r.mem, r.rx.End(), 64, 4096)
	r.rx.EventIdx, r.tx.EventIdx = true, true
	r.tr = mmio.New(dev, r.mem, &countIRQ{})
	want := o.features
	if want == 0 {
		want = dev.Features()
	}
	if r.acked, err = mmiotest.Boot(r.tr, want|virtio.FeatureVersion1, []*queuetest.Driver{r.rx, r.tx}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mmiotest.Write32(r.tr, mmio.RegStatus, 0) })
	return r
}

// send has the guest transmit hdr+frame, split over the given number of
// descriptors.
func (r *rig) send(t *testing.T, h netHeader, frame []byte, pieces int) {
	t.Helper()
	var hb [HeaderSize]byte
	h.encode(hb[:])
	data := append(hb[:], frame...)
	var segs []queuetest.Segment
	step := (len(data) + pieces - 1) / pieces
	for len(data) > 0 {
		n := min(step, len(data))
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

// tapRead returns the next frame the device wrote to the tap, header
// decoded, or fails after timeout.
func (r *rig) tapRead(t *testing.T, timeout time.Duration) (netHeader, []byte) {
	t.Helper()
	buf := make([]byte, HeaderSize+maxFrame)
	r.peer.SetReadDeadline(time.Now().Add(timeout))
	n, err := r.peer.Read(buf)
	if err != nil {
		t.Fatalf("tap read: %v", err)
	}
	return decodeHeader(buf), buf[HeaderSize:n]
}

// tapQuiet fails if the device wrote anything to the tap.
func (r *rig) tapQuiet(t *testing.T) {
	t.Helper()
	buf := make([]byte, HeaderSize+maxFrame)
	r.peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := r.peer.Read(buf); err == nil {
		t.Fatalf("the tap got a %d-byte frame, want none", n-HeaderSize)
	}
}

// tapWrite injects a frame with a host header, as the kernel would.
func (r *rig) tapWrite(t *testing.T, h netHeader, frame []byte) {
	t.Helper()
	var hb [HeaderSize]byte
	h.encode(hb[:])
	if _, err := r.peer.Write(append(hb[:], frame...)); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) kickRx() { mmiotest.Write32(r.tr, mmio.RegQueueNotify, rxQueue) }

// postRx posts n receive buffers of size bytes each.
func (r *rig) postRx(t *testing.T, n int, size uint32) {
	t.Helper()
	for range n {
		if _, err := r.rx.Add(queuetest.Writable(size)); err != nil {
			t.Fatal(err)
		}
	}
	r.kickRx()
}

// rxFrame collects the next received frame, following num_buffers.
func (r *rig) rxFrame(t *testing.T) (netHeader, []byte, int) {
	t.Helper()
	u, err := r.rx.WaitUsed(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Data) < HeaderSize {
		t.Fatalf("used buffer of %d bytes: no room for the header", len(u.Data))
	}
	h := decodeHeader(u.Data)
	data := append([]byte(nil), u.Data[HeaderSize:]...)
	for i := 1; i < int(h.NumBuffers); i++ {
		// Every buffer of a frame is published at once.
		u, ok, err := r.rx.PopUsed()
		if !ok || err != nil {
			t.Fatalf("buffer %d of %d missing after the first was published (%v)", i+1, h.NumBuffers, err)
		}
		data = append(data, u.Data...)
	}
	return h, data, int(h.NumBuffers)
}

func (r *rig) stats() Stats { return r.dev.Stats() }

func TestFeaturesFollowTheTap(t *testing.T) {
	base := virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | FeatureMAC | FeatureMTU |
		FeatureStatus | FeatureMrgRxBuf | FeatureCSUM | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN
	for _, tt := range []struct {
		supported int
		want      uint64
	}{
		{allTapOffloads, base | FeatureGuestCSUM | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN},
		{tunFCSUM, base | FeatureGuestCSUM},
		{0, base},
	} {
		tap, _ := fakeTap(t)
		ctl := &recordingControl{supported: tt.supported}
		d, err := newDevice(Config{Tap: tap}, ctl)
		if err != nil {
			t.Fatal(err)
		}
		if d.Features() != tt.want {
			t.Errorf("tap offloads %#x: features %#x, want %#x", tt.supported, d.Features(), tt.want)
		}
		if len(ctl.hdrSizes) != 1 || ctl.hdrSizes[0] != HeaderSize {
			t.Errorf("vnet header sizes set: %v, want [%d]", ctl.hdrSizes, HeaderSize)
		}
		if ctl.lastOffload() != 0 {
			t.Errorf("tap offloads after New: %#x, want none until a driver negotiates", ctl.lastOffload())
		}
	}
}

// The tap's offloads are exactly what the driver negotiated, and none
// after a reset (a driver that acks less must not get TSO frames).
func TestTapOffloadsFollowNegotiation(t *testing.T) {
	for _, tt := range []struct {
		name  string
		acked uint64
		want  int
	}{
		{"everything", 0, allTapOffloads},
		{"no receive offloads", FeatureCSUM | FeatureHostTSO4 | FeatureMrgRxBuf, 0},
		{"receive checksum only", FeatureGuestCSUM, tunFCSUM},
		{"TSO4 only", FeatureGuestCSUM | FeatureGuestTSO4, tunFCSUM | tunFTSO4},
		{"TSO without its checksum prerequisite", FeatureGuestTSO4 | FeatureGuestTSO6, 0},
	} {
		r := newRig(t, rigOpts{features: tt.acked})
		if got := r.ctl.lastOffload(); got != tt.want {
			t.Errorf("%s: tap offloads %#x after DRIVER_OK, want %#x", tt.name, got, tt.want)
		}
		mmiotest.Write32(r.tr, mmio.RegStatus, 0)
		if got := r.ctl.lastOffload(); got != 0 {
			t.Errorf("%s: tap offloads %#x after reset, want 0", tt.name, got)
		}
	}
}

func TestConfigSpace(t *testing.T) {
	r := newRig(t, rigOpts{mtu: 9000})
	cfg := make([]byte, 12)
	for i := range cfg {
		r.tr.Read(mmio.RegConfig+uint64(i), cfg[i:i+1])
	}
	want := []byte{0x02, 0, 0, 0, 0, 0x42, 1, 0, 0, 0, 0x28, 0x23} // MAC, LINK_UP, no queue pairs, 9000
	if !bytes.Equal(cfg, want) {
		t.Fatalf("config space % x, want % x", cfg, want)
	}
}

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

func TestReceivePlain(t *testing.T) {
	r := newRig(t, rigOpts{features: virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | FeatureMTU})
	// A frame that arrives before the guest posts buffers waits in the tap.
	f1 := plainFrame(600, 1)
	r.tapWrite(t, netHeader{Flags: hdrDataValid}, f1)
	time.Sleep(20 * time.Millisecond)
	r.postRx(t, 1, HeaderSize+1514)
	h, got, nb := r.rxFrame(t)
	if h != (netHeader{NumBuffers: 1}) || nb != 1 || !bytes.Equal(got, f1) {
		t.Fatalf("guest got header %+v and %d bytes; want flags cleared (no GUEST_CSUM), num_buffers 1, the frame", h, len(got))
	}
	// Without mergeable buffers a frame larger than the buffer is dropped,
	// and the buffer is used for the next one.
	if _, err := r.rx.Add(queuetest.Writable(HeaderSize), queuetest.Writable(1200)); err != nil {
		t.Fatal(err)
	}
	r.kickRx()
	r.tapWrite(t, netHeader{}, plainFrame(1300, 2))
	f3 := plainFrame(100, 3)
	r.tapWrite(t, netHeader{}, f3)
	if _, got, _ := r.rxFrame(t); !bytes.Equal(got, f3) {
		t.Fatalf("guest got a %d-byte frame, want the 100-byte one after the oversized drop", len(got))
	}
	// Partial checksums the guest did not negotiate are dropped.
	r.postRx(t, 1, 2048)
	r.tapWrite(t, netHeader{Flags: hdrNeedsCsum, CsumStart: 34, CsumOffset: 16}, plainFrame(100, 4))
	f5 := plainFrame(90, 5)
	r.tapWrite(t, netHeader{}, f5)
	if _, got, _ := r.rxFrame(t); !bytes.Equal(got, f5) {
		t.Fatalf("guest got a %d-byte frame, want the one after the refused partial checksum", len(got))
	}
	if s := r.stats(); s.Dropped[RxTooLong] != 1 || s.Dropped[RxNotNegotiated] != 1 || s.RxFrames != 3 {
		t.Errorf("stats %v", s)
	}
}

// A TSO frame spreads over mergeable buffers, published together, with
// the tap's offload header passed on.
func TestReceiveMergeable(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.postRx(t, 40, 1536)
	frame, l4 := tcpFrame(frameSpec{payload: 30000})
	th := netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: uint16(l4 + 20), GSOSize: 1448, CsumStart: uint16(l4), CsumOffset: 16}
	r.tapWrite(t, th, frame)
	h, got, nb := r.rxFrame(t)
	wantBufs := (HeaderSize + len(frame) + 1535) / 1536
	th.NumBuffers = uint16(wantBufs)
	if h != th || nb != wantBufs || !bytes.Equal(got, frame) {
		t.Fatalf("guest got header %+v over %d buffers, frame equal %v; want %+v over %d", h, nb, bytes.Equal(got, frame), th, wantBufs)
	}
	// The next frame starts in a fresh buffer.
	f2 := plainFrame(1000, 7)
	r.tapWrite(t, netHeader{}, f2)
	if h, got, nb := r.rxFrame(t); nb != 1 || h.NumBuffers != 1 || !bytes.Equal(got, f2) {
		t.Fatalf("second frame: %d buffers, equal %v", nb, bytes.Equal(got, f2))
	}
}

// With too few buffers posted, the device waits for more and then
// delivers the frame whole.
func TestReceiveMergeableWaitsForBuffers(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.postRx(t, 2, 1024)
	frame, l4 := tcpFrame(frameSpec{payload: 2400})
	th := netHeader{Flags: hdrNeedsCsum, GSOType: gsoTCPv4, HdrLen: uint16(l4 + 20), GSOSize: 1448, CsumStart: uint16(l4), CsumOffset: 16}
	r.tapWrite(t, th, frame)
	time.Sleep(50 * time.Millisecond)
	if _, ok, _ := r.rx.PopUsed(); ok {
		t.Fatal("a frame was published before all its buffers were there")
	}
	r.postRx(t, 1, 1024)
	h, got, nb := r.rxFrame(t)
	if nb != 3 || h.NumBuffers != 3 || !bytes.Equal(got, frame) {
		t.Fatalf("guest got %d buffers (num_buffers %d), equal %v; want 3 and the frame", nb, h.NumBuffers, bytes.Equal(got, frame))
	}
}

// Receive buffers the driver made unusable go back with length 0.
func TestReceiveBadBuffers(t *testing.T) {
	r := newRig(t, rigOpts{})
	if _, err := r.rx.Add(queuetest.Writable(HeaderSize - 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.rx.Add(queuetest.Readable([]byte("x")), queuetest.Writable(2048)); err != nil {
		t.Fatal(err)
	}
	r.postRx(t, 1, 2048)
	f := plainFrame(200, 1)
	r.tapWrite(t, netHeader{}, f)
	for i := range 2 {
		u, err := r.rx.WaitUsed(5 * time.Second)
		if err != nil || u.Len != 0 {
			t.Fatalf("bad buffer %d: used %d bytes, %v; want returned with 0", i, u.Len, err)
		}
	}
	if _, got, _ := r.rxFrame(t); !bytes.Equal(got, f) {
		t.Fatal("the frame did not reach the good buffer")
	}
	if s := r.stats(); s.BadRxBuffers != 2 {
		t.Errorf("stats %v, want 2 bad rx buffers", s)
	}
}

// A receive buffer of more descriptors than one readv takes gets the
// frame by copy.
func TestReceiveManyBuffers(t *testing.T) {
	r := newRig(t, rigOpts{rxSlot: 16})
	table := r.tx.End()
	data := table + 16*1024
	const n = 1024
	for i := uint16(0); i < n; i++ {
		d := descriptorAt(data+16*uint64(i), 16, i+1 < n, i+1)
		d.Flags |= 2 // VIRTQ_DESC_F_WRITE
		r.rx.WriteTableDescriptor(table, i, d)
	}
	r.rx.WriteDescriptor(0, queueDesc(table, 16*n))
	r.rx.Publish(0)
	r.kickRx()
	f := plainFrame(1400, 6)
	r.tapWrite(t, netHeader{}, f)
	head, length, ok := uint32(0), uint32(0), false
	for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		head, length, ok = r.rx.PopUsedRaw()
	}
	if !ok || head != 0 || length != uint32(HeaderSize+len(f)) {
		t.Fatalf("used (%d, %d, %v), want head 0 with %d bytes", head, length, ok, HeaderSize+len(f))
	}
	got := make([]byte, HeaderSize+len(f))
	if err := r.mem.ReadAt(got, data); err != nil {
		t.Fatal(err)
	}
	if h := decodeHeader(got); h.NumBuffers != 1 || !bytes.Equal(got[HeaderSize:], f) {
		t.Fatalf("header %+v, frame equal %v", h, bytes.Equal(got[HeaderSize:], f))
	}
}

// Reset must interrupt the reader blocked on the tap, and the device must
// work again after re-activation.
func TestResetInterruptsReader(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.postRx(t, 1, 2048) // the reader now waits on the tap
	time.Sleep(20 * time.Millisecond)
	done := make(chan struct{})
	go func() { r.dev.Reset(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Reset blocked on the tap reader")
	}
	mem := queuetest.NewMemory(0x100000, 4<<20)
	r.rx = queuetest.NewDriver(mem, 0x100000, 16, 2048)
	r.tx = queuetest.NewDriver(mem, r.rx.End(), 16, 2048)
	r.tr = mmio.New(r.dev, mem, &countIRQ{})
	if _, err := mmiotest.Boot(r.tr, r.dev.Features(), []*queuetest.Driver{r.rx, r.tx}); err != nil {
		t.Fatal(err)
	}
	r.postRx(t, 1, 2000)
	r.tapWrite(t, netHeader{}, plainFrame(64, 9))
	if _, err := r.rx.WaitUsed(5 * time.Second); err != nil {
		t.Fatalf("receive after reset: %v", err)
	}
	mmiotest.Write32(r.tr, mmio.RegStatus, 0)
}

func TestNewRejects(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "not-a-tap"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := New(Config{Tap: f}); err == nil {
		t.Error("New accepted a file that cannot take read deadlines")
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted no tap")
	}
	tap, _ := fakeTap(t)
	for _, mtu := range []int{-1, 67, 65536} {
		if _, err := newDevice(Config{Tap: tap, MTU: mtu}, &recordingControl{}); err == nil {
			t.Errorf("New accepted MTU %d", mtu)
		}
	}
	// A socket is not a tap: the vnet header ioctl fails and New says so.
	if _, err := New(Config{Tap: tap}); err == nil {
		t.Error("New accepted a socket for a tap")
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

func descriptorAt(addr uint64, n uint32, next bool, nextIdx uint16) queue.Descriptor {
	d := queue.Descriptor{Addr: addr, Len: n}
	if next {
		d.Flags, d.Next = queue.DescFlagNext, nextIdx
	}
	return d
}

func queueDesc(table uint64, n uint32) queue.Descriptor {
	return queue.Descriptor{Addr: table, Len: n, Flags: queue.DescFlagIndirect}
}

// A frame the tap could not express (EINVAL) is counted and skipped at
// once; a deadline (a reset) ends the reader; other errors are retried.
func TestReadFailed(t *testing.T) {
	tap, _ := fakeTap(t)
	d, err := newDevice(Config{Tap: tap}, &recordingControl{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	r := &receiver{d: d, stop: stop}
	start := time.Now()
	if !r.readFailed(syscall.EINVAL) || d.Stats().Dropped[RxMalformed] != 1 || time.Since(start) > 50*time.Millisecond {
		t.Errorf("EINVAL: want an immediate retry and one rx-malformed drop, stats %v", d.Stats())
	}
	if !r.readFailed(syscall.EBADFD) || !r.failing {
		t.Error("EBADFD: want a retry, logged once")
	}
	close(stop)
	if r.readFailed(os.ErrDeadlineExceeded) || r.readFailed(syscall.EBADFD) {
		t.Error("a stopped reader retried")
	}
}
