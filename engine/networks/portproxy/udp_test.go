package portproxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/networks/netnstest"
)

// udpServer answers each datagram on 127.0.0.1 (or at addr, if valid) with
// reply(datagram), until the test ends.
func udpServer(t *testing.T, addr netip.AddrPort, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	if !addr.IsValid() {
		addr = netip.AddrPortFrom(loopback, 0)
	}
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if r := reply(buf[:n]); r != nil {
				c.WriteToUDPAddrPort(r, from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func udpEcho(b []byte) []byte { return append([]byte("echo "), b...) }

// udpClient is a socket connected to the proxy: it takes datagrams from
// the proxy's address only.
func udpClient(t *testing.T, to string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp4", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// exchange sends msg on c and returns the first datagram back, or an error
// after wait.
func exchange(c *net.UDPConn, msg []byte, wait time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	return buf[:n], err
}

func (p *Proxy) flowCount() int {
	p.udp.mu.Lock()
	defer p.udp.mu.Unlock()
	return len(p.udp.flows)
}

func TestUDPRelay(t *testing.T) {
	checkGoroutines(t)
	container := udpServer(t, netip.AddrPort{}, udpEcho)
	p := startProxy(t, Binding{Proto: "udp", HostIP: loopback, Container: container}, Options{})
	a, b := udpClient(t, proxyAddr(p)), udpClient(t, proxyAddr(p))
	big := bytes.Repeat([]byte("x"), 60000)
	for i, tt := range []struct {
		c   *net.UDPConn
		msg []byte
	}{{a, []byte("from a")}, {b, []byte("from b")}, {a, []byte("a again")}, {b, big}} {
		got, err := exchange(tt.c, tt.msg, 2*time.Second)
		if want := udpEcho(tt.msg); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("exchange %d: %d bytes %.20q, %v; want %.20q", i, len(got), got, err, want)
		}
	}
	if n := p.flowCount(); n != 2 {
		t.Errorf("%d flows for 2 clients", n)
	}
}

// TestUDPRepliesToTheirClient: the container's replies on one flow go to
// that flow's client only, however many come.
func TestUDPRepliesToTheirClient(t *testing.T) {
	checkGoroutines(t)
	container := udpServer(t, netip.AddrPort{}, func(b []byte) []byte { return b })
	p := startProxy(t, Binding{Proto: "udp", HostIP: loopback, Container: container}, Options{})
	clients := make([]*net.UDPConn, 8)
	for i := range clients {
		clients[i] = udpClient(t, proxyAddr(p))
	}
	for round := range 3 {
		for i, c := range clients {
			c.Write([]byte{byte(i), byte(round)})
		}
		for i, c := range clients {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 16)
			n, err := c.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], []byte{byte(i), byte(round)}) {
				t.Fatalf("client %d round %d: %v %v", i, round, buf[:n], err)
			}
		}
	}
}

