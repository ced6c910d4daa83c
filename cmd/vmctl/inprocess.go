package main

// The in-process engine: without a daemon, vmctl runs the engine itself
// and serves its REST API inside this process, over socket pairs, to the same client code it uses with a daemon. Filters,
// templates, JSON, progress streams and errors are then the daemon's
// exactly, with one implementation of each. The engine ends with the
// process, so its containers cannot outlive the command that runs them.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/server"
)

// pipeListener hands the server one end of a connected socket pair per
// dial. A socket pair rather than net.Pipe: attach needs half-close (the
// client's CloseWrite is the container's stdin EOF), and kernel buffers
// keep a writer from waiting on each read.
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
	client, srv, err := socketPair()
	if err != nil {
		return nil, err
	}
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

// socketPair returns the two ends of a connected unix stream socket pair.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("in-process engine: socketpair: %w", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "in-process-api")
		c, err := net.FileConn(f) // dups fd
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("in-process engine: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}

// handlerGrace bounds how long closing the in-process engine waits for
// requests still in flight (a removal after an interrupted run, say).
const handlerGrace = 30 * time.Second

// inProcess starts the engine in this process on the global options'
// state and returns a client of it; why is what led here, for vmctl info.
func (g *globalOptions) inProcess(why string) (*remote, error) {
	eng, err := engine.New(engine.Config{
		DataRoot: g.dataRoot,
		ExecRoot: g.execRoot,
		Kernel:   g.kernel,
		Initrd:   g.initrd,
		// A daemon's flag, for the engine in this process.
		NoSnapshots: !g.snapshots,
	})
	if err != nil {
		return nil, err
	}
	api := server.New(eng.Services())
	l := newPipeListener()
	srv := &http.Server{Handler: api}
	served := make(chan struct{})
	go func() {
		defer close(served)
		// Serve ends with ErrServerClosed once Shutdown closes the
		// listener; it cannot fail otherwise.
		srv.Serve(l)
	}()
	c, err := client.New(client.WithHost("unix:///in-process.sock"), client.WithDialContext(l.dial), client.WithAPIVersionNegotiation())
	if err != nil {
		srv.Close()
		return nil, err
	}
	return &remote{host: "the in-process engine", api: c, inProcess: true, why: why, closeFn: func() {
		c.Close()
		// Streams (attach, logs -f, events) end first; then plain
		// requests finish, so that what they do to containers and disks
		// is done before the process exits.
		api.Close()
		ctx, cancel := context.WithTimeout(context.Background(), handlerGrace)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-served
	}}, nil
}
