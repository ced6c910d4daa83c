// Package dnsserver is the DNS server of one network, what dockerd's
// embedded DNS server is to a user-defined network: containers on the
// network resolve each other by name, and everything else through the
// host's resolvers.
//
// Docker answers on 127.0.0.11 inside each container's network namespace;
// a container's namespace here is inside its VM, out of the daemon's reach,
// so the server listens on the network's gateway address (UDP and TCP, port
// 53), which the container's resolv.conf names.
//
// What it answers itself, for the names Config.Lookup knows (container
// names, aliases, short IDs, as the caller decides):
//   - A: the name's IPv4 addresses, in random order (round robin);
//   - AAAA and any other type: the name's IPv6 addresses for AAAA, else an
//     empty answer (NOERROR), so that a resolver asking for both does not
//     wait on the host's resolvers for a name that is the network's;
//   - PTR of an address Config.Reverse names.
//
// Everything else is forwarded, as the container sent it (new ID), to the
// nameservers of the host's resolv.conf (Config.ResolvConf, read again when
// it changes). The daemon runs on the host, so resolvers on 127.0.0.0/8 or
// ::1, such as systemd-resolved's 127.0.0.53, work: that is the point of
// forwarding through the daemon rather than copying the host's resolv.conf
// into the container (moby#6388). A forwarder never forwards to its own
// address.
//
// What it does not do: cache, validate DNSSEC, serve zone transfers or
// updates (NOTIMP), or know which network a name belongs to: one server
// serves one network, and its Lookup answers for that network only.
//
// Queries are hostile input: a query is parsed once, anything that does not
// parse is answered FORMERR (or not at all if it is not even a query
// header), responses are never answered, and the work in flight is bounded
// (Config.MaxInFlight queries, Config.MaxTCPConns connections).
package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/errs"
)

// Config is one network's DNS server.
type Config struct {
	// Addr is the address to listen on, UDP and TCP: the network's
	// gateway. Port 0 is 53.
	Addr netip.AddrPort
	// Lookup returns the addresses of a name of the network, given in
	// lower case without the final dot ("web", "db.backend"); nil for a
	// name the network does not know, which is then forwarded. It is
	// called concurrently, and on the path of every query: it must answer
	// from memory, without waiting on locks held for long.
	Lookup func(name string) []netip.Addr
	// Reverse returns the names (as Lookup takes them) of an address of
	// the network, for PTR queries; nil forwards the query. Optional; it
	// is called concurrently.
	Reverse func(addr netip.Addr) []string
	// Upstreams, if set, returns the nameservers a client's queries go to
	// instead of the host's (a container's --dns, which docker's embedded
	// DNS server forwards to); nil or empty means the host's. Called
	// concurrently, from memory.
	Upstreams func(client netip.Addr) []netip.AddrPort
	// ResolvConf is the path of the host's resolv.conf (default
	// /etc/resolv.conf), whose nameservers get what the network does not
	// answer. A missing file, or one without nameservers, means
	// 127.0.0.1, as for the host's own resolver.
	ResolvConf string
	// Clients, if valid, is the prefix queries are answered from (the
	// network's subnet): others are REFUSED, so that the gateway address
	// is no open resolver for whoever can route to it.
	Clients netip.Prefix

	// TTL of the network's own answers (default 600s, as docker's).
	TTL time.Duration
	// UpstreamTimeout bounds one try of one upstream nameserver (default
	// 2s); a forwarded query tries each in turn, within ForwardTimeout
	// (default 4s, under the 5s a client's resolver waits by default), and
	// is answered SERVFAIL after that.
	UpstreamTimeout, ForwardTimeout time.Duration
	// MaxInFlight queries are forwarded at once (default 256): UDP
	// queries past it are dropped (the client asks again), TCP ones wait.
	// The network's own names are answered whatever the load.
	MaxInFlight int
	// MaxTCPConns connections at once (default 64), each closed after
	// TCPIdleTimeout without a query (default 10s).
	MaxTCPConns    int
	TCPIdleTimeout time.Duration
	// ReusePort lets other servers of the same user bind the same address
	// (SO_REUSEPORT; the kernel spreads queries among them): engines that
	// share a data root in several processes each serve the network's
	// names. A server of another program, which sets no SO_REUSEPORT,
	// still makes the address taken.
	ReusePort bool
}

func (c Config) withDefaults() Config {
	port := c.Addr.Port()
	if port == 0 {
		port = 53
	}
	c.Addr = netip.AddrPortFrom(c.Addr.Addr().Unmap(), port)
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.TTL <= 0 {
		c.TTL = 600 * time.Second
	}
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 2 * time.Second
	}
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = 4 * time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.MaxTCPConns <= 0 {
		c.MaxTCPConns = 64
	}
	if c.TCPIdleTimeout <= 0 {
		c.TCPIdleTimeout = 10 * time.Second
	}
	return c
}

