package main

// How a command reaches the engine. Every command is a client of the
// Docker Engine API; what serves it is, in order:
//   1. the vmctld that -H or VMCTL_HOST names;
//   2. the engine in this process, when --data-root, --exec-root, --kernel
//      or --initrd (or their environment variables) ask for its state;
//   3. the vmctld answering on the default socket (as docker finds
//      /var/run/docker.sock);
//   4. the engine in this process, for the commands that can run in one.
// The in-process engine serves the same REST API over in-memory
// connections (inprocess.go), so both paths share one implementation.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/vmctl/vmctl/engine/server"
)

// defaultHostEnv names the environment variable that moves the default
// socket vmctl looks for a daemon on (tests point it at their own vmctld).
const defaultHostEnv = "VMCTL_DEFAULT_HOST"

// defaultHost is where vmctl looks for a vmctld when none is named.
func defaultHost() string { return envOr(defaultHostEnv, server.DefaultHost) }

// remote is a client of one engine: a vmctld, or the one in this process.
type remote struct {
	// host names the engine in messages: the daemon's address, or
	// "the in-process engine".
	host string
	api  *client.Client
	// inProcess is set when this process serves the engine; why says
	// what made it choose so, for vmctl info.
	inProcess bool
	why       string
	closeFn   func()
}

// Close ends the client and, for the in-process engine, the engine's
// server once its requests are done.
func (r *remote) Close() {
	if r.closeFn != nil {
		r.closeFn()
	}
}

// engineFlagsSet reports which engine flag (or its environment variable)
// asks for the engine's state in this process, if any.
func (g *globalOptions) engineFlagsSet() string {
	for _, f := range []struct{ flag, env string }{
		{"data-root", "VMCTL_DATA_ROOT"}, {"exec-root", "VMCTL_EXEC_ROOT"},
		{"kernel", "VMCTL_KERNEL"}, {"initrd", "VMCTL_INITRD"},
	} {
		if g.flags != nil && g.flags.Changed(f.flag) {
			return "--" + f.flag
		}
		if os.Getenv(f.env) != "" {
			return f.env
		}
	}
	return ""
}

// connect returns a client of the engine that serves the command name
// (see the order above). A daemonOnly command refuses the in-process
// engine: what it acts on lives only as long as a daemon.
func (g *globalOptions) connect(name string, daemonOnly bool) (*remote, error) {
	if g.host != "" {
		return g.dial(g.host)
	}
	if flag := g.engineFlagsSet(); flag != "" {
		if daemonOnly {
			return nil, needsDaemon(name, fmt.Sprintf("%s asks for the engine in this process", flag))
		}
		return g.inProcess(fmt.Sprintf("%s given", flag))
	}
	def := defaultHost()
	up, err := answers(def)
	if err != nil {
		return nil, &statusError{code: 125, err: fmt.Errorf("cannot connect to vmctld at %s: %w", def, err)}
	}
	if up {
		return g.dial(def)
	}
	if daemonOnly {
		return nil, needsDaemon(name, "no vmctld answers at "+def)
	}
	return g.inProcess("no vmctld answers at " + def)
}

// needsDaemon is the one line of a daemon-only command without a daemon.
func needsDaemon(name, why string) error {
	return &statusError{code: 125, err: fmt.Errorf("%s needs a daemon, and %s: start vmctld (systemctl start vmctld, or vmctld &) or pass -H", name, why)}
}

// answers reports whether something listens at host. A socket file with
// nothing behind it (a daemon that ended) or no file at all is "no"; any
// other failure (permission denied, say) is an error, since falling back
// to the in-process engine would hide a daemon the user has.
func answers(host string) (bool, error) {
	if err := checkHost(host); err != nil {
		return false, fmt.Errorf("%s: %w", defaultHostEnv, err)
	}
	h, err := server.ParseHost(host)
	if err != nil {
		return false, fmt.Errorf("%s: %w", defaultHostEnv, err)
	}
	c, err := net.DialTimeout(h.Network, h.Address, 2*time.Second)
	if err == nil {
		c.Close()
		return true, nil
	}
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	return false, err
}

// dial connects to the daemon at host. The API version is negotiated on
// the first request, so older daemons keep working.
func (g *globalOptions) dial(host string) (*remote, error) {
	if err := checkHost(host); err != nil {
		return nil, &statusError{code: 125, err: err}
	}
	api, err := client.New(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, &statusError{code: 125, err: fmt.Errorf("invalid host %q: %w", host, err)}
	}
	return &remote{host: host, api: api, closeFn: func() { api.Close() }}, nil
}

// daemonError is an error the engine (or the way to it) returned, shown
// as the engine's own message. It keeps the error's class for callers that
// branch on errdefs.
type daemonError struct {
	msg string
	err error
}

func (e *daemonError) Error() string { return e.msg }
func (e *daemonError) Unwrap() error { return e.err }

// fail turns a client error into the one line users read: the engine's
// message without the client library's prefix, or why the daemon could
// not be reached.
func (r *remote) fail(err error) error {
	if err == nil {
		return nil
	}
	if client.IsErrConnectionFailed(err) {
		return &daemonError{msg: fmt.Sprintf("cannot connect to vmctld at %s: is the daemon running?", r.host), err: err}
	}
	msg := strings.TrimPrefix(oneLine(err), "Error response from daemon: ")
	return &daemonError{msg: msg, err: err}
}

// onEngine runs op on the engine that serves name (see connect), with
// docker's exit statuses for the daemon's refusals: 1, unless op chose
// its own.
func (g *globalOptions) onEngine(name string, daemonOnly bool, op func(*remote) error) error {
	r, err := g.connect(name, daemonOnly)
	if err != nil {
		return err
	}
	defer r.Close()
	return daemonFailure(op(r))
}

// withEngine runs op on the engine that serves name, passing op's error
// on as it is (run keeps its own 125).
func (g *globalOptions) withEngine(name string, daemonOnly bool, op func(*remote) error) error {
	r, err := g.connect(name, daemonOnly)
	if err != nil {
		return err
	}
	defer r.Close()
	return op(r)
}

// daemonFailure gives an error that is not already an exit status the
// status 1, as the docker CLI exits for a refusal of the daemon's in its
// exec, attach, create, restart and wait (run's own failures are 125).
func daemonFailure(err error) error {
	if err == nil {
		return nil
	}
	var se *statusError
	if errors.As(err, &se) {
		return err
	}
	return &statusError{code: 1, err: err}
}
