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
