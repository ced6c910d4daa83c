package vcpu

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/vmctl/vmctl/hypervisor/kvm"
	"golang.org/x/sys/unix"
)

// State is a vCPU's lifecycle state.
type State int32

const (
	Created State = iota
	Running
	Paused
	Exited
)

func (s State) String() string {
	switch s {
	case Created:
		return "created"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Exited:
		return "exited"
	}
	return fmt.Sprintf("state-%d", int32(s))
}

// ErrExited is returned by requests to a vCPU that has exited.
var ErrExited = errors.New("vCPU has exited")

// ErrNotStarted is returned by Pause and Resume before Start.
var ErrNotStarted = errors.New("vCPU is not started")

// CPU is what the run loop needs of a KVM vCPU (kvm.VCPU implements it).
type CPU interface {
	Run() (kvm.Exit, error)
	SetImmediateExit(on bool)
}

type cmdKind int

const (
	cmdPause cmdKind = iota
	cmdResume
	cmdDo
)

type command struct {
	kind cmdKind
	ack  chan struct{}
	fn   func() error // cmdDo's function
	err  error        // what fn returned, set before ack is closed
}

// VCPU runs one vCPU on its own locked OS thread.
type VCPU struct {
	id    int
	cpu   CPU
	buses Buses
	log   *slog.Logger

	state   atomic.Int32
	started atomic.Bool
	tid     atomic.Int32  // the thread's id, once the loop runs
	cmds    chan *command // capacity 1: a request is deposited, then the vCPU kicked

	stopOnce sync.Once
	stopCh   chan struct{} // closed by RequestStop
	stopRes  Result        // written before stopCh is closed

	done   chan struct{} // closed when the goroutine has ended
	result Result        // written before done is closed

	// ThreadSetup, if set before Start, runs on the vCPU's thread once it
	// is locked and before the first KVM_RUN (a per-thread seccomp
	// filter); an error ends the vCPU with ReasonHostError.
	ThreadSetup func() error
}

// New returns a vCPU in state Created. log may be nil.
func New(id int, cpu CPU, buses Buses, log *slog.Logger) *VCPU {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &VCPU{id: id, cpu: cpu, buses: buses, log: log.With("vcpu", id),
		cmds: make(chan *command, 1), stopCh: make(chan struct{}), done: make(chan struct{})}
}

// State returns the current state.
func (v *VCPU) State() State { return State(v.state.Load()) }

// Start launches the vCPU's goroutine. // Created --Start--> Running
func (v *VCPU) Start() error {
	if !v.started.CompareAndSwap(false, true) {
		return fmt.Errorf("vCPU %d already started", v.id)
	}
	running := make(chan struct{})
	go v.loop(running)
	<-running
	return nil
}

// Pause stops the vCPU at its next exit and returns once it is paused.
// Running --Pause--> Paused
func (v *VCPU) Pause() error { return v.request(cmdPause) }

// Resume lets a paused vCPU run again. Paused --Resume--> Running
func (v *VCPU) Resume() error { return v.request(cmdResume) }

// RequestStop asks the vCPU to end with result r and returns at once: it is
// safe to call from the vCPU's own thread (a device's reset callback) and
// more than once (the first result wins). Use Wait to see it end.
func (v *VCPU) RequestStop(r Result) {
	v.stopOnce.Do(func() {
		v.stopRes = r
		close(v.stopCh)
	})
	if v.started.Load() {
		v.kick()
	}
}

// Wait blocks until the vCPU has exited and returns how it ended.
// Preconditions: Start was called.
func (v *VCPU) Wait() Result {
	<-v.done
	return v.result
}

// Done is closed when the vCPU has exited.
func (v *VCPU) Done() <-chan struct{} { return v.done }

// Do runs fn on the paused vCPU's own thread and returns its error: KVM
// state is read and written there (a snapshot does so). Paused --Do-->
// Paused; on a vCPU in any other state Do fails without calling fn.
func (v *VCPU) Do(fn func() error) error {
	if v.State() != Paused {
		return fmt.Errorf("vCPU %d is %v, not paused", v.id, v.State())
	}
	return v.send(&command{kind: cmdDo, fn: fn, ack: make(chan struct{})})
}

func (v *VCPU) request(kind cmdKind) error {
	return v.send(&command{kind: kind, ack: make(chan struct{})})
}

func (v *VCPU) send(c *command) error {
	if !v.started.Load() {
		return ErrNotStarted
	}
	// Deposit first, kick second: the loop clears immediate_exit before it
	// looks at the channel, so it either sees the request or enters
	// KVM_RUN with immediate_exit set and comes straight back.
	select {
	case v.cmds <- c:
	case <-v.done:
		return ErrExited
	}
	v.kick()
	select {
	case <-c.ack:
		return c.err
	case <-v.done:
		return ErrExited
	}
}

// kick makes the vCPU leave KVM_RUN soon: immediate_exit covers a thread
// about to enter the guest, the signal one already inside it.
func (v *VCPU) kick() {
	v.cpu.SetImmediateExit(true)
	// A zero tid means the loop has not looked at its channels yet and
	// will see the request when it does. ESRCH means the thread is gone,
	// which only happens after exit.
	if tid := v.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

func (v *VCPU) loop(running chan<- struct{}) {
	// The thread stays locked until the goroutine ends, which makes the
	// runtime retire it: a tid we might still signal is never reused for
	// other goroutines.
	runtime.LockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	var res Result
	if v.ThreadSetup != nil {
		if err := v.ThreadSetup(); err != nil {
			res = Result{Reason: ReasonHostError, Detail: fmt.Sprintf("vCPU %d thread setup: %v", v.id, err)}
		}
	}
	v.state.Store(int32(Running))
	close(running)
	if res.Reason == ReasonNone {
		res = v.run()
	}
	v.result = res
	v.state.Store(int32(Exited))
	v.log.Debug("vCPU exited", "reason", res.Reason.String(), "detail", res.Detail)
	close(v.done)
}

func (v *VCPU) run() Result {
	for {
		select {
		case <-v.stopCh:
			return v.stopRes
		case c := <-v.cmds:
			if stopped := v.handle(c); stopped {
				return v.stopRes
			}
			continue
		default:
		}
		exit, err := v.cpu.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			// Kicked (or a stray signal): clear the flag before looking
			// at the channels, so a kick that lands after this point
			// still interrupts the next KVM_RUN.
			v.cpu.SetImmediateExit(false)
			continue
		}
		if err != nil {
			return Result{ReasonHostError, err.Error()}
		}
		if stop, r := HandleExit(exit, v.buses); stop {
			return r
		}
	}
}

// handle applies a command on the vCPU thread and reports whether a stop
// arrived while paused.
func (v *VCPU) handle(c *command) bool {
	switch c.kind {
	case cmdResume:
		close(c.ack) // already running
		return false
	case cmdDo:
		c.err = fmt.Errorf("vCPU %d is running, not paused", v.id)
		close(c.ack)
		return false
	}
	v.state.Store(int32(Paused))
	close(c.ack)
	for {
		select {
		case <-v.stopCh:
			return true
		case c := <-v.cmds:
			switch c.kind {
			case cmdResume:
				v.state.Store(int32(Running))
				close(c.ack)
				return false
			case cmdDo:
				c.err = c.fn()
			}
			close(c.ack) // already paused, or done
		}
	}
}
