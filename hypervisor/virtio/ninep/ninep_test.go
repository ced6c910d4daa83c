package ninep

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/ninep/hostfs"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

const (
	testMsize = 64 << 10
	slotSize  = testMsize + 4096
)

// rig is a virtio-9p device on a test queue, with the driver side played
// by the test.
type rig struct {
	t   testing.TB
	dev *Device
	drv *queuetest.Driver
	irq *countIRQ
	mu  sync.Mutex // the driver is used from one goroutine at a time
}

func newRig(t testing.TB, dir string, ro bool) *rig {
	t.Helper()
	fs, err := hostfs.New(dir, hostfs.Options{ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	dev, err := New(Config{Tag: "share", Attacher: fs})
	if err != nil {
		t.Fatal(err)
	}
	r := activate(t, dev)
	t.Cleanup(dev.Reset)
	return r
}

// activate gives dev a fresh queue, as a guest driver does at DRIVER_OK.
func activate(t testing.TB, dev *Device) *rig {
	t.Helper()
	mem := queuetest.NewMemory(0x10000, 32*slotSize+(1<<20))
	drv := queuetest.NewDriver(mem, 0x10000, 32, slotSize)
	q, err := queue.New(mem, drv.Config())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dev: dev, drv: drv, irq: &countIRQ{}}
	if err := dev.Activate(mem, dev.Features(), []*queue.Queue{q}, r.irq); err != nil {
		t.Fatal(err)
	}
	return r
}

// roundTrip sends one raw request chain and waits for its reply.
func (r *rig) roundTrip(segs ...queuetest.Segment) queuetest.Used {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.drv.Add(segs...); err != nil {
		r.t.Fatal(err)
	}
	r.dev.QueueNotify(0)
	u, err := r.drv.WaitUsed(10 * time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

// vqConn carries a p9.Client's byte stream over the rig: each message the
// client writes becomes one chain, as Linux's virtio transport sends it.
type vqConn struct {
	r       *rig
	pending []byte
	pr      *io.PipeReader
	pw      *io.PipeWriter
	replies chan []byte
}

func (r *rig) conn() *vqConn {
	pr, pw := io.Pipe()
	c := &vqConn{r: r, pr: pr, pw: pw, replies: make(chan []byte, 64)}
	// The client reads replies on its own goroutine, in order.
	go func() {
		for b := range c.replies {
			pw.Write(b)
		}
		pw.Close()
	}()
	return c
}

func (c *vqConn) Write(p []byte) (int, error) {
	c.pending = append(c.pending, p...)
	for len(c.pending) >= 4 {
		size := binary.LittleEndian.Uint32(c.pending)
		if uint32(len(c.pending)) < size {
			break
		}
		msg := append([]byte(nil), c.pending[:size]...)
		c.pending = c.pending[size:]
		u := c.r.roundTrip(queuetest.Readable(msg), queuetest.Writable(testMsize))
		c.replies <- u.Data
	}
	return len(p), nil
}

func (c *vqConn) Read(p []byte) (int, error) { return c.pr.Read(p) }
func (c *vqConn) Close() error               { close(c.replies); return nil }

func (r *rig) client() p9.File {
	r.t.Helper()
	cl, err := p9.NewClient(r.conn(), p9.WithMessageSize(testMsize))
	if err != nil {
		r.t.Fatal(err)
	}
	root, err := cl.Attach("")
	if err != nil {
		r.t.Fatal(err)
	}
	return root
}

func TestConfigSpaceHoldsTag(t *testing.T) {
	dev, err := New(Config{Tag: "bind0", Attacher: mustFS(t, t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	if dev.DeviceID() != virtio.ID9P || dev.Features()&FeatureMountTag == 0 {
		t.Fatalf("device %v features %#x", dev.DeviceID(), dev.Features())
	}
	b := make([]byte, 8)
	dev.ReadConfig(0, b)
	if want := []byte{5, 0, 'b', 'i', 'n', 'd', '0', 0}; !bytes.Equal(b, want) {
		t.Fatalf("config space %v, want %v", b, want)
	}
	for _, tag := range []string{"", string(make([]byte, MaxTagLen+1))} {
		if _, err := New(Config{Tag: tag, Attacher: mustFS(t, t.TempDir())}); err == nil {
			t.Errorf("tag of %d bytes accepted", len(tag))
		}
	}
}

func mustFS(t *testing.T, dir string) *hostfs.FS {
	fs, err := hostfs.New(dir, hostfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs
}

// A 9P client reads, writes, creates and lists files of the host
// directory through the device.
func TestClientThroughDevice(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, dir, false)
	root := r.client()

	_, f, err := root.Walk([]string{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := f.ReadAt(buf, 0)
	if err != nil || string(buf[:n]) != "from the host\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	_, d, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	nf, _, _, err := d.Create("new", p9.WriteOnly, 0o640, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*testMsize/16) // several messages
	if n, err := nf.WriteAt(big, 0); err != nil || n != len(big) {
		t.Fatalf("write %d of %d: %v", n, len(big), err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "new"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("host sees %d bytes (%v), want %d", len(got), err, len(big))
	}
	if st, _ := os.Stat(filepath.Join(dir, "new")); st.Mode().Perm() != 0o640 {
		t.Errorf("created with mode %v, want 0640 whatever the umask", st.Mode().Perm())
	}

	_, ld, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ld.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	ents, err := ld.Readdir(0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name] = true
	}
	if !names["hello"] || !names["new"] {
		t.Fatalf("readdir: %v", ents)
	}
	if r.irq.n.Load() == 0 {
		t.Fatal("no interrupt raised")
	}
}

// Frames a hostile guest sends are answered with Rlerror and leave the
// device serving.
func TestBadFramesAreAnswered(t *testing.T) {
	r := newRig(t, t.TempDir(), false)
	frame := func(size uint32, typ byte, tag uint16, body ...byte) []byte {
		b := make([]byte, 7, 7+len(body))
		binary.LittleEndian.PutUint32(b, size)
		b[4] = typ
		binary.LittleEndian.PutUint16(b[5:], tag)
		return append(b, body...)
	}
	rlerror := func(u queuetest.Used, tag uint16, errno uint32) {
		t.Helper()
		want := make([]byte, 11)
		binary.LittleEndian.PutUint32(want, 11)
		want[4] = typeRlerror
		binary.LittleEndian.PutUint16(want[5:], tag)
		binary.LittleEndian.PutUint32(want[7:], errno)
		if !bytes.Equal(u.Data, want) {
			t.Fatalf("reply %v, want Rlerror %d for tag %d", u.Data, errno, tag)
		}
	}
	// Declared size beyond the chain.
	rlerror(r.roundTrip(queuetest.Readable(frame(1000, 100, 1)), queuetest.Writable(64)), 1, errnoEINVAL)
	// Declared size below a header.
	rlerror(r.roundTrip(queuetest.Readable(frame(3, 100, 2)), queuetest.Writable(64)), 2, errnoEINVAL)
	// Larger than any message the server takes.
	huge := frame(maxMessage+1, 100, 3)
	rlerror(r.roundTrip(queuetest.Readable(huge), queuetest.Writable(64)), 3, errnoEINVAL)
	// Shorter than a header: returned unused.
	if u := r.roundTrip(queuetest.Readable([]byte{1, 2}), queuetest.Writable(64)); u.Len != 0 {
		t.Fatalf("short chain used %d bytes", u.Len)
	}
	// No room for the reply: the chain comes back with what fits.
	if u := r.roundTrip(queuetest.Readable(frame(7, 100, 4))); u.Len != 0 {
		t.Fatalf("chain without writable buffers used %d bytes", u.Len)
	}
	// The device still serves a real client.
	root := r.client()
	if _, _, _, err := root.GetAttr(p9.AttrMaskAll); err != nil {
		t.Fatalf("after bad frames: %v", err)
	}
}

// Reset while requests are in flight returns, and the device serves again
// after the next activation.
func TestResetAndReactivate(t *testing.T) {
	dir := t.TempDir()
	fs := mustFS(t, dir)
	dev, err := New(Config{Tag: "share", Attacher: fs})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		r := activate(t, dev)
		root := r.client()
		if _, _, _, err := root.GetAttr(p9.AttrMaskAll); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { dev.Reset(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Reset did not return")
		}
	}
}

// The guest cannot reach outside the shared directory: ".." is refused,
// and symlinks (planted on the host or created by the guest) are never
// followed on the host.
func TestShareConfinesTheGuest(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "secretlink")); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, dir, false)
	root := r.client()

	if _, _, err := root.Walk([]string{".."}); err == nil {
		t.Error("walk to .. succeeded")
	}
	if _, _, err := root.Walk([]string{"escape", "secret"}); err == nil {
		t.Error("walk through a symlink to a host directory succeeded")
	}
	_, link, err := root.Walk([]string{"secretlink"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := link.Open(p9.ReadOnly); err == nil {
		t.Error("opening a symlink opened its host target")
	}
	if target, err := link.Readlink(); err != nil || target != filepath.Join(outside, "secret") {
		t.Errorf("readlink = %q, %v", target, err)
	}
	if err := root.Link(link, "hard"); err == nil {
		t.Error("hard link to a symlink succeeded (it would link the host target)")
	}
	// A symlink the guest makes is stored, not resolved.
	_, d, _ := root.Walk(nil)
	if _, err := d.Symlink("/etc/passwd", "mine", p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	_, mine, err := root.Walk([]string{"mine"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := mine.Open(p9.ReadOnly); err == nil {
		t.Error("opening a guest-made symlink to /etc/passwd succeeded")
	}
	if _, _, err := mine.Walk([]string{"x"}); err == nil {
		t.Error("walk below a symlink succeeded")
	}
	// Device nodes cannot be made.
	if _, err := d.Mknod("disk", p9.ModeBlockDevice|0o600, 8, 0, p9.NoUID, p9.NoGID); err == nil {
		t.Error("mknod of a block device succeeded")
	}
	if _, err := os.Lstat(filepath.Join(dir, "disk")); err == nil {
		t.Error("the refused device node exists on the host")
	}
	if _, err := d.Mknod("fifo", p9.ModeNamedPipe|0o600, 0, 0, p9.NoUID, p9.NoGID); err != nil {
		t.Errorf("mknod of a FIFO: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(outside, "secret"))
	if string(got) != "host secret" {
		t.Fatalf("host file outside the share changed: %q", got)
	}
}

// A read-only share refuses every change on the host side.
func TestReadOnlyShare(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, dir, true)
	root := r.client()
	_, d, _ := root.Walk(nil)
	if _, _, _, err := d.Create("new", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID); err == nil {
		t.Error("create succeeded")
	}
	if _, err := d.Mkdir("dir", 0o755, p9.NoUID, p9.NoGID); err == nil {
		t.Error("mkdir succeeded")
	}
	if err := d.UnlinkAt("f", 0); err == nil {
		t.Error("unlink succeeded")
	}
	_, f, err := root.Walk([]string{"f"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Open(p9.ReadWrite); err == nil {
		t.Error("open for writing succeeded")
	}
	if err := f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0}); err == nil {
		t.Error("truncate succeeded")
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open for reading: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	got, _ := os.ReadFile(filepath.Join(dir, "f"))
	if len(ents) != 1 || string(got) != "keep" {
		t.Fatalf("host directory changed: %d entries, f = %q", len(ents), got)
	}
}