// Server is a running DNS server.
type Server struct {
	cfg       Config
	upstreams *upstreams
	// forward answers what the network does not know; the upstream
	// forwarder, or a stand-in in tests.
	forward func(ctx context.Context, req *dns.Msg, client netip.AddrPort, proto string) *dns.Msg

	udp      *net.UDPConn
	udpRaw   syscall.RawConn
	tcp      *net.TCPListener
	inFlight chan struct{} // one token per query being forwarded
	tcpSlots chan struct{} // one token per open TCP connection
	ctx      context.Context
	cancel   context.CancelFunc // ends the forwards under way
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu; nil once stopped
}

// Start listens on cfg.Addr, UDP and TCP, and serves until Stop. ctx bounds
// only the start.
//
// Preconditions: cfg.Addr is an address of the host (the gateway address is
// on the bridge).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if !cfg.Addr.Addr().IsValid() || cfg.Addr.Addr().IsUnspecified() {
		return nil, errs.New(errdefs.ErrInvalidArgument, "DNS server: invalid listen address %s: want the network's gateway address", cfg.Addr)
	}
	if cfg.Lookup == nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "DNS server: no lookup function")
	}
	cfg = cfg.withDefaults()
	s := newServer(cfg)
	var lc net.ListenConfig
	if cfg.ReusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	pc, err := lc.ListenPacket(ctx, "udp", cfg.Addr.String())
	if err != nil {
		s.cancel()
		return nil, listenError(cfg.Addr, err)
	}
	s.udp = pc.(*net.UDPConn)
	if s.udpRaw, err = s.udp.SyscallConn(); err != nil {
		s.cancel()
		s.udp.Close()
		return nil, err
	}
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr.String())
	if err != nil {
		s.cancel()
		s.udp.Close()
		return nil, listenError(cfg.Addr, err)
	}
	s.tcp = ln.(*net.TCPListener)
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

func newServer(cfg Config) *Server {
	s := &Server{
		cfg:       cfg,
		upstreams: newUpstreams(cfg.ResolvConf, cfg.Addr),
		inFlight:  make(chan struct{}, cfg.MaxInFlight),
		tcpSlots:  make(chan struct{}, cfg.MaxTCPConns),
		conns:     make(map[net.Conn]struct{}),
	}
	s.forward = s.forwardUpstream
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

func listenError(addr netip.AddrPort, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return errs.New(errdefs.ErrConflict, "DNS server: %s is taken (another DNS server on the host listening on all addresses?): %w", addr, err)
	}
	return fmt.Errorf("DNS server on %s: %w", addr, err)
}

// Addr is the address the server listens on.
func (s *Server) Addr() netip.AddrPort { return s.cfg.Addr }

// Stop closes the sockets and every TCP connection, ends the forwards under
// way, and returns once the server's goroutines have ended. Stop may be
// called more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		s.udp.Close()
		s.tcp.Close()
		s.mu.Lock()
		conns := s.conns
		s.conns = nil
		s.mu.Unlock()
		for c := range conns {
			c.Close()
		}
		s.wg.Wait()
	})
}

// maxUDPQuery is the largest UDP query read whole; a longer datagram is
// cut there, fails to parse, and is answered FORMERR.
const maxUDPQuery = 4096

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, maxUDPQuery)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// The network's names are answered here, at once: a container
		// flooding the server with names to forward fills the forwarding
		// slots, not the way to the others' names.
		reply, fwd := s.respond(buf[:n], from, "udp")
		if reply != nil {
			s.sendUDP(reply, from)
		}
		if fwd == nil {
			continue
		}
		select {
		case s.inFlight <- struct{}{}:
		default:
			continue // busy: dropped, the client asks again
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.inFlight }()
			if reply := s.respondForwarded(s.ctx, fwd, from, "udp"); reply != nil {
				s.sendUDP(reply, from)
			}
		}()
	}
}

// sendUDP sends a reply, or drops it if the socket's buffer is full: the
// client asks again, and the read loop never waits on a client.
func (s *Server) sendUDP(b []byte, to netip.AddrPort) {
	var sa unix.Sockaddr
	if to.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16()}
	}
	s.udpRaw.Write(func(fd uintptr) bool {
		unix.Sendto(int(fd), b, unix.MSG_DONTWAIT, sa)
		return true
	})
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, or a connection reset before it was
			// accepted: wait a little rather than spin.
			select {
			case <-time.After(10 * time.Millisecond):
				continue
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// serveConn answers the queries of one TCP connection in turn (RFC 7766:
// two-byte length, then the message), until the client closes it, sends
// garbage, or is idle for TCPIdleTimeout.
func (s *Server) serveConn(c *net.TCPConn) {
	defer s.wg.Done()
	defer func() { <-s.tcpSlots }()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	from := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	buf := make([]byte, 2+dns.MaxMsgSize)
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf[:2]))
		if n < headerLen {
			return
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		reply, fwd := s.respond(buf[:n], from, "tcp")
		if fwd != nil {
			select {
			case s.inFlight <- struct{}{}:
			case <-s.ctx.Done():
				return
			}
			reply = s.respondForwarded(s.ctx, fwd, from, "tcp")
			<-s.inFlight
		}
		if reply == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reply)), uint16(len(reply)))
		c.SetWriteDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := c.Write(append(out, reply...)); err != nil {
			return
		}
	}
}
