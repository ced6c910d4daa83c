package tests

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"

	"github.com/vishvananda/netns"
)

// Each test daemon runs in a network namespace of its own (newNetns), but
// the servers the tests start for it (registries, a stalled registry) listen
// on 127.0.0.1 of the tests' namespace, the address vmctl treats as this
// machine's own (plain HTTP). The loopback relays make such a port answer at
// the same address inside every daemon's namespace: a listener there, opened
// from a thread moved into it, whose connections are relayed to the port in
// the tests' namespace.
var loopback struct {
	sync.Mutex
	ports     []int
	listeners map[string][]net.Listener // by namespace
}

// shareLoopback makes 127.0.0.1:port of the tests' namespace reachable at
// 127.0.0.1:port in every daemon's namespace, now and later.
func shareLoopback(port int) error {
	loopback.Lock()
	defer loopback.Unlock()
	loopback.ports = append(loopback.ports, port)
	for ns := range loopback.listeners {
		if err := relayLocked(ns, port); err != nil {
			return err
		}
	}
	return nil
}

// shareLoopbackAddr is shareLoopback for a host:port address.
func shareLoopbackAddr(addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return err
	}
	return shareLoopback(port)
}

// relayLoopbackInto starts the relays of every shared port in ns (a
// daemon's namespace, as ip netns names it).
func relayLoopbackInto(ns string) error {
	loopback.Lock()
	defer loopback.Unlock()
	if loopback.listeners == nil {
		loopback.listeners = map[string][]net.Listener{}
	}
	if _, done := loopback.listeners[ns]; done {
		return nil
	}
	loopback.listeners[ns] = nil
	for _, port := range loopback.ports {
		if err := relayLocked(ns, port); err != nil {
			return err
		}
	}
	return nil
}

// closeLoopbackIn ends the relays into ns, before the namespace goes.
func closeLoopbackIn(ns string) {
	loopback.Lock()
	defer loopback.Unlock()
	for _, l := range loopback.listeners[ns] {
		l.Close()
	}
	delete(loopback.listeners, ns)
}

// Precondition: loopback is locked.
func relayLocked(ns string, port int) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var l net.Listener
	if err := inNetns(ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("relay %s into %s: %w", addr, ns, err)
	}
	loopback.listeners[ns] = append(loopback.listeners[ns], l)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go relayConn(c, addr)
		}
	}()
	return nil
}

// relayConn joins c to a new connection to addr in the tests' namespace,
// each direction's end passed on as a half-close.
func relayConn(c net.Conn, addr string) {
	defer c.Close()
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// inNetns runs fn on a thread in the named namespace: sockets it opens
// stay there. The thread is put back afterwards, or retired if it cannot
// be.
func inNetns(ns string, fn func() error) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("returning to the tests' namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
