// Package portproxy is the userland proxy of published ports, the part of
// `docker run -p` that docker-proxy plays: for one binding (tcp or udp, a
// host address and port, a container address and port) it listens on the
// host and relays every connection or datagram to the container.
//
// The nftables DNAT rules carry traffic that arrives from other machines;
// the proxy carries what they cannot: connections to 127.0.0.1 (the kernel
// does not route loopback traffic through the bridge), and a container
// reaching itself or a neighbour through a published port (hairpin). It also
// holds the host port, so that a second container, or another program,
// cannot take it while the container lives.
//
// What it does:
//   - listens in the caller's network namespace (the daemon's), on the host
//     address of the binding (0.0.0.0 or :: for all, or one address) and its
//     port, or on a port the kernel picks when the binding asks for 0
//     (HostPort reports it);
//   - relays TCP with splice (io.Copy between two *net.TCPConn), passing
//     half-closes on in both directions, at most Options.MaxConns
//     connections at once, each with a bounded dial;
//   - relays UDP per client address (a flow: one connected socket towards the
//     container), replies going back to the client that sent the request,
//     from the address it sent it to; flows idle for Options.UDPIdleTimeout
//     end, and at most Options.MaxFlows exist at once.
//
// What it does not do: it programs no firewall or NAT rule, allocates no
// port from a range (the kernel picks ephemeral ports), and knows nothing of
// containers: the Manager groups a container's proxies under a key the
// caller chooses. A proxy may start before the container's VM is up:
// connections then fail (refused, or after Options.DialTimeout) and
// datagrams are dropped, never held.
//
// The container side is hostile: it can accept and never read, send without
// end, or open connections until something runs out. Memory and goroutines
// are bounded per proxy: two goroutines and one splice pipe per TCP
// connection, one goroutine per UDP flow, and UDP buffers taken from a
// shared pool only while a datagram is in hand.
package portproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// Binding is one published port.
type Binding struct {
	// Proto is "tcp" or "udp".
	Proto string
	// HostIP is the host address to listen on; the zero Addr is 0.0.0.0,
	// as in `-p 8080:80`. 0.0.0.0 and :: listen on every address of their
	// family.
	HostIP netip.Addr
	// HostPort is the host port; 0 asks the kernel for a free one, which
	// Proxy.HostPort reports once started.
	HostPort uint16
	// Container is the container's address and port.
	Container netip.AddrPort
}

// String is the binding as docker prints it: 0.0.0.0:8080->172.30.0.2:80/tcp.
func (b Binding) String() string {
	return fmt.Sprintf("%s->%s/%s", b.hostAddrPort(), b.Container, b.Proto)
}

func (b Binding) hostAddrPort() netip.AddrPort {
	ip := b.HostIP
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(ip.Unmap(), b.HostPort)
}

func (b Binding) validate() error {
	switch {
	case b.Proto != "tcp" && b.Proto != "udp":
		return errs.New(errdefs.ErrInvalidArgument, "invalid protocol %q for a published port: only tcp and udp are supported", b.Proto)
	case !b.Container.IsValid() || b.Container.Port() == 0 || b.Container.Addr().IsUnspecified():
		return errs.New(errdefs.ErrInvalidArgument, "invalid container address %s for a published port", b.Container)
	case b.HostIP.Zone() != "":
		return errs.New(errdefs.ErrInvalidArgument, "invalid host address %s for a published port: zones are not supported", b.HostIP)
	}
	return nil
}

// network is the socket family to listen in: tcp4/udp4 for IPv4 host
// addresses, tcp6/udp6 (IPV6_V6ONLY) for IPv6 ones, so that :: does not
// also take the port on 0.0.0.0.
func (b Binding) network() string {
	if b.hostAddrPort().Addr().Is4() {
		return b.Proto + "4"
	}
	return b.Proto + "6"
}

// Options bound a proxy's work. The zero value of a field is its default.
type Options struct {
	// DialTimeout bounds a TCP connection to the container (default 10s).
	// Until the VM is up, dials fail with "no route to host" after ARP
	// gives up, or time out here.
	DialTimeout time.Duration
	// MaxConns is the number of TCP connections relayed at once (default
	// 1024); connections past it are reset as soon as they are accepted.
	// Each holds six file descriptors (two sockets, a splice pipe each
	// way) and two goroutines.
	MaxConns int
	// UDPIdleTimeout ends a UDP flow that carried nothing either way for
	// that long (default 90s).
	UDPIdleTimeout time.Duration
	// MaxFlows is the number of UDP flows at once (default 1024);
	// datagrams from new clients past it are dropped.
	MaxFlows int
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.UDPIdleTimeout <= 0 {
		o.UDPIdleTimeout = 90 * time.Second
	}
	if o.MaxFlows <= 0 {
		o.MaxFlows = 1024
	}
	return o
}

// Proxy relays one binding until Stop.
type Proxy struct {
	binding Binding   // with the host port resolved
	tcp     *tcpProxy // one of tcp and udp
	udp     *udpProxy
	once    sync.Once
}

// Start listens for b and relays to its container until Stop. ctx bounds
// only the start: the proxy runs until Stop, whatever becomes of ctx.
//
// A host port that is taken (by a proxy or another program) is an error of
// class errdefs.ErrConflict worded as docker's ("Bind for 0.0.0.0:8080
// failed: port is already allocated"), and nothing is left listening.
func Start(ctx context.Context, b Binding, o Options) (*Proxy, error) {
	if err := b.validate(); err != nil {
		return nil, err
	}
	b.HostIP = b.hostAddrPort().Addr()
	o = o.withDefaults()
	var (
		p   *Proxy
		err error
	)
	if b.Proto == "tcp" {
		p, err = startTCP(ctx, b, o)
	} else {
		p, err = startUDP(ctx, b, o)
	}
	if err != nil {
		return nil, listenError(b, err)
	}
	return p, nil
}

// Binding is the proxy's binding, its host port resolved.
func (p *Proxy) Binding() Binding { return p.binding }

// HostPort is the port the proxy listens on: the binding's, or the one the
// kernel picked for a binding that asked for 0.
func (p *Proxy) HostPort() uint16 { return p.binding.HostPort }

// Stop closes the listening socket and every connection and flow of the
// proxy, and returns once its goroutines have ended. Other proxies are not
// touched. Stop may be called more than once.
func (p *Proxy) Stop() {
	p.once.Do(func() {
		if p.tcp != nil {
			p.tcp.stop()
		} else {
			p.udp.stop()
		}
	})
}

// PortConflictError is the failure to listen on a host port that is taken.
// It is of class errdefs.ErrConflict, and unwraps to the system error.
type PortConflictError struct {
	HostAddr netip.AddrPort
	Err      error
}

func (e *PortConflictError) Error() string {
	return fmt.Sprintf("Bind for %s failed: port is already allocated", e.HostAddr)
}

func (e *PortConflictError) Unwrap() []error { return []error{e.Err, errdefs.ErrConflict} }

func listenError(b Binding, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return &PortConflictError{HostAddr: b.hostAddrPort(), Err: err}
	}
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		return errs.New(errdefs.ErrInvalidArgument, "publish %s: the host has no address %s: %w", b, b.HostIP, err)
	}
	return fmt.Errorf("publish %s: %w", b, err)
}

// listenConfig is the configuration of every listening socket: the
// defaults of package net (SO_REUSEADDR on TCP listeners, so a port in
// TIME_WAIT can be taken again at once, but never a port someone listens on).
var listenConfig net.ListenConfig
