package container

import (
	"context"
	"os"
	"sync"
	"syscall"

	"github.com/vmctl/vmctl/guest-agent/reaper"
)

// Exit is how a process ended.
type Exit struct {
	// Status is the exit code, or 128+N if signal N killed the process.
	Status int
	// OOMKilled is set when the container's cgroup saw an OOM kill.
	OOMKilled bool
}

// Process is the container's init or an exec'd process.
type Process struct {
	ID  string // exec ID; empty for the init
	Pid int

	io   *stdio
	proc *os.Process // holds a pidfd, so signals never hit a reused pid
	cg   *cgroup

	exited chan struct{}
	mu     sync.Mutex // guards exit
	exit   Exit
	// released closes the agent's ends of the stdio once the process has
	// exited and its output was read to the end: nothing can use them any
	// more, and a container exec'ed into again and again (health checks)
	// would otherwise hold 3 descriptors per exec until it is removed.
	released sync.Once
}

func newProcess(id string, io *stdio, cg *cgroup) *Process {
	return &Process{ID: id, io: io, cg: cg, exited: make(chan struct{})}
}

// watch records the status the reaper delivers.
func (p *Process) watch(ch <-chan reaper.Status) {
	go func() {
		st := <-ch
		e := Exit{Status: st.ExitStatus(), OOMKilled: p.cg.oomKilled()}
		p.mu.Lock()
		p.exit = e
		p.mu.Unlock()
		if p.proc != nil {
			p.proc.Release()
		}
		close(p.exited)
		p.releaseIfDone()
	}()
}

// releaseIfDone closes the process's stdio once it has exited and both
// outputs have reached EOF. Later reads still answer EOF (a closed stream
// reads as ended), so a host that lost the EOF answer can ask again.
func (p *Process) releaseIfDone() {
	if p.Exited() && p.io.drained() {
		p.released.Do(p.io.close)
	}
}

// Wait blocks until the process has exited or ctx ends.
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Signal delivers sig. The init is PID 1 of its namespace: like any PID 1 it
// ignores signals it has no handler for, except SIGKILL and SIGSTOP.
func (p *Process) Signal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return errorf(ErrInvalid, "signal %d is out of range", sig)
	}
	if p.Exited() || p.proc == nil {
		return errorf(ErrState, "process has exited")
	}
	if err := p.proc.Signal(sig); err != nil {
		if p.Exited() || err == os.ErrProcessDone {
			return errorf(ErrState, "process has exited")
		}
		return err
	}
	return nil
}

// Read returns up to max bytes of stdout or stderr from offset (see
// stdio.read for why reads carry one) and the offset of the first byte;
// eof is set once the stream has ended and every byte was read.
func (p *Process) Read(which Stream, max int, offset uint64) (data []byte, at uint64, eof bool, err error) {
	data, at, eof, err = p.io.read(which, max, offset)
	if eof {
		p.releaseIfDone()
	}
	return data, at, eof, err
}

// Write writes to the process's stdin or terminal.
func (p *Process) Write(b []byte) (int, error) { return p.io.write(b) }

// CloseStdin ends the process's input.
func (p *Process) CloseStdin() error { return p.io.closeStdin() }

// Resize sets the terminal's window size.
func (p *Process) Resize(rows, cols uint32) error { return p.io.resize(rows, cols) }
