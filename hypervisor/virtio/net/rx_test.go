package net

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

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
