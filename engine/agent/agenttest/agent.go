// Package agenttest provides hostile guest agents for tests of the host's
// side of the agent channel. Agent is a real ttrpc server of api/agent/v1
// on one end of a unix socket pair (the transport the sandbox drivers hand
// the engine) whose answers are garbage, as large as a ttrpc message
// carries, or never come; Raw is a peer on such a socket that speaks no
// ttrpc at all (random bytes, frames announcing gigabytes, answers to
// requests never made, a peer that never reads).
//
// A guest is not trusted: whatever these do, the engine must neither
// crash, hang nor grow. The package is test support, as net/http/httptest
// is: only tests import it. It checks nothing of what the engine answers;
// SettleGoroutines checks what the engine leaves running.
package agenttest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

// Mode is how an Agent answers a call.
type Mode int

const (
	// Garbage answers at once with nonsense: negative and huge numbers,
	// status codes no API has, offsets before or past what was asked,
	// more data than asked for, random bytes (control characters, invalid
	// UTF-8, NULs, slashes) in strings and as extra wire fields.
	Garbage Mode = iota
	// Huge answers at once with as much as one ttrpc message carries
	// (almost 4 MiB): data blobs, strings, error messages, or a million
	// unknown fields, with sizes and counts at their types' maximum.
	Huge
	// Silent takes the call and never answers it (until Close).
	Silent
	// Late answers as a well-behaved agent would, but only once the
	// caller's deadline has passed: the answer reaches a call that is gone.
	Late
	// Valid answers at once as a well-behaved agent would: a process that
	// exits 0 without output, an empty export, a file "f". It lets a test
	// make some methods hostile and the rest of a run go through.
	Valid
)

func (m Mode) String() string {
	switch m {
	case Garbage:
		return "garbage"
	case Huge:
		return "huge"
	case Silent:
		return "silent"
	case Late:
		return "late"
	case Valid:
		return "valid"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// MaxMessage is the largest message ttrpc carries; an Agent's Huge
// answers come close to it.
const MaxMessage = 4 << 20

// lateBy is how long after the caller's deadline a Late answer comes.
const lateBy = 50 * time.Millisecond

// hugeLen is the size of a Huge answer's blob: a message of at most
// MaxMessage once wrapped in ttrpc's Response.
const hugeLen = MaxMessage - 64<<10

// Agent is a hostile agent served over a unix socket pair.
type Agent struct {
	mode Mode
	per  map[string]Mode

	srv    *ttrpc.Server
	host   net.Conn
	closed chan struct{} // closed by Close: releases the Silent and Late calls
	once   sync.Once
	served chan struct{} // closed when Serve returned

	mu    sync.Mutex
	rng   *rand.Rand     // guarded by mu
	calls map[string]int // guarded by mu
	huge  int            // guarded by mu: Huge answers given, to alternate their shape
}

var _ agentapi.TTRPCAgentService = (*Agent)(nil)

// Start serves an agent that answers every call as mode says, except the
// methods per names ("DropExport": Silent), with random answers drawn from
// seed. Conn is the host's end of its channel.
func Start(mode Mode, per map[string]Mode, seed uint64) (*Agent, error) {
	host, guest, err := SocketPair()
	if err != nil {
		return nil, err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		host.Close()
		guest.Close()
		return nil, err
	}
	a := &Agent{
		mode: mode, per: per, srv: srv, host: host,
		closed: make(chan struct{}), served: make(chan struct{}),
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), calls: map[string]int{},
	}
	agentapi.RegisterTTRPCAgentService(srv, a)
	l := &oneConn{conn: guest, done: make(chan struct{})}
	go func() {
		defer close(a.served)
		srv.Serve(context.Background(), l)
	}()
	return a, nil
}

// Conn is the host's end of the agent's channel: hand it to agent.New.
func (a *Agent) Conn() net.Conn { return a.host }

// Calls reports how many calls of method the agent received.
func (a *Agent) Calls(method string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[method]
}

// Close releases the calls it holds, stops serving and closes its end of
// the channel (not the host's).
func (a *Agent) Close() error {
	a.once.Do(func() {
		close(a.closed)
		a.srv.Close()
		<-a.served
	})
	return nil
}

// SocketPair returns the two ends of a connected unix stream socket.
func SocketPair() (host, guest net.Conn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "agenttest")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			unix.Close(fds[1])
			return nil, nil, err
		}
	}
	return conns[0], conns[1], nil
}

// oneConn is a listener that hands out one connection, then blocks until
// closed.
type oneConn struct {
	mu   sync.Mutex
	conn net.Conn // nil once handed out
	done chan struct{}
	once sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.done) })
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return &net.UnixAddr{Name: "agenttest", Net: "unix"} }

