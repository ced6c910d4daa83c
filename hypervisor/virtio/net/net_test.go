package net

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio/mmiotest"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

// fakeTap is a SOCK_SEQPACKET socketpair: like a tap, it keeps frame
// boundaries, and its device end is a non-blocking *os.File.
func fakeTap(t *testing.T) (dev, peer *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev, peer = os.NewFile(uintptr(fds[0]), "tap-dev"), os.NewFile(uintptr(fds[1]), "tap-peer")
	t.Cleanup(func() { dev.Close(); peer.Close() })
	return dev, peer
}

type rig struct {
	dev    *Device
	tr     *mmio.Transport
	rx, tx *queuetest.Driver
	peer   *os.File
}

func newRig(t *testing.T, hdrSize int) *rig {
	t.Helper()
	tap, peer := fakeTap(t)
	dev, err := New(Config{Tap: tap, VnetHdrSize: hdrSize, MAC: [6]byte{0x02, 0, 0, 0, 0, 0x42}})
	if err != nil {
		t.Fatal(err)
	}
	mem := queuetest.NewMemory(0x100000, 4<<20)
	r := &rig{dev: dev, peer: peer}
	r.rx = queuetest.NewDriver(mem, 0x100000, 16, 2048)
	r.tx = queuetest.NewDriver(mem, r.rx.End(), 16, 2048)
	r.rx.EventIdx, r.tx.EventIdx = true, true
	r.tr = mmio.New(dev, mem, &countIRQ{})
	if _, err := mmiotest.Boot(r.tr, dev.Features(), []*queuetest.Driver{r.rx, r.tx}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mmiotest.Write32(r.tr, mmio.RegStatus, 0) })
	return r
}

func frame(n int, fill byte) []byte {
	f := bytes.Repeat([]byte{fill}, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x42, 0x08, 0x00})
	return f
}

func TestTransmit(t *testing.T) {
	for _, hdrSize := range []int{0, 12} {
		r := newRig(t, hdrSize)
		want := 10
		if hdrSize == 12 {
			want = 12
		}
		guestHdr := bytes.Repeat([]byte{0xee}, HeaderSize) // nonsense the device must not pass on
		f := frame(1000, 0xab)
		r.tx.Add(queuetest.Readable(guestHdr), queuetest.Readable(f[:500]), queuetest.Readable(f[500:]))
		mmiotest.Write32(r.tr, mmio.RegQueueNotify, txQueue)
		buf := make([]byte, 4096)
		r.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n != want+len(f) || !bytes.Equal(buf[:want], make([]byte, want)) || !bytes.Equal(buf[want:n], f) {
			t.Fatalf("hdr %d: tap got %d bytes (header % x), want %d zero header bytes and the frame", hdrSize, n, buf[:want], want)
		}
		if _, err := r.tx.WaitUsed(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReceive(t *testing.T) {
	r := newRig(t, 0)
	// A frame that arrives before the guest posts buffers waits in the tap.
	f1 := frame(600, 1)
	if _, err := r.peer.Write(append(make([]byte, 10), f1...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	r.rx.Add(queuetest.Writable(HeaderSize + 1514))
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, rxQueue)
	u, err := r.rx.WaitUsed(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if u.Len != uint32(HeaderSize+len(f1)) || u.Data[10] != 1 || u.Data[11] != 0 || !bytes.Equal(u.Data[HeaderSize:], f1) {
		t.Fatalf("guest got %d bytes, num_buffers % x; want the header with num_buffers 1 and the frame", u.Len, u.Data[10:12])
	}

	// A frame too large for the buffer is dropped; the next one uses it.
	r.rx.Add(queuetest.Writable(HeaderSize), queuetest.Writable(1514))
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, rxQueue)
	r.peer.Write(append(make([]byte, 10), frame(1600, 2)...))
	f3 := frame(100, 3)
	r.peer.Write(append(make([]byte, 10), f3...))
	u, err = r.rx.WaitUsed(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(u.Data[HeaderSize:], f3) {
		t.Fatalf("guest got a %d-byte frame, want the 100-byte one after the oversized drop", len(u.Data)-HeaderSize)
	}
}

func TestConfigMAC(t *testing.T) {
	r := newRig(t, 0)
	var mac [6]byte
	for i := range mac {
		var b [1]byte
		r.tr.Read(mmio.RegConfig+uint64(i), b[:])
		mac[i] = b[0]
	}
	if mac != [6]byte{0x02, 0, 0, 0, 0, 0x42} {
		t.Fatalf("config MAC % x", mac)
	}
	if mmiotest.Features(r.tr)&FeatureMAC == 0 {
		t.Fatal("VIRTIO_NET_F_MAC not offered")
	}
}

func TestConfigMTU(t *testing.T) {
	r := newRig(t, 0)
	if mmiotest.Features(r.tr)&FeatureMTU != 0 {
		t.Error("VIRTIO_NET_F_MTU offered without an MTU")
	}
	tap, _ := fakeTap(t)
	dev, err := New(Config{Tap: tap, MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Features()&FeatureMTU == 0 {
		t.Fatal("VIRTIO_NET_F_MTU not offered with an MTU")
	}
	var mtu [2]byte
	dev.ReadConfig(10, mtu[:])
	if got := int(mtu[0]) | int(mtu[1])<<8; got != 1400 {
		t.Errorf("config mtu = %d, want 1400", got)
	}
	if _, err := New(Config{Tap: tap, MTU: 67}); err == nil {
		t.Error("New accepted an MTU below 68")
	}
}

// Reset must interrupt the reader blocked on the tap, and the device must
// work again after re-activation.
func TestResetInterruptsReader(t *testing.T) {
	r := newRig(t, 0)
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
	r.rx.Add(queuetest.Writable(2000))
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, rxQueue)
	r.peer.Write(append(make([]byte, 10), frame(64, 9)...))
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
	if _, err := New(Config{Tap: tap, VnetHdrSize: 11}); err == nil {
		t.Error("New accepted an 11-byte vnet header")
	}
}
