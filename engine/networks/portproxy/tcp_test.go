package portproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmctl/vmctl/engine/networks/netnstest"
	"golang.org/x/sys/unix"
)

func dialProxy(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr(p), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// TestTCPRelay runs conversations through the proxy: each side's script
// against a container-side handler.
func TestTCPRelay(t *testing.T) {
	big := make([]byte, 8<<20)
	rand.Read(big)
	tests := []struct {
		name      string
		container func(*net.TCPConn)
		client    func(t *testing.T, c *net.TCPConn)
	}{{
		name:      "echo",
		container: echo,
		client: func(t *testing.T, c *net.TCPConn) {
			for _, msg := range []string{"hello", "world", "again"} {
				c.Write([]byte(msg))
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
					t.Fatalf("read = %q, %v, want %q", got, err, msg)
				}
			}
		},
	}, {
		// The client's half-close reaches the container, which answers
		// after it: an HTTP/1.0 request, or `nc -N`.
		name: "client half-closes",
		container: func(c *net.TCPConn) {
			defer c.Close()
			req, _ := io.ReadAll(c)
			c.Write(append([]byte("got "), req...))
		},
		client: func(t *testing.T, c *net.TCPConn) {
			c.Write([]byte("request"))
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "got request" {
				t.Fatalf("ReadAll = %q, %v", got, err)
			}
		},
	}, {
		// The container's half-close reaches the client, which may still
		// send, and the container still reads.
		name: "container half-closes",
		container: func(c *net.TCPConn) {
			defer c.Close()
			c.Write([]byte("banner"))
			c.CloseWrite()
			rest, _ := io.ReadAll(c)
			if string(rest) != "after" {
				c.SetLinger(0) // the client sees a reset, not an EOF
			}
		},
		client: func(t *testing.T, c *net.TCPConn) {
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "banner" {
				t.Fatalf("ReadAll = %q, %v", got, err)
			}
			if _, err := c.Write([]byte("after")); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
		},
	}, {
		name:      "8 MiB each way at once",
		container: echo,
		client: func(t *testing.T, c *net.TCPConn) {
			go func() {
				c.Write(big)
				c.CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("ReadAll: %d bytes, %v; want the %d sent back", len(got), err, len(big))
			}
		},
	}, {
		// A reset on the container's side reaches the client as a reset.
		name: "container resets",
		container: func(c *net.TCPConn) {
			c.Read(make([]byte, 1))
			c.SetLinger(0)
			c.Close()
		},
		client: func(t *testing.T, c *net.TCPConn) {
			c.Write([]byte("x"))
			_, err := c.Read(make([]byte, 1))
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Read = %v, want a reset", err)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			container := tcpServer(t, tt.container)
			p := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{})
			tt.client(t, dialProxy(t, p))
		})
	}
}

// TestTCPContainerUnreachable: a proxy started before its container is up
// gives every client a prompt end, never a connection that hangs.
func TestTCPContainerUnreachable(t *testing.T) {
	tests := []struct {
		name      string
		container func(t *testing.T) netip.AddrPort
	}{
		{"nothing listens", closedPort},
		// SYNs to a listener whose accept queue is full are dropped: the
		// dial hangs, as to a VM that is not up, until DialTimeout.
		{"dial times out", fullListener},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			p := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: tt.container(t)}, Options{DialTimeout: 300 * time.Millisecond})
			start := time.Now()
			// The reset can come before the client's connect returns.
			c, err := net.DialTimeout("tcp", proxyAddr(p), 2*time.Second)
			if err == nil {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Read(make([]byte, 1))
			}
			if err == nil || !isResetOrEOF(err) {
				t.Fatalf("dial and read = %v, want a reset", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the client waited %v", d)
			}
		})
	}
}

