package agenttest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
)

// RawKind is what a Raw peer does with the host's requests.
type RawKind int

const (
	// RandomBytes answers each request with up to 4 KiB of random bytes.
	RandomBytes RawKind = iota
	// BadPayload answers each request on its stream with a frame whose
	// payload is random bytes, not a ttrpc Response.
	BadPayload
	// WrongType answers each request on its stream with a frame of a
	// type a client never receives: a request, stream data, no type.
	WrongType
	// Oversized answers each request with a frame of one byte more than
	// MaxMessage, all of it sent.
	Oversized
	// Endless answers the first request with a frame announcing 4 GiB,
	// then sends zeros until closed.
	Endless
	// Unsolicited sends ten thousand answers to streams the host never
	// opened before it answers each request.
	Unsolicited
	// Duplicates answers each request a hundred times.
	Duplicates
	// Deaf never reads: the host's requests fill the socket until its
	// writes block.
	Deaf
)

// RawKinds are all the kinds, for tests that try each.
var RawKinds = []RawKind{RandomBytes, BadPayload, WrongType, Oversized, Endless, Unsolicited, Duplicates, Deaf}

func (k RawKind) String() string {
	switch k {
	case RandomBytes:
		return "random bytes"
	case BadPayload:
		return "bad payload"
	case WrongType:
		return "wrong type"
	case Oversized:
		return "oversized"
	case Endless:
		return "endless"
	case Unsolicited:
		return "unsolicited"
	case Duplicates:
		return "duplicates"
	case Deaf:
		return "deaf"
	}
	return fmt.Sprintf("RawKind(%d)", int(k))
}

// ttrpc's framing (github.com/containerd/ttrpc, channel.go): a 10-byte
// header (payload length, stream ID, type, flags), big-endian, then the
// payload. A client's streams have odd IDs.
const (
	headerLen    = 10
	typeRequest  = 1
	typeResponse = 2
	typeData     = 3
)

// UnsolicitedPerRequest is how many answers to unopened streams an
// Unsolicited peer sends per request.
const UnsolicitedPerRequest = 10000

// Raw is a peer that reads the host's ttrpc requests frame by frame and
// answers as its kind says, on a unix socket pair.
type Raw struct {
	kind  RawKind
	host  net.Conn
	guest net.Conn
	rng   *rand.Rand // used by the serving goroutine only

	requests atomic.Int64
	// Sent counts the bytes written to the host.
	sent atomic.Int64

	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// StartRaw starts a raw peer of kind, its random bytes drawn from seed.
func StartRaw(kind RawKind, seed uint64) (*Raw, error) {
	host, guest, err := SocketPair()
	if err != nil {
		return nil, err
	}
	r := &Raw{kind: kind, host: host, guest: guest, rng: rand.New(rand.NewPCG(seed, ^seed)), done: make(chan struct{})}
	if kind != Deaf {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve()
		}()
	}
	return r, nil
}

// Conn is the host's end: hand it to agent.New.
func (r *Raw) Conn() net.Conn { return r.host }

// Requests reports how many requests the peer read.
func (r *Raw) Requests() int { return int(r.requests.Load()) }

// Sent reports how many bytes the peer wrote to the host.
func (r *Raw) Sent() int64 { return r.sent.Load() }

// Close closes the peer's end (not the host's) and waits for it to stop.
func (r *Raw) Close() error {
	r.once.Do(func() {
		close(r.done)
		r.guest.Close()
		r.wg.Wait()
	})
	return nil
}

func (r *Raw) serve() {
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(r.guest, hdr[:]); err != nil {
			return
		}
		length := binary.BigEndian.Uint32(hdr[:4])
		sid := binary.BigEndian.Uint32(hdr[4:8])
		if length > MaxMessage {
			return // not a ttrpc client
		}
		if _, err := io.CopyN(io.Discard, r.guest, int64(length)); err != nil {
			return
		}
		if hdr[8] != typeRequest {
			continue
		}
		if r.requests.Add(1) > 1 && r.kind == Endless {
			continue // the host is still reading the first answer
		}
		if err := r.answer(sid); err != nil {
			return
		}
	}
}

func (r *Raw) write(b []byte) error {
	n, err := r.guest.Write(b)
	r.sent.Add(int64(n))
	return err
}

// frame is one ttrpc frame; an empty payload with typeResponse is a
// well-formed answer with nothing in it (status OK, a zero message).
func frame(sid uint32, typ byte, payload []byte) []byte {
	b := make([]byte, headerLen+len(payload))
	binary.BigEndian.PutUint32(b[:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[4:8], sid)
	b[8] = typ
	copy(b[headerLen:], payload)
	return b
}

func (r *Raw) randomBytes(max int) []byte {
	b := make([]byte, 1+r.rng.IntN(max))
	for i := range b {
		b[i] = byte(r.rng.Uint32())
	}
	return b
}

func (r *Raw) answer(sid uint32) error {
	switch r.kind {
	case RandomBytes:
		return r.write(r.randomBytes(4096))
	case BadPayload:
		return r.write(frame(sid, typeResponse, r.randomBytes(64<<10)))
	case WrongType:
		typ := []byte{typeRequest, typeData, 0, byte(4 + r.rng.IntN(252))}[r.rng.IntN(4)]
		return r.write(frame(sid, typ, nil))
	case Oversized:
		return r.write(frame(sid, typeResponse, make([]byte, MaxMessage+1)))
	case Endless:
		hdr := frame(sid, typeResponse, nil)
		binary.BigEndian.PutUint32(hdr[:4], math.MaxUint32)
		if err := r.write(hdr); err != nil {
			return err
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			zeros := make([]byte, 64<<10)
			for {
				select {
				case <-r.done:
					return
				default:
				}
				if r.write(zeros) != nil {
					return
				}
			}
		}()
		return nil
	case Unsolicited:
		flood := make([]byte, 0, UnsolicitedPerRequest*headerLen)
		for i := range uint32(UnsolicitedPerRequest) {
			// Even IDs no client opens, and odd ones far beyond its
			// next.
			other := 2 * (i + 1)
			if i%2 == 1 {
				other = 1<<31 + 2*i + 1
			}
			flood = append(flood, frame(other, typeResponse, nil)...)
		}
		if err := r.write(flood); err != nil {
			return err
		}
		return r.write(frame(sid, typeResponse, nil))
	case Duplicates:
		one := frame(sid, typeResponse, nil)
		for range 100 {
			if err := r.write(one); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("agenttest: no answer for this kind")
}
