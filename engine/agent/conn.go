package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// ttrpc's framing (github.com/containerd/ttrpc, channel.go): a 10-byte
// header (payload length, stream ID, message type, flags), big-endian,
// then the payload. The client opens odd-numbered streams with a request;
// a unary call's stream gets one response. A ttrpc server never sends a
// payload over 4 MiB.
const (
	frameHeaderLen  = 10
	frameMax        = 4 << 20
	frameRequest    = 1
	frameResponse   = 2
	frameTypeOffset = 8
)

// Limits on what the client lets a guest do to the host side of the
// channel before it closes the connection. A closed connection fails
// every call in flight and every call after, with errdefs.ErrUnavailable
// and, where the guest broke the protocol, ErrBadAnswer.
const (
	// writeStall is how long a request may wait for the guest to take any
	// of it. An agent reads its stream all the time; one that takes
	// nothing for this long is not reading, and a request cut short
	// leaves the stream unusable.
	writeStall = 10 * time.Second
	// maxUnsolicited is how many answers to calls not awaiting one (never
	// made, or answered already) the client drops before it gives up on
	// the guest. A late answer to a call whose caller gave up is still
	// awaited and not counted.
	maxUnsolicited = 1024
	// maxAwaiting is how many calls may await their answer at once.
	// Calls whose callers gave up stay awaited (their answer may still
	// come); a guest that leaves this many unanswered is not coming back.
	maxAwaiting = 1 << 16
)

// guardedConn is the agent channel as ttrpc's client sees it, with what
// ttrpc does not check of its peer. ttrpc logs every answer to a stream it
// does not know (a guest can flood the host's log with them), reads and
// discards a frame however long its header says it is (4 GiB), waits up to
// a second per duplicate answer, and blocks a send, holding every other
// call, for as long as the peer does not read. guardedConn passes on only
// answers to calls that await one; it drops the rest up to
// maxUnsolicited, and closes the connection on a frame that is not an
// answer or longer than ttrpc allows, and on a write that makes no
// progress for its stall limit.
type guardedConn struct {
	net.Conn
	stall time.Duration

	// Write side: ttrpc writes under its send lock, one caller at a time.
	wHeader [frameHeaderLen]byte
	wHave   int    // bytes of wHeader seen
	wSkip   uint32 // payload bytes of the current outgoing frame still to see

	// Read side: only ttrpc's receive loop reads.
	rHeader  [frameHeaderLen]byte
	rPending []byte // the part of rHeader not yet returned to ttrpc
	rPass    uint32 // payload bytes of an accepted frame still to pass on

	mu          sync.Mutex
	awaiting    map[uint32]struct{} // guarded by mu: streams sent a request and not yet answered
	unsolicited int                 // guarded by mu
	failure     error               // guarded by mu: why the connection was closed
}

func newGuardedConn(conn net.Conn, stall time.Duration) *guardedConn {
	return &guardedConn{Conn: conn, stall: stall, awaiting: map[uint32]struct{}{}}
}

// fail records why the connection is closed, and closes it.
func (c *guardedConn) fail(format string, args ...any) error {
	c.mu.Lock()
	if c.failure == nil {
		// Classified as the guest's fault, and as a closed connection.
		c.failure = errs.Class(errdefs.ErrUnavailable,
			errs.New(errdefs.ErrDataLoss, "agent connection closed: %w: %s", ErrBadAnswer, fmt.Sprintf(format, args...)))
	}
	err := c.failure
	c.mu.Unlock()
	c.Conn.Close()
	return err
}

// err is why the guard closed the connection; nil if it did not.
func (c *guardedConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failure
}

// Write notes the streams the requests in p open, then writes p, failing
// the connection when the guest takes none of it for the stall limit.
func (c *guardedConn) Write(p []byte) (int, error) {
	if err := c.noteRequests(p); err != nil {
		return 0, err
	}
	written := 0
	for {
		if c.Conn.SetWriteDeadline(time.Now().Add(c.stall)) != nil {
			// A conn without deadlines (or a closed one): no stall limit.
			n, err := c.Conn.Write(p[written:])
			return written + n, err
		}
		n, err := c.Conn.Write(p[written:])
		written += n
		switch {
		case err == nil:
			return written, nil
		case errors.Is(err, os.ErrDeadlineExceeded) && n > 0:
			continue // slow, but taking it
		case errors.Is(err, os.ErrDeadlineExceeded):
			return written, c.fail("the guest took none of a request for %s: it does not read its channel", c.stall)
		}
		return written, err
	}
}

// noteRequests follows the frames of the outgoing stream through p and
// records the stream of each request as awaiting its answer.
func (c *guardedConn) noteRequests(p []byte) error {
	for len(p) > 0 {
		if c.wSkip > 0 {
			n := min(uint32(len(p)), c.wSkip)
			c.wSkip -= n
			p = p[n:]
			continue
		}
		n := copy(c.wHeader[c.wHave:], p)
		c.wHave += n
		p = p[n:]
		if c.wHave < frameHeaderLen {
			return nil
		}
		c.wHave = 0
		c.wSkip = binary.BigEndian.Uint32(c.wHeader[:4])
		if c.wHeader[frameTypeOffset] != frameRequest {
			continue
		}
		c.mu.Lock()
		c.awaiting[binary.BigEndian.Uint32(c.wHeader[4:8])] = struct{}{}
		full := len(c.awaiting) > maxAwaiting
		c.mu.Unlock()
		if full {
			return c.fail("%d calls are awaiting an answer", maxAwaiting)
		}
	}
	return nil
}

// Read returns the frames of answers to calls that await one, and drops
// or refuses the rest (see guardedConn).
func (c *guardedConn) Read(p []byte) (int, error) {
	for {
		if len(c.rPending) > 0 {
			n := copy(p, c.rPending)
			c.rPending = c.rPending[n:]
			return n, nil
		}
		if c.rPass > 0 {
			if uint32(len(p)) > c.rPass {
				p = p[:c.rPass]
			}
			n, err := c.Conn.Read(p)
			c.rPass -= uint32(n)
			return n, c.readErr(err)
		}
		// At a frame boundary.
		if _, err := io.ReadFull(c.Conn, c.rHeader[:]); err != nil {
			return 0, c.readErr(err)
		}
		length := binary.BigEndian.Uint32(c.rHeader[:4])
		stream := binary.BigEndian.Uint32(c.rHeader[4:8])
		switch typ := c.rHeader[frameTypeOffset]; {
		case typ != frameResponse:
			return 0, c.fail("a frame of type %d on stream %d, not an answer", typ, stream)
		case length > frameMax:
			return 0, c.fail("a frame of %d bytes, more than ttrpc's %d", length, frameMax)
		}
		c.mu.Lock()
		_, awaited := c.awaiting[stream]
		delete(c.awaiting, stream)
		if !awaited {
			c.unsolicited++
		}
		dropped := c.unsolicited
		c.mu.Unlock()
		if awaited {
			c.rPending, c.rPass = c.rHeader[:], length
			continue
		}
		if dropped > maxUnsolicited {
			return 0, c.fail("%d answers to calls not awaiting one (stream %d)", dropped-1, stream)
		}
		if _, err := io.CopyN(io.Discard, c.Conn, int64(length)); err != nil {
			return 0, c.readErr(err)
		}
	}
}

// readErr is err, or the guard's reason if it closed the connection.
func (c *guardedConn) readErr(err error) error {
	if err == nil {
		return nil
	}
	if f := c.err(); f != nil {
		return f
	}
	return err
}
