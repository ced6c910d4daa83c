package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qemu"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/virtiofsd"
)

// vm is one QEMU process. Its life: Start creates it (QEMU paused) -> cont
// -> running -> QEMU exits (guest reboot, quit, kill, crash) -> reaped
// (exited closed) -> exit classified, QMP closed (done closed) -> Destroy
// removes the state directory entries.
type vm struct {
	id, stateDir, consoleLog             string
	qmpPath, agentPath, logPath, pidPath string

	// Set during Start only, then read-only.
	createdDir bool      // StateDir did not exist before Start
	created    []string  // files to remove on Destroy
	cmd        *exec.Cmd // nil for a VM adopted by Reattach
	pid        int
	// daemons serve the VM's shared directories (none for an adopted VM:
	// they end with its QEMU).
	daemons []*virtiofsd.Daemon
	// ioErrors logs the disk errors QEMU reports to the guest.
	ioErrors ioErrorLog
	// savePath is a Template VM's second QMP monitor (save.go);
	// sharedRAM says its RAM is Config.Memory, left out of the state.
	savePath  string
	sharedRAM bool
	// agentPort follows the guest's opening and closing of its agent port.
	agentPort portState
	// waitProc blocks until QEMU has ended and returns its wait status (a
	// zero status when QEMU is not our child); killProc sends SIGKILL.
	waitProc func() syscall.WaitStatus
	killProc func() error
	// releaseProc, if set, frees the process handle after Destroy.
	releaseProc func()
	// agentLn is set only for a QEMU adopted from an engine that had it
	// connect to the driver's socket (reconnect=1) rather than serve one:
	// the driver then listens and accepts, into agentConns (capacity 1).
	agentLn    *net.UnixListener
	agentConns chan net.Conn

	exited chan struct{} // closed when QEMU has been reaped
	done   chan struct{} // closed when the exit is classified and QMP closed

	mu            sync.Mutex
	dom           *qemu.Domain  // guarded by mu; nil until QMP is connected and after it is closed
	monitorClosed bool          // guarded by mu; closeMonitor has run
	eventsDone    chan struct{} // guarded by mu; closed when the event reader ends
	facts         exitFacts     // guarded by mu
	exit          sandbox.Exit  // guarded by mu; valid once done is closed
	agentTaken    bool          // guarded by mu
	closed        bool          // guarded by mu; Destroy has run

	destroyOnce sync.Once
	destroyErr  error
}

var _ sandbox.Sandbox = (*vm)(nil)

func (v *vm) ID() string { return v.id }

func (v *vm) Pid() int { return v.pid }

// DialAgent returns the agent connection: the byte stream of the
// virtio-serial port. There is one such stream per VM, so only the first
// successful call gets it.
func (v *vm) DialAgent(ctx context.Context) (net.Conn, error) {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil, errors.New("agent channel: the VM was destroyed")
	}
	if v.agentTaken {
		v.mu.Unlock()
		return nil, errors.New("agent channel already taken: a virtio-serial port carries one stream per VM")
	}
	v.agentTaken = true
	v.mu.Unlock()

	c, err := v.connectAgent(ctx)
	if err != nil {
		v.mu.Lock()
		v.agentTaken = false
		v.mu.Unlock()
		return nil, err
	}
	return c, nil
}

// connectAgent connects to QEMU's agent socket. QEMU serves one client at
// a time: a connection made while an earlier one is still open (a
// restarted engine's, before QEMU saw the old one close) waits in the
// backlog and is served next.
func (v *vm) connectAgent(ctx context.Context) (net.Conn, error) {
	if v.agentLn != nil {
		return v.acceptedAgent(ctx)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", v.agentPath)
	if err == nil {
		return c, nil
	}
	select {
	case <-v.exited:
		return nil, errors.New("agent channel: the VM exited")
	default:
	}
	return nil, fmt.Errorf("agent channel: %w", err)
}

// acceptedAgent waits for an adopted client-mode QEMU to connect.
func (v *vm) acceptedAgent(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-v.agentConns:
		return c, nil
	case <-v.exited:
		select {
		case c := <-v.agentConns:
			return c, nil
		default:
		}
		return nil, errors.New("agent channel: the VM exited before QEMU connected the port")
	case <-ctx.Done():
		return nil, fmt.Errorf("agent channel: %w", ctx.Err())
	}
}

