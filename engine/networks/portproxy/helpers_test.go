package portproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/networks/netnstest"
)

// TestMain runs the tests in a network namespace of their own, where port
// 53 of any 127.0.0.x is free and listeners expose nothing of the machine.
func TestMain(m *testing.M) { netnstest.Main(m) }

// checkGoroutines fails t at its end if goroutines started during the test
// are still running a moment after cleanup.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

var loopback = netip.MustParseAddr("127.0.0.1")

// tcpServer listens on 127.0.0.1 and runs handle for each connection,
// until the test ends, when it closes every connection it accepted.
func tcpServer(t *testing.T, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []*net.TCPConn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func echo(c *net.TCPConn) {
	defer c.Close()
	io.Copy(c, c)
}

// startProxy starts a proxy for b, stopped when the test ends.
func startProxy(t *testing.T, b Binding, o Options) *Proxy {
	t.Helper()
	p, err := Start(context.Background(), b, o)
	if err != nil {
		t.Fatalf("Start(%v) = %v", b, err)
	}
	t.Cleanup(p.Stop)
	return p
}

func proxyAddr(p *Proxy) string {
	return netip.AddrPortFrom(p.Binding().HostIP, p.HostPort()).String()
}

// closedPort returns a port of 127.0.0.1 that nothing listens on (for TCP
// and UDP both, as far as one can tell).
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

// isResetOrEOF: what a client sees of a connection the proxy gave up.
func isResetOrEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "connection reset")
}
