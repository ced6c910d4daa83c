package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	agent "github.com/vmctl/vmctl/api/agent/v1"
)

// socketPair returns the guest end as a pollable *os.File and the host end
// as a net.Conn: a stand-in for a virtio-serial port and QEMU's chardev.
func socketPair(t *testing.T) (*os.File, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(fds[0]), "guest")
	hostFile := os.NewFile(uintptr(fds[1]), "host")
	host, err := net.FileConn(hostFile)
	hostFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guest.Close(); host.Close() })
	return guest, host
}

func TestFindSerialPort(t *testing.T) {
	sys := t.TempDir()
	for port, name := range map[string]string{"vport0p0": "", "vport1p1": "vmctl.agent\n", "vport1p2": "other"} {
		if err := os.MkdirAll(filepath.Join(sys, port), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, port, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		want    string
		wantErr bool
	}{
		{"vmctl.agent", "/dev/vport1p1", false},
		{"other", "/dev/vport1p2", false},
		{"missing", "", true},
	}
	for _, tt := range tests {
		got, err := FindSerialPort(sys, "/dev", tt.name)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("FindSerialPort(%q) = %q, %v; want %q, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
	if _, err := FindSerialPort(filepath.Join(sys, "nope"), "/dev", "x"); err == nil {
		t.Error("FindSerialPort on a missing sysfs dir: got nil error")
	}
}

func TestHostConnected(t *testing.T) {
	guest, host := socketPair(t)
	if ok, err := hostConnected(guest); !ok || err != nil {
		t.Errorf("hostConnected with the peer open = %v, %v; want true", ok, err)
	}
	host.Close()
	if ok, err := hostConnected(guest); ok || err != nil {
		t.Errorf("hostConnected after the peer closed = %v, %v; want false", ok, err)
	}
}

// TestSerialListenerReconnect walks the listener through: host absent (Accept
// waits without spinning), host arrives, host leaves (EOF), host returns.
func TestSerialListenerReconnect(t *testing.T) {
	var connected atomic.Bool
	var checks atomic.Int32
	files := make(chan *os.File, 2)
	hosts := make([]net.Conn, 2)
	for i := range hosts {
		var g *os.File
		g, hosts[i] = socketPair(t)
		files <- g
	}
	wake := make(chan os.Signal, 1)
	l := newSerialListener("test", func() (*os.File, error) {
		select {
		case f := <-files:
			return f, nil
		default:
			return nil, errors.New("no more ports")
		}
	}, func(*os.File) (bool, error) {
		checks.Add(1)
		return connected.Load(), nil
	}, wake, 50*time.Millisecond)
	defer l.Close()

	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()

	// Host absent: nothing is accepted, and the state is checked about once
	// per retry interval, not in a loop.
	select {
	case <-accepted:
		t.Fatal("Accept returned while the host was disconnected")
	case <-time.After(300 * time.Millisecond):
	}
	if n := checks.Load(); n < 2 || n > 12 {
		t.Errorf("host state checked %d times in 300ms with a 50ms retry; want 2..12", n)
	}

	connected.Store(true)
	wake <- unix.SIGIO
	c1 := recvConn(t, accepted)
	echo(t, c1, hosts[0])

	// The host disconnects: the guest reads EOF; until the conn is closed
	// no second conn is handed out.
	hosts[0].Close()
	if _, err := c1.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read after host disconnect = %v, want EOF", err)
	}
	select {
	case <-accepted:
		t.Fatal("second conn handed out while the first is still open")
	case <-time.After(100 * time.Millisecond):
	}
	c1.Close()
	c2 := recvConn(t, accepted)
	echo(t, c2, hosts[1])

	l.Close()
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Error("Write on a conn of a closed listener succeeded")
	}
	select {
	case _, ok := <-accepted:
		if ok {
			t.Error("Accept returned a conn after Close")
		}
	case <-time.After(5 * time.Second):
		t.Error("Accept did not return after Close")
	}
}

func recvConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("listener stopped")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no conn accepted within 5s")
		return nil
	}
}

func echo(t *testing.T, guest, host net.Conn) {
	t.Helper()
	if _, err := host.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(guest, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("guest read %q, %v; want ping", buf, err)
	}
	if _, err := guest.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("host read %q, %v; want pong", buf, err)
	}
}

// healthOnly answers Health; the other methods are never called here.
type healthOnly struct{ agent.TTRPCAgentService }

func (healthOnly) Health(context.Context, *agent.HealthRequest) (*agent.HealthResponse, error) {
	return &agent.HealthResponse{Transport: "virtio-serial"}, nil
}

// TestSerialListenerServesTTRPC checks that a ttrpc server keeps serving a
// serial listener across a host reconnect.
func TestSerialListenerServesTTRPC(t *testing.T) {
	files := make(chan *os.File, 2)
	hosts := make([]net.Conn, 2)
	for i := range hosts {
		var g *os.File
		g, hosts[i] = socketPair(t)
		files <- g
	}
	l := newSerialListener("test", func() (*os.File, error) {
		select {
		case f := <-files:
			return f, nil
		default:
			return nil, errors.New("no more ports")
		}
	}, hostConnected, make(chan os.Signal), 50*time.Millisecond)

	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agent.RegisterTTRPCAgentService(srv, healthOnly{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()
	defer func() {
		srv.Close()
		<-served
	}()

	for i, h := range hosts {
		client := ttrpc.NewClient(h)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := agent.NewTTRPCAgentClient(client).Health(ctx, &agent.HealthRequest{})
		cancel()
		if err != nil || resp.Transport != "virtio-serial" {
			t.Fatalf("connection %d: Health = %v, %v", i, resp, err)
		}
		client.Close()
	}
}
