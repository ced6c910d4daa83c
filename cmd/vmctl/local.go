package main

// The in-process side of the listing and inspection commands (ps,
// inspect, images --format): without -H they serve the engine's REST API
// inside this process, over in-memory connections, and use the same client
// code as with a daemon. Filters, templates and JSON are then the daemon's
// exactly, with one implementation of each.

import (
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/moby/moby/client"

	"github.com/vmctl/vmctl/engine/server"
)

// pipeListener hands the server one end of an in-memory connection per
// dial.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, srv := net.Pipe()
	select {
	case l.conns <- srv:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
	}
	client.Close()
	srv.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, net.ErrClosed
}

// api returns a client of the daemon named by -H, or else of the engine
// served in this process; close ends either.
func (g *globalOptions) api() (r *remote, closeFn func(), err error) {
	if g.host != "" {
		r, err := g.remote()
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	}
	eng, err := g.open()
	if err != nil {
		return nil, nil, err
	}
	api := server.New(eng)
	l := newPipeListener()
	srv := &http.Server{Handler: api}
	served := make(chan struct{})
	go func() {
		defer close(served)
		// Serve ends with ErrServerClosed when done closes it; the
		// listener cannot fail otherwise.
		srv.Serve(l)
	}()
	c, err := client.New(client.WithHost("unix:///in-process.sock"), client.WithDialContext(l.dial), client.WithAPIVersionNegotiation())
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	r = &remote{host: "the in-process engine", api: c}
	return r, func() {
		c.Close()
		api.Close()
		srv.Close()
		<-served
	}, nil
}
