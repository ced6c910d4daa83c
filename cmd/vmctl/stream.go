package main

// The client's side of an attached process, shared by run, start -a,
// attach and exec: the output of a hijacked connection, this process's
// stdin into it, and the user's terminal (raw mode, size).

import (
	"context"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	moby "github.com/moby/term"
	"golang.org/x/term"
)

// streamIO copies hr's output to stdout and stderr until it ends (one raw
// stream with a terminal, framed stdout/stderr otherwise) and, with stdin,
// this process's stdin to hr, closing hr's write side at EOF so that the
// process reads its end of input. The returned channel closes when the
// output has ended; the stdin copy is not waited for, as docker does not:
// a process may exit before the user stops typing.
func streamIO(hr client.HijackedResponse, tty, stdin bool) <-chan struct{} {
	outputDone, _ := streamIODetach(hr, tty, stdin, false)
	return outputDone
}

// detachKeys are docker's default: ctrl-p ctrl-q.
var detachKeys = []byte{16, 17}

// streamIODetach is streamIO that, with detach set, a terminal and stdin,
// watches the user's keys for the detach keys as docker's CLI does: they
// reach the daemon (which ends the attachment there) and close detached
// here, so the session ends without waiting for the container.
func streamIODetach(hr client.HijackedResponse, tty, stdin, detach bool) (outputDone, detached <-chan struct{}) {
	det := make(chan struct{})
	out := make(chan struct{})
	outputDone, detached = out, det
	go func() {
		defer close(out)
		if tty {
			io.Copy(os.Stdout, hr.Reader)
		} else {
			stdcopy.StdCopy(os.Stdout, os.Stderr, hr.Reader)
		}
	}()
	if stdin {
		go func() {
			var in io.Reader = os.Stdin
			if detach && tty {
				in = moby.NewEscapeProxy(in, detachKeys)
			}
			_, err := io.Copy(hr.Conn, in)
			if _, ok := err.(moby.EscapeError); ok {
				// The daemon ends the attachment on the same keys and
				// leaves the container's stdin open; an EOF would close it.
				hr.Conn.Write(detachKeys)
				close(det)
				return
			}
			hr.CloseWrite()
		}()
	}
	return outputDone, detached
}

// userTerminal prepares the user's terminal for a process with a tty: raw
// mode when stdin feeds it (keys such as Ctrl-C then reach the process as
// bytes), and its size sent now and on every SIGWINCH when stdout is a
// terminal. It returns the function that undoes both.
func userTerminal(tty, interactive bool, resize func(rows, cols uint16)) (restore func()) {
	if !tty {
		return func() {}
	}
	stdinFd, stdoutFd := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	var state *term.State
	if interactive {
		if s, err := term.MakeRaw(stdinFd); err == nil {
			state = s
		}
	}
	stopResize := func() {}
	if term.IsTerminal(stdoutFd) {
		stopResize = forwardResize(stdoutFd, resize)
	}
	return func() {
		stopResize()
		if state != nil {
			term.Restore(stdinFd, state)
		}
	}
}

// terminalSize checks that -it has a terminal to read from, and returns the
// size of the user's terminal for a process with a tty (0, 0 when unknown).
func terminalSize(tty, interactive bool) (rows, cols uint16, err error) {
	stdinFd, stdoutFd := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	if tty && interactive && !term.IsTerminal(stdinFd) {
		return 0, 0, &statusError{code: 125, err: errNotATTY}
	}
	if tty && term.IsTerminal(stdoutFd) {
		if w, h, err := term.GetSize(stdoutFd); err == nil {
			return uint16(h), uint16(w), nil
		}
	}
	return 0, 0, nil
}

// endOnSignal is for a session in raw mode that forwards no signals (exec
// -it, attach and start -a -i to a container with a tty): the terminal
// sends no SIGINT then, but a kill or a closed terminal still ends vmctl,
// and Go's default exit would leave the user's terminal raw. It catches
// the signals that end a process, and cancels the returned context when
// one comes so that the session returns through its deferred restore;
// received reports that signal (0 before one came). stop undoes it.
func endOnSignal(parent context.Context) (ctx context.Context, received func() syscall.Signal, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			got.Store(int32(s.(syscall.Signal)))
			cancel()
		case <-done:
		}
	}()
	received = func() syscall.Signal { return syscall.Signal(got.Load()) }
	return ctx, received, func() { signal.Stop(ch); close(done); cancel() }
}

// signalStatus is the exit status of a session ended by sig, the one a
// shell reports for a process that sig killed.
func signalStatus(sig syscall.Signal) error {
	return &statusError{code: 128 + int(sig)}
}
