package portproxy

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/containerd/errdefs"
)

func portFree(t *testing.T, b Binding) bool {
	t.Helper()
	addr := netip.AddrPortFrom(b.HostIP, b.HostPort).String()
	if b.Proto == "udp" {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func TestManager(t *testing.T) {
	checkGoroutines(t)
	ctx := context.Background()
	container := tcpServer(t, echo)
	m := NewManager(Options{})
	t.Cleanup(m.Close)

	web := []Binding{
		{Proto: "tcp", HostIP: loopback, Container: container},
		{Proto: "udp", HostIP: loopback, Container: container},
	}
	got, err := m.Publish(ctx, "web", web)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].HostPort == 0 || got[1].HostPort == 0 || got[0].Container != container {
		t.Fatalf("Publish = %v", got)
	}
	for _, b := range got {
		if portFree(t, b) {
			t.Errorf("%v: the port is free while published", b)
		}
	}

	// One binding of db's conflicts with web's: none of db's stays.
	db := []Binding{
		{Proto: "tcp", HostIP: loopback, Container: container},
		{Proto: "tcp", HostIP: loopback, HostPort: got[0].HostPort, Container: container},
	}
	if _, err := m.Publish(ctx, "db", db); !errdefs.IsConflict(err) {
		t.Fatalf("Publish(db) = %v, want a conflict", err)
	}
	if bs := m.Published("db"); len(bs) != 0 {
		t.Errorf("Published(db) = %v after a failed Publish", bs)
	}
	if c, err := net.Dial("tcp", proxyAddr(mustOne(t, m, "web"))); err != nil {
		t.Errorf("web after db's failure: %v", err)
	} else {
		c.Close()
	}

	// Publishing again replaces: the same fixed ports can be taken again.
	again, err := m.Publish(ctx, "web", got)
	if err != nil || len(again) != 2 || again[0] != got[0] || again[1] != got[1] {
		t.Fatalf("Publish again = %v, %v; want %v", again, err, got)
	}

	m.Unpublish("web")
	m.Unpublish("nobody")
	for _, b := range got {
		if !portFree(t, b) {
			t.Errorf("%v: still taken after Unpublish", b)
		}
	}
	if bs := m.Published("web"); len(bs) != 0 {
		t.Errorf("Published(web) = %v after Unpublish", bs)
	}
}

func mustOne(t *testing.T, m *Manager, owner string) *Proxy {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.proxies[owner]) == 0 {
		t.Fatalf("%s has no proxy", owner)
	}
	return m.proxies[owner][0]
}
