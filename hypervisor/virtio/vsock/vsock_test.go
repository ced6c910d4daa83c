package vsock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

func newDevice(t *testing.T) (*Device, string) {
	t.Helper()
	return newDeviceWith(t, Config{})
}

// newDeviceWith is newDevice with cfg's other fields.
func newDeviceWith(t *testing.T, cfg Config) (*Device, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	cfg.GuestCID, cfg.UDSPath = testCID, path
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
	})
	return dev, path
}

// hostConnect dials the device socket and sends the CONNECT line.
func hostConnect(t *testing.T, path string, port uint32) (*net.UnixConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn), bufio.NewReader(c)
}

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []Config{
		{GuestCID: 2, UDSPath: filepath.Join(dir, "a")},
		{GuestCID: 1 << 33, UDSPath: filepath.Join(dir, "a")},
		{GuestCID: 3},
		{GuestCID: 3, UDSPath: filepath.Join(dir, "missing", "a")},
	} {
		if d, err := New(cfg); err == nil {
			d.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestConfigSpace(t *testing.T) {
	dev, _ := newDevice(t)
	var b [8]byte
	dev.ReadConfig(0, b[:])
	if b != [8]byte{testCID} {
		t.Fatalf("config = % x, want the guest CID %d", b, testCID)
	}
}

// Host dials the socket, CONNECT 1024, the guest accepts, bytes flow both
// ways, the host half-closes, the guest closes, the device resets.
func TestHostInitiated(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	hc, hr := hostConnect(t, path, 1024)

	req := g.expect(OpRequest, 1024)
	if req.SrcPort < firstHostPort || req.BufAlloc != ConnBufSize {
		t.Fatalf("REQUEST from host port %d with buf_alloc %d", req.SrcPort, req.BufAlloc)
	}
	s := &guestSock{local: 1024, peer: req.SrcPort}
	g.sendOn(s, OpResponse, 0, nil)
	line, err := hr.ReadString('\n')
	if err != nil || line != fmt.Sprintf("OK %d\n", req.SrcPort) {
		t.Fatalf("handshake reply %q, %v; want OK %d", line, err, req.SrcPort)
	}

	if _, err := hc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if p := g.expect(OpRW, 1024); string(p.payload) != "ping" {
		t.Fatalf("guest got %q, want ping", p.payload)
	}
	s.fwdCnt += 4
	g.sendOn(s, OpRW, 0, []byte("pong"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(hr, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("host got %q, %v; want pong", buf, err)
	}

	hc.CloseWrite()
	if p := g.expect(OpShutdown, 1024); p.Flags != ShutdownSend {
		t.Fatalf("SHUTDOWN flags %d, want %d (host sends no more)", p.Flags, ShutdownSend)
	}
	g.sendOn(s, OpRW, 0, []byte("bye"))
	g.sendOn(s, OpShutdown, ShutdownRecv|ShutdownSend, nil)
	rest, err := io.ReadAll(hr)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("host read %q, %v after the guest closed; want bye then EOF", rest, err)
	}
	g.expect(OpRST, 1024)
}

// A CONNECT to a port nobody listens on is refused by the guest with RST,
// and the host sees its connection closed without an OK.
func TestHostInitiatedRefused(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	_, hr := hostConnect(t, path, 5000)
	req := g.expect(OpRequest, 5000)
	g.send(Header{SrcPort: 5000, DstPort: req.SrcPort, Op: OpRST}, nil)
	if line, err := hr.ReadString('\n'); err != io.EOF || line != "" {
		t.Fatalf("host read %q, %v; want EOF", line, err)
	}
}

// FirstConnect is called once the guest first accepts a host connection:
// not for one it refuses, and not again for later ones.
func TestFirstConnect(t *testing.T) {
	called := make(chan struct{}, 4)
	dev, path := newDeviceWith(t, Config{FirstConnect: func() { called <- struct{}{} }})
	g := newGuest(t, dev)
	none := func(when string) {
		t.Helper()
		select {
		case <-called:
			t.Fatalf("FirstConnect called %s", when)
		case <-time.After(100 * time.Millisecond):
		}
	}

	_, hr := hostConnect(t, path, 5000)
	req := g.expect(OpRequest, 5000)
	g.send(Header{SrcPort: 5000, DstPort: req.SrcPort, Op: OpRST}, nil)
	if _, err := hr.ReadString('\n'); err != io.EOF {
		t.Fatalf("refused connection: %v, want EOF", err)
	}
	none("for a connection the guest refused")

	for i := range 2 {
		_, hr := hostConnect(t, path, 1024)
		req := g.expect(OpRequest, 1024)
		g.sendOn(&guestSock{local: 1024, peer: req.SrcPort}, OpResponse, 0, nil)
		if _, err := hr.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			select {
			case <-called:
			case <-time.After(5 * time.Second):
				t.Fatal("FirstConnect not called when the guest accepted a connection")
			}
		}
	}
	none("a second time")
}

func TestBadHandshakes(t *testing.T) {
	dev, path := newDevice(t)
	newGuest(t, dev)
	for _, line := range []string{"HELLO 1\n", "CONNECT x\n", "CONNECT 99999999999\n", strings.Repeat("C", 100) + "\n"} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, line)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		// EOF, or a reset when the device hung up on unread bytes.
		if n, err := c.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("handshake %q: read %d, %v; want the device to hang up", line, n, err)
		}
		c.Close()
	}
	for _, tc := range []struct {
		line string
		port uint32
		ok   bool
	}{{"CONNECT 1024", 1024, true}, {"CONNECT 0", 0, true}, {"CONNECT  7 ", 7, true}, {"CONNECT", 0, false}, {"connect 1", 0, false}} {
		port, err := parseConnect(tc.line)
		if (err == nil) != tc.ok || port != tc.port {
			t.Errorf("parseConnect(%q) = %d, %v; want %d, ok=%v", tc.line, port, err, tc.port, tc.ok)
		}
	}
}