// acceptAgent accepts an adopted client-mode QEMU's connection to the
// agent socket (later connections wait in the backlog, unused, until
// Destroy).
func (v *vm) acceptAgent() {
	c, err := v.agentLn.Accept()
	if err != nil {
		return // listener closed by Destroy
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		c.Close()
		return
	}
	v.agentConns <- c
}

// Wait blocks until QEMU has exited and returns why.
func (v *vm) Wait(ctx context.Context) (sandbox.Exit, error) {
	select {
	case <-v.done:
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.exit, nil
	case <-ctx.Done():
		return sandbox.Exit{}, ctx.Err()
	}
}

// quitGrace is how long Stop lets QEMU handle "quit" before SIGKILL.
const quitGrace = 2 * time.Second

// Stop ends the VM. Without ACPI there is no power button the guest would
// see, so the graceful part is the caller's: ask the agent to shut the
// guest down, then call Stop, which waits until ctx ends for the guest to
// go (returning as soon as it does). After that, QMP "quit" (QEMU flushes
// its disk caches and exits, without the guest's cooperation), and SIGKILL
// if QEMU has not exited quitGrace later. A ctx that is already done stops
// the VM at once.
func (v *vm) Stop(ctx context.Context) error {
	select {
	case <-v.exited:
		return nil
	case <-ctx.Done():
	}
	v.mu.Lock()
	v.facts.quitByUs = true
	v.mu.Unlock()
	// A hung QEMU may never answer; the reply is not needed, the exit is.
	go v.run(context.Background(), "quit") //nolint:errcheck
	select {
	case <-v.exited:
		return nil
	case <-time.After(quitGrace):
	}
	v.kill()
	<-v.exited
	return nil
}

// Destroy kills QEMU if it runs, waits for it and removes what Start
// created. Safe to call more than once, and concurrently with Wait.
func (v *vm) Destroy() error {
	v.destroyOnce.Do(func() {
		v.kill()
		<-v.done
		v.stopDaemons()
		v.destroyErr = v.cleanup()
		if v.releaseProc != nil {
			v.releaseProc()
		}
	})
	return v.destroyErr
}

// kill sends SIGKILL unless QEMU has already been reaped. os.Process uses a
// pidfd where the kernel has them, so a reaped, recycled pid is never hit.
func (v *vm) kill() {
	select {
	case <-v.exited:
		return
	default:
	}
	v.mu.Lock()
	v.facts.killedByUs = true
	v.mu.Unlock()
	_ = v.killProc() // fails only if QEMU was reaped meanwhile
}

// reap waits for QEMU, lets the event reader consume what QEMU wrote
// before dying, then records the classified exit.
func (v *vm) reap() {
	status := v.waitProc()
	close(v.exited)

	v.mu.Lock()
	eventsDone := v.eventsDone
	v.mu.Unlock()
	if eventsDone != nil {
		// QEMU is gone, so the QMP socket reaches EOF promptly; the
		// timeout only guards against a wedged reader.
		select {
		case <-eventsDone:
		case <-time.After(2 * time.Second):
		}
	}
	v.closeMonitor()

	v.mu.Lock()
	f := v.facts
	v.mu.Unlock()
	f.status = status
	if f.shutdownReason == "guest-reset" {
		f.consolePanic = findConsolePanic(v.consoleLog)
	}
	f.stderrTail = tailLines(v.logPath, 3, 4096)
	reason, detail := classify(f)

	v.mu.Lock()
	v.exit = sandbox.Exit{Reason: reason, Detail: detail, At: time.Now()}
	v.mu.Unlock()
	close(v.done)
}

// exitStatus describes QEMU's wait status; valid after exited is closed.
func (v *vm) exitStatus() string {
	if v.cmd == nil {
		return "ended (not a child of this process: status unknown)"
	}
	if v.cmd.ProcessState == nil {
		return "not exited"
	}
	return v.cmd.ProcessState.String()
}

// cleanup closes the listeners and connections and removes the files Start
// created, then StateDir itself if Start created it and it is now empty
// (the caller may keep its console log there).
func (v *vm) cleanup() error {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	if v.agentLn != nil {
		v.agentLn.Close()
	}
	select {
	case c := <-v.agentConns: // accepted but never handed out
		c.Close()
	default:
	}
	v.closeMonitor()

	var errs []error
	for _, p := range v.created {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if v.createdDir {
		err := os.Remove(v.stateDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy VM %s: %w", v.id, err)
	}
	return nil
}
