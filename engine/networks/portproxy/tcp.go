package portproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// tcpProxy accepts on the host and relays each connection to the
// container. Every connection it holds is in conns, so that Stop can
// close them.
type tcpProxy struct {
	ln        *net.TCPListener
	container netip.AddrPort
	opts      Options
	slots     chan struct{}   // one token per connection being relayed
	ctx       context.Context // cancelled by stop: ends dials under way
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu    sync.Mutex
	conns map[*net.TCPConn]struct{} // guarded by mu; nil once stopped
}

func startTCP(ctx context.Context, b Binding, o Options) (*Proxy, error) {
	l, err := listenConfig.Listen(ctx, b.network(), b.hostAddrPort().String())
	if err != nil {
		return nil, err
	}
	ln := l.(*net.TCPListener)
	t := &tcpProxy{
		ln:        ln,
		container: b.Container,
		opts:      o,
		slots:     make(chan struct{}, o.MaxConns),
		conns:     make(map[*net.TCPConn]struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	b.HostPort = uint16(ln.Addr().(*net.TCPAddr).Port)
	t.wg.Add(1)
	go t.acceptLoop()
	return &Proxy{binding: b, tcp: t}, nil
}

func (t *tcpProxy) acceptLoop() {
	defer t.wg.Done()
	var backoff time.Duration
	for {
		c, err := t.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or memory, or a connection reset
			// before it was accepted: wait a little, as net/http does,
			// rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-t.ctx.Done():
				return
			}
		}
		backoff = 0
		select {
		case t.slots <- struct{}{}:
		default:
			// At the limit: refuse at once, and visibly (a reset, not an
			// empty answer).
			c.SetLinger(0)
			c.Close()
			continue
		}
		if !t.track(c) {
			c.Close()
			return
		}
		t.wg.Add(1)
		go t.serve(c)
	}
}

// track adds c to the connections Stop closes; false once stopped.
func (t *tcpProxy) track(c *net.TCPConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tcpProxy) untrack(c *net.TCPConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

// serve dials the container for one accepted connection and relays
// between the two until both directions have ended.
func (t *tcpProxy) serve(client *net.TCPConn) {
	defer t.wg.Done()
	defer func() { <-t.slots }()
	defer t.untrack(client)
	defer client.Close()

	// The dial is bounded, and Stop cuts it short.
	ctx, cancel := context.WithTimeout(t.ctx, t.opts.DialTimeout)
	var d net.Dialer
	bc, err := d.DialContext(ctx, "tcp", t.container.String())
	cancel()
	if err != nil {
		// The container is not up, or has nothing listening: the client
		// sees a reset, as it would connecting to the container itself.
		client.SetLinger(0)
		return
	}
	backend := bc.(*net.TCPConn)
	if !t.track(backend) {
		backend.Close()
		return
	}
	defer t.untrack(backend)
	defer backend.Close()
	relay(client, backend)
}

// relay copies both ways between a and b, with splice, until both
// directions have ended: an end of file on one side is passed on as a
// half-close (FIN) to the other, which may go on sending; an error on
// either aborts both, with a reset.
func relay(a, b *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(b, a)
	}()
	copyHalf(a, b)
	<-done
}

// copyHalf copies src to dst until src's end of file, then half-closes
// dst. On an error (a reset, a close by Stop) it resets both, which also
// ends the copy going the other way.
func copyHalf(dst, src *net.TCPConn) {
	// *net.TCPConn.ReadFrom of a *net.TCPConn splices on Linux: the bytes
	// go through a kernel pipe, never through this process.
	if _, err := dst.ReadFrom(src); err != nil {
		dst.SetLinger(0)
		src.SetLinger(0)
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}

func (t *tcpProxy) stop() {
	t.cancel()
	t.ln.Close()
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	t.wg.Wait()
}
