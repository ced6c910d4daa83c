package vsock

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/hybridvsock"
)

// The host-side client that the engine, the nested test agent and the
// benchmarks use, against this device: the two ends of the handshake
// agree.

type dialResult struct {
	conn net.Conn
	err  error
}

func dialAsync(path string, port uint32) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := hybridvsock.Dial(ctx, path, port)
		ch <- dialResult{conn, err}
	}()
	return ch
}

// The guest accepts and speaks first, in the same breath: the client
// hands its caller a connection whose first bytes are the guest's.
func TestClientAccepted(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	res := dialAsync(path, 1024)

	req := g.expect(OpRequest, 1024)
	s := &guestSock{local: 1024, peer: req.SrcPort}
	g.sendOn(s, OpResponse, 0, nil)
	g.sendOn(s, OpRW, 0, []byte("hello"))

	r := <-res
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	defer r.conn.Close()
	r.conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(r.conn, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("first stream bytes %q, %v; want hello", buf, err)
	}
	if _, err := r.conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if p := g.expect(OpRW, 1024); string(p.payload) != "ping" {
		t.Fatalf("guest got %q, want ping", p.payload)
	}
}

// Nothing listens on the port: the guest resets the request, the device
// closes the connection, and the client says refused.
func TestClientRefusedByGuest(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	res := dialAsync(path, 5000)
	req := g.expect(OpRequest, 5000)
	g.send(Header{SrcPort: 5000, DstPort: req.SrcPort, Op: OpRST}, nil)
	if r := <-res; !errors.Is(r.err, hybridvsock.ErrRefused) {
		t.Fatalf("Dial to a port nobody listens on: %v, want refused", r.err)
	}
}

// Before the guest driver starts, the device refuses at once.
func TestClientRefusedBeforeDriver(t *testing.T) {
	_, path := newDevice(t)
	if r := <-dialAsync(path, 1024); !errors.Is(r.err, hybridvsock.ErrRefused) {
		t.Fatalf("Dial before the guest driver is up: %v, want refused", r.err)
	}
}