// Guest connects to host port 52: the device dials <uds>_52.
func TestGuestInitiated(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	ln, err := net.Listen("unix", path+"_52")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	s := &guestSock{local: 40000, peer: 52}
	g.sendOn(s, OpRequest, 0, nil)
	if p := g.expect(OpResponse, 40000); p.SrcPort != 52 {
		t.Fatalf("RESPONSE from port %d, want 52", p.SrcPort)
	}
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	g.sendOn(s, OpRW, 0, []byte("hello host"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "hello host" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	io.WriteString(hc, "hello guest")
	if p := g.expect(OpRW, 40000); string(p.payload) != "hello guest" {
		t.Fatalf("guest got %q", p.payload)
	}
	// Guest resets: the host connection closes.
	g.sendOn(s, OpRST, 0, nil)
	hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := hc.Read(buf); err != io.EOF {
		t.Fatalf("host read after guest RST: %v, want EOF", err)
	}

	// Nothing listens on port 53: RST.
	g.sendOn(&guestSock{local: 40001, peer: 53}, OpRequest, 0, nil)
	g.expect(OpRST, 40001)
}

// Packets for unknown connections get RST; packets with wrong addresses
// are dropped; a guest that overruns the device's credit is reset.
func TestGuestMisbehaviour(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	g.send(Header{SrcPort: 1, DstPort: 2, Op: OpRW}, []byte("x"))
	g.expect(OpRST, 1)
	g.send(Header{SrcPort: 1, DstPort: 2, Op: OpRST}, nil) // no answer to an RST
	var hb [HeaderSize]byte
	(&Header{SrcCID: 7, DstCID: HostCID, SrcPort: 1, DstPort: 2, Type: TypeStream, Op: OpRW}).Encode(hb[:])
	g.tx.Add(queuetest.Readable(hb[:]))
	g.kick(txQueue)
	if p, ok := g.recv(200 * time.Millisecond); ok {
		t.Fatalf("device answered a packet from a foreign CID or an RST: %+v", p.Header)
	}

	ln, err := net.Listen("unix", path+"_60")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &guestSock{local: 41000, peer: 60}
	g.sendOn(s, OpRequest, 0, nil)
	g.expect(OpResponse, 41000)
	hc, _ := ln.Accept() // never read: the device buffers up to its credit
	defer hc.Close()
	chunk := make([]byte, txPayloadLimit)
	for range ConnBufSize/txPayloadLimit + 1 {
		g.sendOn(s, OpRW, 0, chunk)
	}
	// Some data may already have reached the host socket buffer, so the
	// overrun is only certain after a lot more.
	for range 64 {
		g.sendOn(s, OpRW, 0, chunk)
	}
	for {
		p, ok := g.recv(5 * time.Second)
		if !ok || p.DstPort != 41000 {
			t.Fatalf("got %+v, %v; want an RST to port 41000", p.Header, ok)
		}
		if p.Op == OpRST {
			break
		}
		if p.Op != OpCreditUpdate {
			t.Fatalf("packet op %d before the RST, want only credit updates", p.Op)
		}
	}
}

// Many concurrent host connections, each streaming random data through a
// guest echo server, all with credit flow control in both directions.
func TestManyStreams(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	done := make(chan struct{})
	guestErr := make(chan error, 1)
	var serverWG sync.WaitGroup
	serverWG.Add(1)
	go func() { defer serverWG.Done(); g.echoServer(1024, done, guestErr) }()
	defer func() { close(done); serverWG.Wait() }()

	const streams, perStream = 16, 300 << 10
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			errs <- echoStream(path, perStream, uint64(i))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	select {
	case err := <-guestErr:
		t.Fatal(err)
	default:
	}
}

// echoStream sends n random bytes on a new host connection, reads the echo
// concurrently and compares.
func echoStream(path string, n int, seed uint64) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "CONNECT 1024\n")
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("stream %d: handshake %q, %v", seed, line, err)
	}
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	writeErr := make(chan error, 1)
	go func() {
		for off := 0; off < len(data); {
			k := min(len(data)-off, 1+rng.IntN(20000))
			if _, err := c.Write(data[off : off+k]); err != nil {
				writeErr <- err
				return
			}
			off += k
		}
		writeErr <- c.(*net.UnixConn).CloseWrite()
	}()
	got, err := io.ReadAll(r)
	if werr := <-writeErr; werr != nil {
		return fmt.Errorf("stream %d: write: %w", seed, werr)
	}
	if err != nil {
		return fmt.Errorf("stream %d: read after %d bytes: %w", seed, len(got), err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("stream %d: echo differs (%d bytes back of %d)", seed, len(got), len(data))
	}
	return nil
}

