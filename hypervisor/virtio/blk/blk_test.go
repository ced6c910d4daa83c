package blk

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio/mmiotest"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

const diskSectors = 64

type rig struct {
	path string
	dev  *Device
	tr   *mmio.Transport
	drv  *queuetest.Driver
	irq  *countIRQ
}

func newRig(t *testing.T, readOnly bool) *rig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	img := make([]byte, diskSectors*SectorSize+100) // a partial sector at the end is not addressable
	for i := range img {
		img[i] = byte(i / SectorSize)
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := New(Config{Path: path, ReadOnly: readOnly, Serial: "vmctl-rootfs-0123456"})
	if err != nil {
		t.Fatal(err)
	}
	mem := queuetest.NewMemory(0x10000, 1<<20)
	r := &rig{path: path, dev: dev, irq: &countIRQ{}, drv: queuetest.NewDriver(mem, 0x10000, 16, 8192)}
	r.drv.EventIdx = true
	r.tr = mmio.New(dev, mem, r.irq)
	if _, err := mmiotest.Boot(r.tr, dev.Features(), []*queuetest.Driver{r.drv}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mmiotest.Write32(r.tr, mmio.RegStatus, 0) // resets the device: its goroutine ends
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// do submits a chain, kicks and returns the used entry's data and status.
func (r *rig) do(t *testing.T, segs ...queuetest.Segment) (data []byte, status byte) {
	t.Helper()
	if _, err := r.drv.Add(segs...); err != nil {
		t.Fatal(err)
	}
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, 0)
	u, err := r.drv.WaitUsed(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if u.Len == 0 || len(u.Writable) == 0 {
		t.Fatalf("used entry with length %d carries no status", u.Len)
	}
	last := u.Writable[len(u.Writable)-1]
	return u.Data[:len(u.Data)-1], last[len(last)-1]
}

func TestReadWriteFlushGetID(t *testing.T) {
	r := newRig(t, false)
	if r.dev.Capacity() != diskSectors {
		t.Fatalf("Capacity() = %d, want %d", r.dev.Capacity(), diskSectors)
	}
	lo, hi := mmiotest.Read32(r.tr, mmio.RegConfig), mmiotest.Read32(r.tr, mmio.RegConfig+4)
	if capa := uint64(hi)<<32 | uint64(lo); capa != diskSectors {
		t.Fatalf("config capacity = %d, want %d", capa, diskSectors)
	}

	data, st := r.do(t, queuetest.Readable(hdr(TypeIn, 2)), queuetest.Writable(1024), queuetest.Writable(1))
	if st != StatusOK || len(data) != 1024 || data[0] != 2 || data[1023] != 3 {
		t.Fatalf("read sectors 2-3: status %d, %d bytes starting % x", st, len(data), data[:4])
	}

	payload := bytes.Repeat([]byte("vmctl!!\n"), 128) // 1024 bytes
	if _, st := r.do(t, queuetest.Readable(hdr(TypeOut, 10)), queuetest.Readable(payload[:512]),
		queuetest.Readable(payload[512:]), queuetest.Writable(1)); st != StatusOK {
		t.Fatalf("write: status %d", st)
	}
	if _, st := r.do(t, queuetest.Readable(hdr(TypeFlush, 0)), queuetest.Writable(1)); st != StatusOK {
		t.Fatalf("flush: status %d", st)
	}
	img, _ := os.ReadFile(r.path)
	if !bytes.Equal(img[10*SectorSize:12*SectorSize], payload) {
		t.Fatal("write did not reach the file")
	}
	// Indirect chains read the same data back.
	if _, err := r.drv.AddIndirect(queuetest.Readable(hdr(TypeIn, 10)), queuetest.Writable(1024), queuetest.Writable(1)); err != nil {
		t.Fatal(err)
	}
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, 0)
	u, err := r.drv.WaitUsed(5 * time.Second)
	if err != nil || !bytes.Equal(u.Data[:1024], payload) || u.Data[1024] != StatusOK {
		t.Fatalf("indirect read back: %v, %d bytes", err, len(u.Data))
	}

	id, st := r.do(t, queuetest.Readable(hdr(TypeGetID, 0)), queuetest.Writable(IDBytes), queuetest.Writable(1))
	if st != StatusOK || string(id) != "vmctl-rootfs-0123456" {
		t.Fatalf("GET_ID = %q, status %d", id, st)
	}
	if r.irq.n.Load() == 0 {
		t.Fatal("no interrupt raised")
	}
}

func TestBadRequests(t *testing.T) {
	r := newRig(t, false)
	for _, tc := range []struct {
		name string
		segs []queuetest.Segment
		want byte
	}{
		{"read past the end", []queuetest.Segment{queuetest.Readable(hdr(TypeIn, diskSectors-1)), queuetest.Writable(1024), queuetest.Writable(1)}, StatusIOErr},
		{"read at a huge sector", []queuetest.Segment{queuetest.Readable(hdr(TypeIn, 1<<60)), queuetest.Writable(512), queuetest.Writable(1)}, StatusIOErr},
		{"write past the end", []queuetest.Segment{queuetest.Readable(hdr(TypeOut, diskSectors)), queuetest.Readable(make([]byte, 512)), queuetest.Writable(1)}, StatusIOErr},
		{"header in a write-only buffer", []queuetest.Segment{queuetest.Writable(16), queuetest.Writable(1)}, StatusIOErr},
		{"partial sector", []queuetest.Segment{queuetest.Readable(hdr(TypeIn, 0)), queuetest.Writable(100), queuetest.Writable(1)}, StatusIOErr},
		{"discard is not offered", []queuetest.Segment{queuetest.Readable(hdr(TypeDiscard, 0)), queuetest.Readable(make([]byte, 16)), queuetest.Writable(1)}, StatusUnsupp},
	} {
		if _, st := r.do(t, tc.segs...); st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
	// A chain without a writable byte cannot get a status; it is returned
	// with length 0 and the device carries on.
	if _, err := r.drv.Add(queuetest.Readable(hdr(TypeIn, 0))); err != nil {
		t.Fatal(err)
	}
	mmiotest.Write32(r.tr, mmio.RegQueueNotify, 0)
	if u, err := r.drv.WaitUsed(5 * time.Second); err != nil || u.Len != 0 {
		t.Fatalf("status-less chain: %+v, %v; want length 0", u, err)
	}
	if _, st := r.do(t, queuetest.Readable(hdr(TypeFlush, 0)), queuetest.Writable(1)); st != StatusOK {
		t.Fatalf("flush after bad requests: status %d", st)
	}
}

func TestReadOnly(t *testing.T) {
	r := newRig(t, true)
	if r.dev.Features()&FeatureRO == 0 || mmiotest.Features(r.tr)&FeatureRO == 0 {
		t.Fatal("read-only disk does not offer VIRTIO_BLK_F_RO")
	}
	before, _ := os.ReadFile(r.path)
	if _, st := r.do(t, queuetest.Readable(hdr(TypeOut, 0)), queuetest.Readable(make([]byte, 512)), queuetest.Writable(1)); st != StatusIOErr {
		t.Fatalf("write to a read-only disk: status %d, want IOERR", st)
	}
	after, _ := os.ReadFile(r.path)
	if !bytes.Equal(before, after) {
		t.Fatal("read-only disk changed")
	}
	if data, st := r.do(t, queuetest.Readable(hdr(TypeIn, 5)), queuetest.Writable(512), queuetest.Writable(1)); st != StatusOK || data[0] != 5 {
		t.Fatalf("read from a read-only disk: status %d", st)
	}
}

// After a reset (guest reboot) the device comes back with fresh queues.
func TestResetAndReactivate(t *testing.T) {
	r := newRig(t, false)
	r.do(t, queuetest.Readable(hdr(TypeFlush, 0)), queuetest.Writable(1))
	mmiotest.Write32(r.tr, mmio.RegStatus, 0)
	mem := queuetest.NewMemory(0x10000, 1<<20) // the rebooted guest's rings start from zero
	r.drv = queuetest.NewDriver(mem, 0x10000, 16, 8192)
	r.tr = mmio.New(r.dev, mem, r.irq)
	if _, err := mmiotest.Boot(r.tr, r.dev.Features()&^virtio.FeatureEventIdx, []*queuetest.Driver{r.drv}); err != nil {
		t.Fatal(err)
	}
	if data, st := r.do(t, queuetest.Readable(hdr(TypeIn, 1)), queuetest.Writable(512), queuetest.Writable(1)); st != StatusOK || data[0] != 1 {
		t.Fatalf("read after reset: status %d", st)
	}
}

func TestNewRejectsLongSerial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d")
	os.WriteFile(path, make([]byte, 512), 0o644)
	if _, err := New(Config{Path: path, Serial: "123456789012345678901"}); err == nil {
		t.Fatal("a 21-byte serial was accepted")
	}
	if _, err := New(Config{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("a missing disk was accepted")
	}
}