func TestUDPIdleFlowsEnd(t *testing.T) {
	checkGoroutines(t)
	container := udpServer(t, netip.AddrPort{}, udpEcho)
	p := startProxy(t, Binding{Proto: "udp", HostIP: loopback, Container: container}, Options{UDPIdleTimeout: 200 * time.Millisecond})
	c := udpClient(t, proxyAddr(p))
	// Traffic keeps a flow: five exchanges 100ms apart outlive the timeout.
	for range 5 {
		if _, err := exchange(c, []byte("ping"), time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if p.flowCount() != 1 {
			t.Fatal("a busy flow ended")
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for p.flowCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle flow is still there")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := exchange(c, []byte("back"), time.Second); err != nil {
		t.Fatalf("after the flow ended: %v", err)
	}
}

func TestUDPMaxFlows(t *testing.T) {
	checkGoroutines(t)
	container := udpServer(t, netip.AddrPort{}, udpEcho)
	p := startProxy(t, Binding{Proto: "udp", HostIP: loopback, Container: container}, Options{MaxFlows: 2, UDPIdleTimeout: 300 * time.Millisecond})
	a, b, c := udpClient(t, proxyAddr(p)), udpClient(t, proxyAddr(p)), udpClient(t, proxyAddr(p))
	for _, cl := range []*net.UDPConn{a, b} {
		if _, err := exchange(cl, []byte("in"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := exchange(c, []byte("third"), 100*time.Millisecond); err == nil {
		t.Fatalf("a third flow was relayed: %q", got)
	}
	if p.flowCount() != 2 {
		t.Fatalf("%d flows, want 2", p.flowCount())
	}
	// Once the first two are idle, there is room again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := exchange(c, []byte("third"), 100*time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no room after the flows went idle")
		}
	}
}

// TestUDPContainerLate: datagrams before the container listens are lost
// (the port-unreachable errors do not end the flow), and the same client
// is answered once it listens.
func TestUDPContainerLate(t *testing.T) {
	checkGoroutines(t)
	container := closedPort(t)
	p := startProxy(t, Binding{Proto: "udp", HostIP: loopback, Container: container}, Options{})
	c := udpClient(t, proxyAddr(p))
	for range 3 {
		if got, err := exchange(c, []byte("early"), 50*time.Millisecond); err == nil {
			t.Fatalf("answered with nothing listening: %q", got)
		}
	}
	udpServer(t, container, udpEcho)
	if got, err := exchange(c, []byte("late"), 2*time.Second); err != nil || string(got) != "echo late" {
		t.Fatalf("exchange = %q, %v", got, err)
	}
	if p.flowCount() != 1 {
		t.Errorf("%d flows, want the one", p.flowCount())
	}
}

func TestUDPStop(t *testing.T) {
	checkGoroutines(t)
	container := udpServer(t, netip.AddrPort{}, udpEcho)
	p, err := Start(t.Context(), Binding{Proto: "udp", HostIP: loopback, Container: container}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := exchange(udpClient(t, proxyAddr(p)), []byte("x"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	if _, err := exchange(udpClient(t, proxyAddr(p)), []byte("x"), 100*time.Millisecond); err == nil {
		t.Fatal("answered after Stop")
	}
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, p.HostPort())))
	if err != nil {
		t.Fatalf("the port is still taken after Stop: %v", err)
	}
	c.Close()
}

// TestUDPReplySource: a proxy on 0.0.0.0 answers each client from the
// address the client wrote to (127.0.0.2 here, on a host whose route back
// to the client would pick 127.0.0.1); a connected client socket drops
// anything else.
func TestUDPReplySource(t *testing.T) {
	netnstest.Require(t)
	checkGoroutines(t)
	container := udpServer(t, netip.AddrPort{}, udpEcho)
	p := startProxy(t, Binding{Proto: "udp", Container: container}, Options{})
	for _, to := range []string{"127.0.0.2", "127.0.0.1", "127.1.2.3"} {
		c := udpClient(t, netip.AddrPortFrom(netip.MustParseAddr(to), p.HostPort()).String())
		if got, err := exchange(c, []byte(to), 2*time.Second); err != nil || string(got) != "echo "+to {
			t.Errorf("to %s: %q, %v", to, got, err)
		}
	}
	// The same over IPv6 (IPV6_PKTINFO), where lo has ::1.
	p6, err := Start(t.Context(), Binding{Proto: "udp", HostIP: netip.IPv6Unspecified(), Container: container}, Options{})
	if err != nil {
		t.Skipf("no IPv6 on lo: %v", err)
	}
	defer p6.Stop()
	c, err := net.Dial("udp6", netip.AddrPortFrom(netip.IPv6Loopback(), p6.HostPort()).String())
	if err != nil {
		t.Skipf("no IPv6 on lo: %v", err)
	}
	defer c.Close()
	if got, err := exchange(c.(*net.UDPConn), []byte("v6"), 2*time.Second); err != nil || string(got) != "echo v6" {
		t.Errorf("to ::1: %q, %v", got, err)
	}
}
