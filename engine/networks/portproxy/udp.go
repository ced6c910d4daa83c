package portproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxDatagram holds any UDP payload (65507 bytes over IPv4, 65527 over
// IPv6 without jumbograms).
const maxDatagram = 65535

// datagramBuffers lend a buffer to a flow only while a datagram is in hand:
// a flow waiting for its container's reply holds none, so a thousand idle
// flows cost a thousand parked goroutines, not 64 MiB.
var datagramBuffers = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// udpProxy relays datagrams between host clients and the container, one
// flow per client address.
type udpProxy struct {
	ln        *net.UDPConn
	lnRaw     syscall.RawConn
	container netip.AddrPort
	opts      Options
	// pktinfo: the listener is on 0.0.0.0 or ::, so each client's host
	// address is read from IP_PKTINFO and replies are sent from it; the
	// kernel's choice of source address could differ (a client on the
	// bridge writing to the host's LAN address would get its reply from
	// the gateway address, and its connected socket would drop it).
	pktinfo bool
	wg      sync.WaitGroup

	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow // guarded by mu; nil once stopped
}

// udpFlow is one client's traffic: a socket connected to the container,
// whose replies go back to client.
type udpFlow struct {
	client    netip.AddrPort
	replyFrom []byte // IP_PKTINFO/IPV6_PKTINFO control message for replies, or nil
	conn      *net.UDPConn
	raw       syscall.RawConn
	last      atomic.Int64 // unix nanoseconds of the last datagram either way
}

func (f *udpFlow) touch(now time.Time) { f.last.Store(now.UnixNano()) }

func startUDP(ctx context.Context, b Binding, o Options) (*Proxy, error) {
	host := b.hostAddrPort()
	lc := listenConfig
	pktinfo := host.Addr().IsUnspecified()
	if pktinfo {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if host.Addr().Is4() {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	pc, err := lc.ListenPacket(ctx, b.network(), host.String())
	if err != nil {
		return nil, err
	}
	ln := pc.(*net.UDPConn)
	raw, err := ln.SyscallConn()
	if err != nil {
		ln.Close()
		return nil, err
	}
	u := &udpProxy{
		ln:        ln,
		lnRaw:     raw,
		container: b.Container,
		opts:      o,
		pktinfo:   pktinfo,
		flows:     make(map[netip.AddrPort]*udpFlow),
	}
	b.HostPort = uint16(ln.LocalAddr().(*net.UDPAddr).Port)
	u.wg.Add(1)
	go u.readLoop()
	return &Proxy{binding: b, udp: u}, nil
}

// readLoop reads the clients' datagrams and sends each on its flow's
// socket, making the flow on a client's first datagram.
func (u *udpProxy) readLoop() {
	defer u.wg.Done()
	buf := make([]byte, maxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	for {
		n, oobn, _, client, err := u.ln.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A one-off error (an ICMP error queued on the socket):
			// the next read goes on.
			continue
		}
		f := u.flow(client, oob[:oobn])
		if f == nil {
			continue
		}
		// A container that does not read, or a VM not up yet, fills
		// the socket's buffer: the datagram is dropped, as a full queue
		// on the way would, and nobody waits.
		sendNoWait(f.raw, buf[:n], nil, nil)
	}
}

// flow returns client's flow, touched, making it if there is room; nil
// when the table is full or the proxy stopped.
func (u *udpProxy) flow(client netip.AddrPort, oob []byte) *udpFlow {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.flows == nil {
		return nil
	}
	if f := u.flows[client]; f != nil {
		// Touched under mu: the flow's reaper checks the time under mu
		// too, so a flow it removes has not just been handed out.
		f.touch(now)
		return f
	}
	if len(u.flows) >= u.opts.MaxFlows {
		return nil
	}
	network := "udp4"
	if u.container.Addr().Is6() {
		network = "udp6"
	}
	conn, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(u.container))
	if err != nil {
		return nil
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil
	}
	f := &udpFlow{client: client, conn: conn, raw: raw}
	if u.pktinfo {
		f.replyFrom = replyControl(oob)
	}
	f.touch(now)
	u.flows[client] = f
	u.wg.Add(1)
	go u.serveFlow(f)
	return f
}

// serveFlow relays the container's replies to the flow's client until the
// flow has been idle for the idle timeout, or the proxy stops.
func (u *udpProxy) serveFlow(f *udpFlow) {
	defer u.wg.Done()
	defer f.conn.Close()
	to := sockaddr(f.client)
	for {
		idleUntil := time.Unix(0, f.last.Load()).Add(u.opts.UDPIdleTimeout)
		if !time.Now().Before(idleUntil) && u.reap(f) {
			return
		}
		f.conn.SetReadDeadline(idleUntil)
		buf, n, err := readDatagram(f.raw)
		switch {
		case err == nil:
		case errors.Is(err, net.ErrClosed):
			return
		default:
			// The deadline (checked at the top of the loop), or an
			// ICMP error of an earlier datagram (port unreachable while
			// nothing listens in the container): read on.
			continue
		}
		f.touch(time.Now())
		sendNoWait(u.lnRaw, (*buf)[:n], f.replyFrom, to)
		datagramBuffers.Put(buf)
	}
}

// reap removes f from the table if it is still idle; false if a datagram
// came in meanwhile.
func (u *udpProxy) reap(f *udpFlow) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(time.Unix(0, f.last.Load())) < u.opts.UDPIdleTimeout {
		return false
	}
	if u.flows != nil && u.flows[f.client] == f {
		delete(u.flows, f.client)
	}
	return true
}

func (u *udpProxy) stop() {
	u.ln.Close()
	u.mu.Lock()
	flows := u.flows
	u.flows = nil
	u.mu.Unlock()
	for _, f := range flows {
		f.conn.Close()
	}
	u.wg.Wait()
}

// readDatagram waits for a datagram on c and reads it into a buffer from
// datagramBuffers, taken only once the datagram is there. The caller puts
// the buffer back. c's read deadline applies.
func readDatagram(c syscall.RawConn) (*[]byte, int, error) {
	var (
		buf  *[]byte
		n    int
		rerr error
	)
	err := c.Read(func(fd uintptr) bool {
		buf = datagramBuffers.Get().(*[]byte)
		n, rerr = unix.Read(int(fd), *buf)
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			datagramBuffers.Put(buf)
			buf = nil
			return false // wait until readable
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if buf != nil {
			datagramBuffers.Put(buf)
		}
		return nil, 0, err
	}
	return buf, n, nil
}

// sendNoWait sends one datagram (to nil: on a connected socket) and never
// waits for room in the socket's buffer: a datagram that does not fit is
// dropped.
func sendNoWait(c syscall.RawConn, b, oob []byte, to unix.Sockaddr) {
	c.Write(func(fd uintptr) bool {
		unix.Sendmsg(int(fd), b, oob, to, unix.MSG_DONTWAIT)
		return true
	})
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// replyControl turns the IP_PKTINFO or IPV6_PKTINFO message of a client's
// datagram into the one that sends replies from the host address the client
// wrote to; nil when there is none, or it names no usable source.
func replyControl(oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, spec_dst, addr. spec_dst is
			// the local address the kernel routed the datagram to (the
			// interface's for a broadcast), the right source for a reply.
			var info unix.Inet4Pktinfo
			copy(info.Spec_dst[:], m.Data[4:8])
			return unix.PktInfo4(&info)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo: addr, ifindex. A link-local source
			// needs its interface; any other is left to the routes.
			dst := netip.AddrFrom16([16]byte(m.Data[0:16]))
			if dst.IsMulticast() {
				return nil
			}
			info := unix.Inet6Pktinfo{Addr: dst.As16()}
			if dst.IsLinkLocalUnicast() {
				info.Ifindex = binary.NativeEndian.Uint32(m.Data[16:20])
			}
			return unix.PktInfo6(&info)
		}
	}
	return nil
}
