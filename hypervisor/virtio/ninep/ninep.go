// Package ninep is virtio-9p (the "9P transport" of virtio 1.2, device ID
// 9): one request queue whose chains each carry a 9P2000.L request in their
// readable buffers and room for the reply in their writable ones, and a
// configuration space holding the mount tag the guest mounts by
// (mount -t 9p -o trans=virtio TAG DIR).
//
// Requests are served by github.com/hugelgupf/p9's server over a byte
// stream: the device writes each request into the stream and routes each
// reply back to the chain that carried the request by its 9P tag. The
// server handles requests concurrently, so a slow host call does not hold
// up the others, and replies complete chains out of order as virtio
// allows.
//
// The guest is hostile. Before a request reaches the server the device
// checks its frame: a declared size that does not fit the chain or the
// negotiated message size, or a tag already in flight, is answered here
// with Rlerror (EINVAL, EMSGSIZE), so the stream never loses its framing
// and every chain the guest offers is returned. A reply larger than the
// chain's writable buffers is cut to fit (the guest's own fault).
//
// It does not implement Tauth or the legacy 9P2000/9P2000.u dialects (the
// server answers them with an error).
package ninep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hugelgupf/p9/p9"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// QueueSize is the maximum size of the request queue.
const QueueSize = 128

// FeatureMountTag (VIRTIO_9P_MOUNT_TAG): the configuration space holds the
// mount tag.
const FeatureMountTag uint64 = 1 << 0

// MaxTagLen bounds the mount tag (the configuration space's tag_len is 16
// bits; QEMU allows no more than this either).
const MaxTagLen = 255

// maxMessage is the largest message the server accepts
// (github.com/hugelgupf/p9's maximumLength); Tversion negotiates it down.
const maxMessage = 4 << 20

// 9P message types the device looks at.
const (
	typeTversion = 100
	typeRlerror  = 7
	headerLen    = 7 // size[4] type[1] tag[2]
)

// Config is one share.
type Config struct {
	// Tag is what the guest mounts: 1 to MaxTagLen bytes.
	Tag string
	// Attacher serves the shared tree (package hostfs for a host
	// directory).
	Attacher p9.Attacher
}

// Device is a virtio-9p device.
type Device struct {
	cfg     []byte // le16 tag length, tag
	server  *p9.Server
	wake    virtio.Waker
	workers virtio.Workers
	conn    *conn
}

var _ virtio.Device = (*Device)(nil)

// New returns an inactive virtio-9p device for cfg.
func New(cfg Config) (*Device, error) {
	if len(cfg.Tag) == 0 || len(cfg.Tag) > MaxTagLen {
		return nil, fmt.Errorf("virtio-9p: mount tag %q must be 1 to %d bytes", cfg.Tag, MaxTagLen)
	}
	if cfg.Attacher == nil {
		return nil, errors.New("virtio-9p: no file system to serve")
	}
	c := make([]byte, 2+len(cfg.Tag))
	binary.LittleEndian.PutUint16(c, uint16(len(cfg.Tag)))
	copy(c[2:], cfg.Tag)
	return &Device{cfg: c, server: p9.NewServer(cfg.Attacher), wake: virtio.NewWaker()}, nil
}

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() virtio.DeviceID { return virtio.ID9P }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | FeatureMountTag
}

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) { virtio.ReadConfigBytes(d.cfg, offset, data) }

// WriteConfig implements virtio.Device; the configuration is read-only.
func (d *Device) WriteConfig(uint64, []byte) {}

// inFlight is a request the server has not answered yet; seq orders
// requests by submission.
type inFlight struct {
	ch  *queue.Chain
	seq uint64
}

// conn is one activation: the stream into the server, the chains waiting
// for their replies, and the queue they came from.
type conn struct {
	q   *queue.Queue
	irq virtio.Interrupt

	reqW  *io.PipeWriter
	respR *io.PipeReader

	mu      sync.Mutex // guards q's used side, pending, seq and msize
	pending map[uint16]inFlight
	seq     uint64
	msize   uint32
	served  chan struct{} // closed when the server returned
}

// Activate implements virtio.Device.
func (d *Device) Activate(_ memory.Memory, _ uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	if len(qs) != 1 || qs[0] == nil {
		return errors.New("virtio-9p: request queue not set up")
	}
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	c := &conn{
		q: qs[0], irq: irq, reqW: reqW, respR: respR,
		pending: map[uint16]inFlight{}, msize: maxMessage, served: make(chan struct{}),
	}
	d.conn = c
	go func() {
		// Handle returns once reqR reports EOF (Reset closes reqW) and
		// every request in flight is answered; it then closes respW.
		d.server.Handle(reqR, respW)
		close(c.served)
	}()
	d.workers.Start()
	d.workers.Go(func(stop <-chan struct{}) { c.requests(d.wake, stop) })
	d.workers.Go(func(<-chan struct{}) { c.replies() })
	d.wake.Wake() // serve chains published before DRIVER_OK
	return nil
}

// QueueNotify implements virtio.Device.
func (d *Device) QueueNotify(index int) {
	if index == 0 {
		d.wake.Wake()
	}
}

// Reset implements virtio.Device: the stream is closed, the server answers
// what is in flight and returns, and the workers stop.
func (d *Device) Reset() {
	if d.conn == nil {
		return
	}
	d.conn.reqW.Close()
	d.workers.Stop()
	<-d.conn.served
	d.conn = nil
}