// Reset (guest reboot) closes every host connection.
func TestResetClosesConnections(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	hc, hr := hostConnect(t, path, 1024)
	req := g.expect(OpRequest, 1024)
	g.sendOn(&guestSock{local: 1024, peer: req.SrcPort}, OpResponse, 0, nil)
	if _, err := hr.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	dev.Reset()
	hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := hr.ReadByte(); err != io.EOF {
		t.Fatalf("host read after reset: %v, want EOF", err)
	}
	// Before the driver is up again, host connections are hung up.
	_, hr2 := hostConnect(t, path, 1024)
	if _, err := hr2.ReadByte(); err != io.EOF {
		t.Fatalf("host read with the device inactive: %v, want EOF", err)
	}
}

// A host program that stops reading stalls only its own connection: the
// device stops granting that connection credit, and other connections
// (and the queues) keep flowing.
func TestStalledHostReader(t *testing.T) {
	dev, path := newDevice(t)
	g := newGuest(t, dev)
	done := make(chan struct{})
	guestErr := make(chan error, 1)
	var serverWG sync.WaitGroup
	serverWG.Add(1)
	go func() { defer serverWG.Done(); g.echoServer(1024, done, guestErr) }()
	defer func() { close(done); serverWG.Wait() }()

	stalled, sr := hostConnect(t, path, 1024)
	if line, err := sr.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("handshake %q, %v", line, err)
	}
	// Write 4 MiB and never read the echo: the echo fills the host socket
	// buffer, then the device's buffer for the connection.
	var writer sync.WaitGroup
	writer.Go(func() {
		chunk := make([]byte, 64<<10)
		for range 64 {
			if _, err := stalled.Write(chunk); err != nil {
				return // closed at the end of the test
			}
		}
	})
	defer func() { stalled.Close(); writer.Wait() }()
	time.Sleep(200 * time.Millisecond) // let the stalled connection fill up

	for i := range 4 {
		if err := echoStream(path, 200<<10, uint64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-guestErr:
		t.Fatal(err)
	default:
	}
}
