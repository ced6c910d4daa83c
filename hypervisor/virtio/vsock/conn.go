package vsock

import (
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// connKey names a connection: local is the host-side port, peer the
// guest's.
type connKey struct{ local, peer uint32 }

type connState int

const (
	stateConnecting  connState = iota // host-initiated, REQUEST sent, awaiting RESPONSE
	stateDialing                      // guest-initiated, dialing the host listener
	stateEstablished                  // bytes flow
)

// conn is one stream. All fields are guarded by Device.mu, except that uc
// is used for I/O without it by the conn's own goroutines.
type conn struct {
	key           connKey
	uc            *net.UnixConn
	state         connState
	hostInitiated bool
	closed        bool
	timer         *time.Timer // connect timeout of a host-initiated conn

	// Host to guest.
	peerBufAlloc uint32 // guest's receive buffer
	peerFwdCnt   uint32 // bytes the guest consumed
	txCnt        uint32 // bytes sent to the guest
	pending      []byte // read from uc, not yet given to the guest
	queued       bool   // in Device.ready
	hostEOF      bool   // uc reached EOF; shut down after pending
	shutdownSent bool
	peerNoRecv   bool // guest will receive nothing more
	readerWake   virtio.Waker

	// Guest to host.
	sendBuf      []byte // from the guest, not yet written to uc
	spare        []byte // the writer's other buffer
	rxCnt        uint32 // bytes received from the guest
	fwdCnt       uint32 // bytes written to uc
	fwdAdvised   uint32 // fwdCnt last told to the guest
	creditQueued bool   // a CREDIT_UPDATE is in Device.control
	peerNoSend   bool   // guest will send nothing more: half-close uc after sendBuf
	halfClosed   bool
	closeFlushed bool // guest shut both ways: close after sendBuf, then RST
	writerWake   virtio.Waker
}

type controlPacket struct {
	hdr  Header
	conn *conn // if set, buf_alloc and fwd_cnt are filled in when sent
}

func newConn(key connKey) *conn {
	return &conn{key: key, readerWake: virtio.NewWaker(), writerWake: virtio.NewWaker()}
}

// peerFree is how many more bytes the guest can take.
func (c *conn) peerFree() uint32 {
	inflight := c.txCnt - c.peerFwdCnt
	if inflight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inflight
}

// header returns a packet header from the host side of c.
func (d *Device) header(c *conn, op uint16) Header {
	return Header{SrcCID: HostCID, DstCID: d.cid, SrcPort: c.key.local, DstPort: c.key.peer, Type: TypeStream, Op: op}
}

// queueControlLocked queues a control packet for the guest.
func (d *Device) queueControlLocked(p controlPacket) {
	if len(d.control) >= maxControl {
		d.log.Debug("vsock: control queue full, dropping a packet", "op", p.hdr.Op)
		return
	}
	d.control = append(d.control, p)
	d.rxWake.Wake()
}

// queueDataLocked puts c in the receive worker's round-robin.
func (d *Device) queueDataLocked(c *conn) {
	if !c.queued && !c.closed && len(c.pending) > 0 && c.peerFree() > 0 {
		c.queued = true
		d.ready = append(d.ready, c)
		d.rxWake.Wake()
	}
}

func (d *Device) queueCreditUpdateLocked(c *conn) {
	if !c.creditQueued {
		c.creditQueued = true
		d.queueControlLocked(controlPacket{hdr: d.header(c, OpCreditUpdate), conn: c})
	}
}

// resetLocked sends RST for c and closes it.
func (d *Device) resetLocked(c *conn) {
	if !c.closed {
		d.queueControlLocked(controlPacket{hdr: d.header(c, OpRST)})
		d.closeLocked(c)
	}
}

// closeLocked forgets c and closes its socket, which ends its goroutines.
func (d *Device) closeLocked(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	delete(d.conns, c.key)
	if c.hostInitiated {
		delete(d.hostPorts, c.key.local)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.uc != nil {
		c.uc.Close()
	}
	c.pending, c.sendBuf = nil, nil
	c.readerWake.Wake()
	c.writerWake.Wake()
}

// fillRx writes the next packet for the guest into the receive buffer c.
// ok is false if there was nothing to send after all.
func (d *Device) fillRx(ch *queue.Chain) (n uint32, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch.WritableLen() < HeaderSize {
		return 0, true // unusable buffer: give it back empty
	}
	w := ch.Writer()
	var hb [HeaderSize]byte
	for len(d.control) > 0 {
		p := d.control[0]
		d.control = d.control[1:]
		if c := p.conn; c != nil {
			if c.closed {
				continue // its RST, if any, is queued on its own
			}
			p.hdr.BufAlloc, p.hdr.FwdCnt = ConnBufSize, c.fwdCnt
			c.fwdAdvised = c.fwdCnt
			if p.hdr.Op == OpCreditUpdate {
				c.creditQueued = false
			}
		}
		p.hdr.Encode(hb[:])
		w.Write(hb[:])
		return HeaderSize, true
	}
	for len(d.ready) > 0 {
		c := d.ready[0]
		d.ready = d.ready[1:]
		c.queued = false
		free := c.peerFree()
		if c.closed || c.peerNoRecv || len(c.pending) == 0 || free == 0 {
			continue // a credit update from the guest queues it again
		}
		k := min(uint64(len(c.pending)), uint64(free), ch.WritableLen()-HeaderSize)
		h := d.header(c, OpRW)
		h.Len = uint32(k)
		h.BufAlloc, h.FwdCnt = ConnBufSize, c.fwdCnt
		c.fwdAdvised = c.fwdCnt
		h.Encode(hb[:])
		w.Write(hb[:])
		w.Write(c.pending[:k])
		c.pending = c.pending[k:]
		c.txCnt += uint32(k)
		if len(c.pending) > 0 {
			d.queueDataLocked(c) // to the back: round-robin
		} else {
			c.readerWake.Wake()
			if c.hostEOF {
				d.shutdownLocked(c)
			}
		}
		return HeaderSize + uint32(k), true
	}
	return 0, false
}

// shutdownLocked tells the guest the host will send nothing more.
func (d *Device) shutdownLocked(c *conn) {
	if !c.shutdownSent {
		c.shutdownSent = true
		h := d.header(c, OpShutdown)
		h.Flags = ShutdownSend
		d.queueControlLocked(controlPacket{hdr: h, conn: c})
	}
}

// handleTx processes one packet from the guest. It never blocks on a
// socket.
func (d *Device) handleTx(ch *queue.Chain) uint32 {
	r := ch.Reader()
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		d.log.Debug("vsock: dropping a packet without a header")
		return 0
	}
	h, _ := DecodeHeader(hb[:])
	if h.SrcCID != d.cid || h.DstCID != HostCID {
		d.log.Debug("vsock: dropping a packet with wrong addresses", "src", h.SrcCID, "dst", h.DstCID)
		return 0
	}
	if h.Len > maxPayload || uint64(h.Len) > r.Len() {
		d.log.Debug("vsock: dropping a packet with a bad length", "len", h.Len, "have", r.Len())
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		return 0
	}
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	c := d.conns[key]
	if h.Type != TypeStream || c == nil {
		switch {
		case h.Type == TypeStream && h.Op == OpRequest:
			d.guestConnectLocked(key, h)
		case h.Op != OpRST:
			// Nobody here (or not a stream): reset the guest's socket.
			d.queueControlLocked(controlPacket{hdr: Header{SrcCID: HostCID, DstCID: d.cid,
				SrcPort: h.DstPort, DstPort: h.SrcPort, Type: TypeStream, Op: OpRST}})
		}
		return 0
	}
	// Every packet carries the guest's current credit.
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	d.queueDataLocked(c)
	switch h.Op {
	case OpResponse:
		if c.state != stateConnecting {
			d.resetLocked(c)
			break
		}
		// Connecting --RESPONSE--> Established
		c.state = stateEstablished
		c.timer.Stop()
		d.startLocked(c, okLine(c.key.local))
		if d.onConnect != nil {
			d.firstConnect.Do(func() { go d.onConnect() })
		}
	case OpRST:
		d.closeLocked(c)
	case OpShutdown:
		if h.Flags&ShutdownRecv != 0 {
			c.peerNoRecv = true
			c.pending = nil
			c.readerWake.Wake()
		}
		if h.Flags&ShutdownSend != 0 {
			c.peerNoSend = true
		}
		if c.peerNoRecv && c.peerNoSend {
			c.closeFlushed = true
		}
		c.writerWake.Wake()
	case OpRW:
		if c.state != stateEstablished || c.peerNoSend {
			d.resetLocked(c)
			break
		}
		if c.rxCnt-c.fwdCnt+h.Len > ConnBufSize {
			d.log.Debug("vsock: guest overran its credit", "port", c.key.local)
			d.resetLocked(c)
			break
		}
		off := len(c.sendBuf)
		c.sendBuf = slices.Grow(c.sendBuf, int(h.Len))[:off+int(h.Len)]
		io.ReadFull(r, c.sendBuf[off:]) // length checked above
		c.rxCnt += h.Len
		c.writerWake.Wake()
	case OpCreditRequest:
		d.queueCreditUpdateLocked(c)
	case OpCreditUpdate:
		// Credit taken above.
	default:
		d.resetLocked(c) // a second REQUEST, or an unknown op
	}
	return 0
}

// guestConnectLocked starts a guest-initiated connection to
// "<UDSPath>_<port>".
func (d *Device) guestConnectLocked(key connKey, h Header) {
	c := newConn(key)
	c.state = stateDialing
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	d.conns[key] = c
	path := d.path + "_" + strconv.FormatUint(uint64(key.local), 10)
	d.connWG.Go(func() {
		nc, err := net.DialTimeout("unix", path, dialTimeout)
		d.mu.Lock()
		defer d.mu.Unlock()
		if c.closed {
			if nc != nil {
				nc.Close()
			}
			return
		}
		if err != nil {
			d.log.Debug("vsock: guest connection refused", "path", path, "err", err)
			d.resetLocked(c)
			return
		}
		// Dialing --dial ok--> Established
		c.uc = nc.(*net.UnixConn)
		c.state = stateEstablished
		d.queueControlLocked(controlPacket{hdr: d.header(c, OpResponse), conn: c})
		d.startLocked(c, nil)
	})
}

// startLocked starts c's reader and writer; hello is written to the host
// first (the hybrid handshake's OK line) and not counted as stream data.
func (d *Device) startLocked(c *conn, hello []byte) {
	d.connWG.Go(func() { d.readLoop(c) })
	d.connWG.Go(func() { d.writeLoop(c, hello) })
}

// readLoop moves host bytes to c.pending, one chunk at a time.
func (d *Device) readLoop(c *conn) {
	buf := make([]byte, readChunk)
	for {
		d.mu.Lock()
		for !c.closed && !c.peerNoRecv && len(c.pending) > 0 {
			d.mu.Unlock()
			<-c.readerWake
			d.mu.Lock()
		}
		stop := c.closed || c.peerNoRecv
		d.mu.Unlock()
		if stop {
			return
		}
		n, err := c.uc.Read(buf)
		d.mu.Lock()
		if c.closed || c.peerNoRecv {
			d.mu.Unlock()
			return
		}
		if n > 0 {
			c.pending = buf[:n] // the receive worker copies it out under mu
			d.queueDataLocked(c)
		}
		if err != nil {
			// EOF or a broken socket: the host sends nothing more.
			c.hostEOF = true
			if len(c.pending) == 0 {
				d.shutdownLocked(c)
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
}

// writeLoop writes guest bytes to the host socket and returns credit.
func (d *Device) writeLoop(c *conn, hello []byte) {
	if len(hello) > 0 {
		if _, err := c.uc.Write(hello); err != nil {
			d.mu.Lock()
			d.resetLocked(c)
			d.mu.Unlock()
			return
		}
	}
	for {
		d.mu.Lock()
		for !c.closed && len(c.sendBuf) == 0 && !c.closeFlushed && (!c.peerNoSend || c.halfClosed) {
			d.mu.Unlock()
			<-c.writerWake
			d.mu.Lock()
		}
		if c.closed {
			d.mu.Unlock()
			return
		}
		if len(c.sendBuf) == 0 {
			if c.closeFlushed {
				// Everything the guest sent is out: Established --RST--> closed.
				d.resetLocked(c)
				d.mu.Unlock()
				return
			}
			c.halfClosed = true
			d.mu.Unlock()
			c.uc.CloseWrite()
			continue
		}
		data := c.sendBuf
		c.sendBuf, c.spare = c.spare[:0], nil
		d.mu.Unlock()

		_, err := c.uc.Write(data) // may block on a slow host reader: only this conn waits

		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		c.spare = data[:0]
		if err != nil {
			d.resetLocked(c)
			d.mu.Unlock()
			return
		}
		c.fwdCnt += uint32(len(data))
		// Return credit once a quarter of the buffer is free again; a
		// guest blocked on credit has a full buffer outstanding, so it
		// always gets an update.
		if c.fwdCnt-c.fwdAdvised >= ConnBufSize/4 {
			d.queueCreditUpdateLocked(c)
		}
		d.mu.Unlock()
	}
}

// acceptLoop takes host connections until the listener is closed.
func (d *Device) acceptLoop() {
	defer close(d.acceptDone)
	for {
		uc, err := d.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("vsock: accept", "err", err)
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		d.handshakes.Go(func() { d.handshake(uc) })
	}
}

// handshake reads "CONNECT <port>\n" and asks the guest for a connection.
func (d *Device) handshake(uc *net.UnixConn) {
	uc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	port, err := readConnect(uc)
	if err != nil {
		d.log.Debug("vsock: bad host handshake", "err", err)
		uc.Close()
		return
	}
	uc.SetReadDeadline(time.Time{})
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		uc.Close() // no guest driver yet: the client retries
		return
	}
	local := d.allocHostPortLocked()
	c := newConn(connKey{local: local, peer: port})
	c.uc, c.hostInitiated, c.state = uc, true, stateConnecting
	d.conns[c.key] = c
	d.hostPorts[local] = true
	d.queueControlLocked(controlPacket{hdr: d.header(c, OpRequest), conn: c})
	c.timer = time.AfterFunc(connectTimeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if c.state == stateConnecting {
			d.resetLocked(c) // the guest never answered
		}
	})
}

func (d *Device) allocHostPortLocked() uint32 {
	for {
		p := d.nextHostPort
		d.nextHostPort++
		if d.nextHostPort == 0 {
			d.nextHostPort = firstHostPort
		}
		if !d.hostPorts[p] {
			return p
		}
	}
}