// fullListener returns the address of a listener with a backlog of one
// that is full and never accepts.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(loopback, uint16(sa.(*unix.SockaddrInet4).Port))
	// A backlog of 0 holds one connection; the next ones are dropped.
	for range 2 {
		c, err := net.DialTimeout("tcp", ap.String(), 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return ap
}

func TestTCPMaxConns(t *testing.T) {
	checkGoroutines(t)
	container := tcpServer(t, echo)
	p := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{MaxConns: 2})
	roundTrip := func(c *net.TCPConn) error {
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := c.Read(make([]byte, 1))
		return err
	}
	a, b := dialProxy(t, p), dialProxy(t, p)
	for _, c := range []*net.TCPConn{a, b} {
		if err := roundTrip(c); err != nil {
			t.Fatalf("within the limit: %v", err)
		}
	}
	// A new connection: the reset past the limit can come before the
	// client's connect returns.
	dialRoundTrip := func() error {
		c, err := net.DialTimeout("tcp", proxyAddr(p), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return roundTrip(c.(*net.TCPConn))
	}
	if err := dialRoundTrip(); err == nil || !isResetOrEOF(err) {
		t.Fatalf("past the limit: %v, want a reset", err)
	}
	a.Close()
	// The slot comes back once the proxy has seen the close.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := dialRoundTrip()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTCPStop: Stop ends every connection, even one whose container never
// reads while the client keeps sending, and frees the port.
func TestTCPStop(t *testing.T) {
	checkGoroutines(t)
	blocked := make(chan struct{})
	container := tcpServer(t, func(c *net.TCPConn) { <-blocked })
	defer close(blocked)
	p, err := Start(context.Background(), Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := dialProxy(t, p)
	writerDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Write(buf); err != nil {
				writerDone <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the buffers on the way fill up
	stopped := make(chan struct{})
	go func() {
		p.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	select {
	case err := <-writerDone:
		if err == nil {
			t.Fatal("write succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the client's writes still block after Stop")
	}
	p.Stop() // twice is fine
	ln, err := net.Listen("tcp4", proxyAddr(p))
	if err != nil {
		t.Fatalf("the port is still taken after Stop: %v", err)
	}
	ln.Close()
}

// TestStopOneBinding: stopping a proxy leaves the others running.
func TestStopOneBinding(t *testing.T) {
	checkGoroutines(t)
	container := tcpServer(t, echo)
	p1 := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{})
	p2 := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{})
	c2 := dialProxy(t, p2)
	p1.Stop()
	if _, err := net.DialTimeout("tcp", proxyAddr(p1), time.Second); err == nil {
		t.Error("the stopped proxy still accepts")
	}
	c2.Write([]byte("ok"))
	if _, err := io.ReadFull(c2, make([]byte, 2)); err != nil {
		t.Errorf("the other proxy's connection: %v", err)
	}
	if _, err := net.DialTimeout("tcp", proxyAddr(p2), time.Second); err != nil {
		t.Errorf("the other proxy: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	container := netip.MustParseAddrPort("127.0.0.1:80")
	taken, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := uint16(taken.Addr().(*net.TCPAddr).Port)
	takenUDP, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer takenUDP.Close()
	takenUDPPort := uint16(takenUDP.LocalAddr().(*net.UDPAddr).Port)

	tests := []struct {
		name    string
		b       Binding
		class   error
		message string
	}{
		{"tcp port taken", Binding{Proto: "tcp", HostIP: loopback, HostPort: takenPort, Container: container},
			errdefs.ErrConflict, "Bind for 127.0.0.1:" + itoa(takenPort) + " failed: port is already allocated"},
		{"udp port taken", Binding{Proto: "udp", HostIP: loopback, HostPort: takenUDPPort, Container: container},
			errdefs.ErrConflict, "Bind for 127.0.0.1:" + itoa(takenUDPPort) + " failed: port is already allocated"},
		{"sctp", Binding{Proto: "sctp", HostIP: loopback, Container: container}, errdefs.ErrInvalidArgument, ""},
		{"no container address", Binding{Proto: "tcp", HostIP: loopback}, errdefs.ErrInvalidArgument, ""},
		{"container port 0", Binding{Proto: "tcp", HostIP: loopback, Container: netip.MustParseAddrPort("127.0.0.1:0")}, errdefs.ErrInvalidArgument, ""},
		{"container address 0.0.0.0", Binding{Proto: "tcp", HostIP: loopback, Container: netip.MustParseAddrPort("0.0.0.0:80")}, errdefs.ErrInvalidArgument, ""},
		// 192.0.2.0/24 is TEST-NET-1: no host has it.
		{"host address not ours", Binding{Proto: "tcp", HostIP: netip.MustParseAddr("192.0.2.1"), Container: container}, errdefs.ErrInvalidArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Start(context.Background(), tt.b, Options{})
			if err == nil {
				p.Stop()
				t.Fatalf("Start(%v) succeeded", tt.b)
			}
			if !errors.Is(err, tt.class) {
				t.Errorf("Start(%v) = %v, want class %v", tt.b, err, tt.class)
			}
			if tt.message != "" && err.Error() != tt.message {
				t.Errorf("Start(%v) = %q, want %q", tt.b, err, tt.message)
			}
		})
	}
}

// TestConflictAcrossAddresses: 0.0.0.0:P conflicts with 127.0.0.1:P and
// back, and tcp and udp are separate; 0.0.0.0 needs a namespace of its own.
func TestConflictAcrossAddresses(t *testing.T) {
	netnstest.Require(t)
	container := netip.MustParseAddrPort("127.0.0.1:80")
	everywhere := netip.IPv4Unspecified()
	all := startProxy(t, Binding{Proto: "tcp", HostIP: everywhere, Container: container}, Options{})
	port := all.HostPort()
	_, err := Start(context.Background(), Binding{Proto: "tcp", HostIP: loopback, HostPort: port, Container: container}, Options{})
	var conflict *PortConflictError
	if !errors.As(err, &conflict) || !errdefs.IsConflict(err) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("127.0.0.1 after 0.0.0.0: %v, want a conflict", err)
	}
	startProxy(t, Binding{Proto: "udp", HostIP: everywhere, HostPort: port, Container: container}, Options{})
	one := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{})
	_, err = Start(context.Background(), Binding{Proto: "tcp", HostPort: one.HostPort(), Container: container}, Options{})
	if want := "Bind for 0.0.0.0:" + itoa(one.HostPort()) + " failed: port is already allocated"; err == nil || err.Error() != want {
		t.Fatalf("0.0.0.0 after 127.0.0.1: %v, want %q", err, want)
	}
}

func itoa(port uint16) string { return strconv.Itoa(int(port)) }

// TestTCPManyClients runs clients side by side, each with its own data.
func TestTCPManyClients(t *testing.T) {
	checkGoroutines(t)
	container := tcpServer(t, echo)
	p := startProxy(t, Binding{Proto: "tcp", HostIP: loopback, Container: container}, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", proxyAddr(p), 2*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := bytes.Repeat([]byte{byte(i)}, 64<<10)
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				errs <- errors.New("client got another's data, or too little")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
