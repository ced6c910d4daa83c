// Package reaper collects the exit status of every child of the agent.
//
// The agent is PID 1 of the guest, so orphans of every container process are
// re-parented to it and must be reaped, or they stay zombies forever. One
// goroutine calls wait4(-1) for all children and hands each status to whoever
// registered interest in that pid. exec.Cmd.Wait must not be used for
// children of a process that runs a Reaper: the reaper would steal the status.
//
// A child may exit before the code that started it has learned its pid. Start
// closes that window by running the fork and the registration under a lock
// that the reaper also takes before it dispatches a status: a status that
// finds no waiter therefore belongs to an orphan and is dropped, and a pid
// reused later can never receive a stale status.
//
// The package does not start processes itself and knows nothing of containers.
package reaper

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Status is how a child ended.
type Status struct {
	Pid int
	// ExitCode is the exit status for a normal exit, otherwise -1.
	ExitCode int
	// Signal is the signal that killed the child, otherwise 0.
	Signal syscall.Signal
}

// ExitStatus is the shell convention: the exit code, or 128+signal.
func (s Status) ExitStatus() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.ExitCode
}

func statusFromWait(pid int, ws unix.WaitStatus) Status {
	if ws.Signaled() {
		return Status{Pid: pid, ExitCode: -1, Signal: syscall.Signal(ws.Signal())}
	}
	return Status{Pid: pid, ExitCode: ws.ExitStatus()}
}

// Reaper reaps all children of the calling process.
type Reaper struct {
	// startMu is held for reading while a child is started and registered,
	// and for writing while a reaped status is dispatched.
	startMu sync.RWMutex

	mu      sync.Mutex // guards waiters and closed
	waiters map[int]chan Status
	closed  bool

	// wake is signalled when a child may have appeared, so the loop can go
	// back to a blocking wait4 after ECHILD.
	wake chan struct{}
	done chan struct{}
}

// New returns a reaper; call Run in its own goroutine.
func New() *Reaper {
	return &Reaper{
		waiters: make(map[int]chan Status),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// Start calls start, which must fork exactly one child and return its pid,
// and registers that pid. The returned channel receives the child's status
// once. Nothing can be dispatched while start runs, so a child that exits
// at once is still delivered.
func (r *Reaper) Start(start func() (int, error)) (int, <-chan Status, error) {
	r.startMu.RLock()
	defer r.startMu.RUnlock()
	pid, err := start()
	if err != nil {
		return 0, nil, err
	}
	if pid <= 0 {
		return 0, nil, fmt.Errorf("reaper: start returned invalid pid %d", pid)
	}
	ch := make(chan Status, 1)
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.waiters[pid] = ch
	}
	r.mu.Unlock()
	if closed {
		return pid, nil, errors.New("reaper: stopped")
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return pid, ch, nil
}

// Run reaps children until Stop is called. It blocks in wait4 while children
// exist and sleeps on a channel while there are none, so it never spins.
func (r *Reaper) Run() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ECHILD:
			// No children now: sleep until Start registers one. An orphan
			// re-parented to us later is picked up by the next Start or by
			// Poll.
			select {
			case <-r.wake:
				continue
			case <-r.done:
				return
			}
		case err != nil:
			// wait4 fails only with ECHILD/EINTR/EINVAL; EINVAL would be a
			// bug here, and spinning on it would hang the guest.
			select {
			case <-r.done:
				return
			case <-r.wake:
				continue
			}
		}
		if ws.Stopped() || ws.Continued() {
			continue
		}
		r.dispatch(statusFromWait(pid, ws))
		select {
		case <-r.done:
			return
		default:
		}
	}
}

// Poll wakes the reaper loop; PID 1 calls it on SIGCHLD so orphans that
// arrive while it sleeps are reaped.
func (r *Reaper) Poll() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Reaper) dispatch(s Status) {
	r.startMu.Lock()
	r.mu.Lock()
	ch, ok := r.waiters[s.Pid]
	delete(r.waiters, s.Pid)
	r.mu.Unlock()
	r.startMu.Unlock()
	if ok {
		ch <- s // buffered, never blocks
	}
}

// Stop makes Run return at its next wake-up. It does not interrupt a wait4
// that is blocked on a running child.
func (r *Reaper) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	close(r.done)
}