// requests pops chains and feeds their requests to the server.
func (c *conn) requests(wake virtio.Waker, stop <-chan struct{}) {
	for {
		select {
		case <-wake:
		case <-stop:
			return
		}
		for {
			c.mu.Lock()
			c.q.DisableNotify()
			ch, err := c.q.Pop()
			if ch == nil && err == nil && c.q.EnableNotify() {
				ch, err = c.q.Pop()
			}
			c.mu.Unlock()
			if errors.Is(err, queue.ErrBroken) {
				virtio.LogGuestError("virtio-9p: queue stopped", "err", err)
				return
			}
			if err != nil {
				virtio.LogGuestError("virtio-9p: dropping malformed chain", "err", err)
				c.complete(ch.Head, 0)
				continue
			}
			if ch == nil {
				break
			}
			if !c.submit(ch) {
				return
			}
		}
	}
}

// submit checks one request's frame and writes it to the server. It
// returns false once the server is gone.
func (c *conn) submit(ch *queue.Chain) bool {
	r := ch.Reader()
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		virtio.LogGuestError("virtio-9p: request shorter than a 9P header", "len", ch.ReadableLen())
		c.complete(ch.Head, 0)
		return true
	}
	size := binary.LittleEndian.Uint32(hdr[0:])
	tag := binary.LittleEndian.Uint16(hdr[5:])
	c.mu.Lock()
	msize := c.msize
	_, dup := c.pending[tag]
	c.mu.Unlock()
	switch {
	case size < headerLen || uint64(size) > ch.ReadableLen():
		c.fail(ch, tag, errnoEINVAL)
		return true
	case size > msize:
		c.fail(ch, tag, errnoEMSGSIZE)
		return true
	case dup:
		c.fail(ch, tag, errnoEINVAL)
		return true
	}
	msg := make([]byte, size)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[headerLen:]); err != nil {
		c.fail(ch, tag, errnoEINVAL)
		return true
	}
	if hdr[4] == typeTversion && size >= headerLen+4 {
		// The server takes min(msize, its maximum) as the message size
		// and drops the connection on a larger request; refuse those here.
		m := min(binary.LittleEndian.Uint32(msg[headerLen:]), maxMessage)
		c.mu.Lock()
		c.msize = max(m, 4096)
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.seq++
	c.pending[tag] = inFlight{ch: ch, seq: c.seq}
	c.mu.Unlock()
	if _, err := c.reqW.Write(msg); err != nil {
		c.mu.Lock()
		delete(c.pending, tag)
		c.mu.Unlock()
		c.fail(ch, tag, errnoEIO)
		return false
	}
	return true
}

// replies reads the server's replies and returns each to its chain.
func (c *conn) replies() {
	defer c.respR.Close()
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(c.respR, hdr[:]); err != nil {
			return
		}
		size := binary.LittleEndian.Uint32(hdr[0:])
		if size < headerLen || size > maxMessage {
			slog.Error("virtio-9p: server reply with a bad size", "size", size)
			return
		}
		tag := binary.LittleEndian.Uint16(hdr[5:])
		ch := c.take(tag)
		body := io.LimitReader(c.respR, int64(size-headerLen))
		if ch == nil {
			// The server answers a request it cannot decode with
			// NOTAG, not the request's tag; such a request never gets
			// a reply of its own. The reply goes to the oldest request
			// in flight, with that request's tag: only a guest that
			// sends malformed requests can get a reply meant for
			// another of its own requests.
			var orphan uint16
			if ch, orphan = c.oldest(); ch == nil {
				slog.Error("virtio-9p: reply with no request in flight", "tag", tag)
				io.Copy(io.Discard, body)
				continue
			}
			virtio.LogGuestError("virtio-9p: server could not decode a request", "tag", orphan)
			binary.LittleEndian.PutUint16(hdr[5:], orphan)
		}
		w := ch.Writer()
		w.Write(hdr[:])
		if _, err := io.Copy(w, body); err != nil {
			// The chain is too small for the reply: it gets what fits.
			io.Copy(io.Discard, body)
		}
		c.complete(ch.Head, w.Written())
	}
}

// take removes and returns the request in flight with tag.
func (c *conn) take(tag uint16) *queue.Chain {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[tag]
	if !ok {
		return nil
	}
	delete(c.pending, tag)
	return p.ch
}

// oldest removes and returns the request longest in flight.
func (c *conn) oldest() (*queue.Chain, uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best inFlight
	var tag uint16
	for t, p := range c.pending {
		if best.ch == nil || p.seq < best.seq {
			best, tag = p, t
		}
	}
	if best.ch != nil {
		delete(c.pending, tag)
	}
	return best.ch, tag
}

// Linux errno values for replies the device makes itself.
const (
	errnoEIO      = 5
	errnoEINVAL   = 22
	errnoEMSGSIZE = 90
)

// fail answers a request with Rlerror.
func (c *conn) fail(ch *queue.Chain, tag uint16, errno uint32) {
	var b [headerLen + 4]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	b[4] = typeRlerror
	binary.LittleEndian.PutUint16(b[5:], tag)
	binary.LittleEndian.PutUint32(b[7:], errno)
	w := ch.Writer()
	w.Write(b[:])
	c.complete(ch.Head, w.Written())
}

// complete returns a chain to the guest and interrupts it if it asked.
func (c *conn) complete(head uint16, n uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	virtio.PushUsed("9p", c.q, head, n)
	virtio.Signal("9p", c.q, c.irq)
}