// shapes is one method's answers: garbage draws nonsense from r, huge is
// the n-th Huge answer, valid a well-behaved agent's.
type shapes[T proto.Message] struct {
	garbage func(r *rand.Rand) (T, error)
	huge    func(n int) (T, error)
	valid   func() (T, error)
}

// answer runs one call of method as its mode says.
func answer[T proto.Message](ctx context.Context, a *Agent, method string, s shapes[T]) (T, error) {
	a.mu.Lock()
	a.calls[method]++
	mode, ok := a.per[method]
	if !ok {
		mode = a.mode
	}
	n := a.huge
	if mode == Huge {
		a.huge++
	}
	a.mu.Unlock()

	var zero T
	switch mode {
	case Silent:
		<-a.closed
		return zero, status.Error(codes.Unavailable, "agenttest: closed")
	case Late:
		// The server's context ends at the caller's deadline (ttrpc sends
		// it along); a call without one waits for Close.
		select {
		case <-ctx.Done():
		case <-a.closed:
			return s.valid()
		}
		// Late enough that the caller has surely gone, not racing it.
		select {
		case <-time.After(lateBy):
		case <-a.closed:
		}
		return s.valid()
	case Huge:
		return s.huge(n)
	case Valid:
		return s.valid()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return s.garbage(a.rng)
}

// garbageBytes is n random bytes, n below max, heavy in what a text or a
// path must not hold.
func garbageBytes(r *rand.Rand, max int) []byte {
	b := make([]byte, r.IntN(max))
	for i := range b {
		switch r.IntN(8) {
		case 0:
			b[i] = 0
		case 1:
			b[i] = '/'
		case 2:
			b[i] = "\n\r\x1b\x7f"[r.IntN(4)]
		case 3:
			b[i] = byte(0x80 + r.IntN(0x80)) // a continuation or invalid lead byte
		default:
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

// garbageString is a string of fewer than max bytes: mostly valid UTF-8
// (protobuf refuses a string that is not) made of what a name, a path or
// a line of text must not hold; sometimes not UTF-8 at all.
func garbageString(r *rand.Rand, max int) string {
	if r.IntN(8) == 0 {
		return string(garbageBytes(r, max))
	}
	var b strings.Builder
	for b.Len() < max-4 && r.IntN(max) > b.Len()/2 {
		switch r.IntN(10) {
		case 0:
			b.WriteByte(0)
		case 1:
			b.WriteString("/..")
		case 2:
			b.WriteByte("\n\r\x1b\x7f"[r.IntN(4)])
		case 3:
			b.WriteRune('\u202e') // right-to-left override
		case 4:
			b.WriteRune(rune(0x80 + r.IntN(0x780)))
		default:
			b.WriteByte(byte(0x20 + r.IntN(0x5f)))
		}
	}
	return b.String()
}

// garbageFields appends random wire bytes after a message's own fields:
// unknown fields, or bytes that make the message fail to decode, or that
// decode as a known field with the wrong wire type.
func garbageFields[T proto.Message](r *rand.Rand, m T) T {
	if r.IntN(2) == 0 {
		m.ProtoReflect().SetUnknown(protoreflect.RawFields(garbageBytes(r, 512)))
	}
	return m
}

// garbageStatus is an error status with a code from the API or far
// outside it and a random message.
func garbageStatus(r *rand.Rand) error {
	code := codes.Code(r.Uint32())
	if r.IntN(2) == 0 {
		code = codes.Code(r.IntN(20))
	}
	if code == codes.OK {
		code = 99
	}
	return status.New(code, garbageString(r, 64<<10)).Err()
}

// garbageUint64 is a number around an edge: 0, the type's maximum, its
// sign bit, anything, or anything of a few bits (a size an export could
// have).
func garbageUint64(r *rand.Rand) uint64 {
	switch r.IntN(5) {
	case 0:
		return 0
	case 1:
		return math.MaxUint64
	case 2:
		return 1 << 63
	case 3:
		return r.Uint64N(1 << (1 + r.IntN(24)))
	}
	return r.Uint64()
}

// millionFields is a million one-byte unknown fields: the longest list an
// answer can carry in one message. It and the other huge values are made
// once, when first used.
var millionFields = sync.OnceValue(func() protoreflect.RawFields {
	const field = 15<<3 | 0 // field 15, varint: no such field in the API
	b := make([]byte, 0, 2<<20)
	for range 1 << 20 {
		b = append(b, field, 1)
	}
	return b
})

func withMillionFields[T proto.Message](m T) T {
	m.ProtoReflect().SetUnknown(millionFields())
	return m
}

var (
	hugeBlob   = sync.OnceValue(func() []byte { return make([]byte, hugeLen) })
	hugeString = sync.OnceValue(func() string { return strings.Repeat("\x1b[2J\n", hugeLen/5) })
)

// hugeText is a string of n bytes (at most hugeLen) of terminal escapes
// and newlines.
func hugeText(n int) string { return hugeString()[:n] }
