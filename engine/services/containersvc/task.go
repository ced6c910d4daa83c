package containersvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/engine/errs"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// ioChunk is the largest stdio transfer per agent call.
const ioChunk = 32 << 10

// Stdio connects a started container to the caller. Nil members are not
// attached: output is discarded, and stdin is closed at once unless the
// container was created with OpenStdin.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// CommandError means the container's command could not be run: not found
// (exit status 127 by Docker's convention) or not executable (126).
type CommandError struct {
	ExitCode int
	Err      error
}

func (e *CommandError) Error() string { return e.Err.Error() }
func (e *CommandError) Unwrap() error { return e.Err }

func commandError(err error) error {
	switch {
	case errdefs.IsNotFound(err):
		return &CommandError{ExitCode: 127, Err: err}
	case errdefs.IsPermissionDenied(err):
		return &CommandError{ExitCode: 126, Err: err}
	}
	return err
}

// guestAgent is what a run asks of the agent in its VM: an
// engine/agent.Client, whose errors are classified already.
type guestAgent interface {
	Health(ctx context.Context) (agent.Health, error)
	Restored(ctx context.Context, macs map[string]net.HardwareAddr) error
	ConfigureNetwork(ctx context.Context, ifaces []agent.Interface, routes []agent.Route) error
	CreateContainer(ctx context.Context, id string, spec *specs.Spec, storages []agent.Storage, network agent.ContainerNetwork) error
	StartContainer(ctx context.Context, id string) error
	PauseContainer(ctx context.Context, id string) error
	ResumeContainer(ctx context.Context, id string) error
	ExecProcess(ctx context.Context, p agent.Process, proc *specs.Process) error
	WaitProcess(ctx context.Context, p agent.Process) (agent.Exit, error)
	SignalProcess(ctx context.Context, p agent.Process, sig syscall.Signal) error
	WriteStdin(ctx context.Context, p agent.Process, data []byte) (int, error)
	CloseStdin(ctx context.Context, p agent.Process) error
	ReadStdout(ctx context.Context, p agent.Process, max int, offset uint64) (agent.Output, error)
	ReadStderr(ctx context.Context, p agent.Process, max int, offset uint64) (agent.Output, error)
	ResizeTty(ctx context.Context, p agent.Process, rows, cols uint16) error
	ExportChanges(ctx context.Context, id string, sincePrevious bool, w io.Writer, limit int64) (int, error)
	StatPath(ctx context.Context, id, path string) (agent.PathStat, error)
	ArchivePath(ctx context.Context, id, path string, w io.Writer, limit int64) (agent.PathStat, error)
	CopyIn(ctx context.Context, id, dir string, r io.Reader, keepOwners, noOverwriteDirNonDir bool) error
	ListProcesses(ctx context.Context, id string) ([]agent.ProcessInfo, error)
	Stats(ctx context.Context, id string) (agent.Stats, error)
	Shutdown(ctx context.Context) error
	Close() error
}

var _ guestAgent = (*agent.Client)(nil)

// task is one run of a container: its VM, agent connection, pumps and
// attached clients.
type task struct {
	svc   *Service
	c     *containers.Container
	sb    sandbox.Sandbox
	agent guestAgent

	// ctx lives as long as the task; cancel aborts every agent call.
	ctx    context.Context
	cancel context.CancelFunc

	outMu       sync.Mutex
	log         *logWriter    // guarded by outMu; nil if the log could not be written
	attached    []*Attachment // guarded by outMu
	outputEnded bool          // guarded by outMu
	// outputDone is closed once every output byte is logged and delivered.
	outputDone     chan struct{}
	outputDoneOnce sync.Once
	stdinCh        chan *Attachment // clients offering stdin, in order
	// resume is where the container's output pumps start, by Stream: zero
	// for a new run, what the log already holds for an adopted one.
	resume [3]uint64

	ready chan struct{} // closed once boot succeeded: sb and agent are set
	done  chan struct{} // closed once the exit is recorded and the VM is gone
	exit  ExitStatus    // valid after done

	// execs are the processes added by exec, by exec ID; they go away with
	// the run. Guarded by svc.mu.
	execs map[string]*execProcess

	destroyOnce sync.Once

	// restartCount is the run's State.RestartCount; manualStop is set by a
	// user's stop or kill, so the restart policy leaves the container be.
	restartCount int
	manualStop   atomic.Bool
	// paused is set while the VM is frozen (pause.go).
	paused atomic.Bool
}

// Start boots the container's VM, creates and starts the container in it,
// and connects stdio (in addition to clients attached before, see Attach).
// It returns once the container's process runs; the exit is recorded in
// the background (see Wait). On error the VM is gone and the container is
// back in its previous state with State.Error set.
//
// The stdio given here is bound to this run only, and its stdin's EOF
// closes the container's stdin: the caller owns the container's terminal.
func (s *Service) Start(ctx context.Context, ref string, stdio Stdio) error {
	return s.start(ctx, ref, stdio, -1)
}

// start is Start by a user (restartCount -1: the restart policy's count
// and back-off start over, and a stop by a user is forgotten), or by the
// container's restart policy, as its restartCount-th restart.
func (s *Service) start(ctx context.Context, ref string, stdio Stdio, restartCount int) error {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	if restartCount < 0 {
		s.cancelRestart(c.ID)
		restartCount = 0
	}
	s.reconcile(c)
	if err := c.State.Status.CanStart(); err != nil {
		return fmt.Errorf("cannot start container %s: %w", c.Name, err)
	}
	log, err := openLog(filepath.Join(s.cfg.Store.Dir(c.ID), logFileName), [3]uint64{}, s.logLimits(c))
	if err != nil {
		return err
	}
	s.mu.Lock()
	if _, busy := s.tasks[c.ID]; busy || s.maint[c.ID] {
		s.mu.Unlock()
		log.close()
		if !busy {
			return errs.New(errdefs.ErrConflict, "cannot start container %s: its files are being read or written (a commit, diff, export or cp)", c.Name)
		}
		return errs.New(errdefs.ErrConflict, "cannot start container %s: it is already starting", c.Name)
	}
	t := &task{
		svc: s, c: c, ready: make(chan struct{}), done: make(chan struct{}), log: log,
		outputDone: make(chan struct{}), stdinCh: make(chan *Attachment, 16), restartCount: restartCount,
	}
	// The task context exists before the task is visible to Remove.
	t.ctx, t.cancel = context.WithCancel(context.Background())
	s.tasks[c.ID] = t
	// Clients attached while the container was stopped belong to this run.
	pending := s.pending[c.ID]
	delete(s.pending, c.ID)
	if stdio.Stdin != nil || stdio.Stdout != nil || stdio.Stderr != nil {
		a := &Attachment{stdout: stdio.Stdout, stderr: stdio.Stderr, stdinOnce: true, done: make(chan struct{})}
		if c.Config.OpenStdin {
			a.stdin = stdio.Stdin
		}
		if c.Config.Tty {
			a.stderr = nil
		}
		pending = append(pending, a)
	}
	for _, a := range pending {
		t.addAttachment(a)
	}
	s.mu.Unlock()

	if err := t.boot(ctx); err != nil {
		t.destroy()
		t.endOutput()
		c.State.Error = err.Error()
		// --rm: a container whose start failed goes too, as under dockerd,
		// so that a client waiting for its removal is not left waiting.
		removed := c.Config.AutoRemove && s.autoRemove(c)
		if !removed {
			s.cfg.Store.Update(c)
		}
		s.mu.Lock()
		delete(s.tasks, c.ID)
		if removed {
			s.forgetLocked(c.ID)
		}
		s.mu.Unlock()
		if removed {
			s.publish("destroy", c, nil)
		}
		close(t.done)
		s.notify()
		return err
	}
	close(t.ready)
	s.notify()
	s.publish("start", c, nil)
	check := t.c.Config.Healthcheck
	go t.run()
	go t.watchHealth(check)
	return nil
}

// prepareStart returns the driver for the hypervisor recorded at the
// container's create, without choosing again. A record of an earlier
// version gets what its create did not record (the hypervisor choice, the
// image disk, the spec) now, once; so does an image disk that went
// missing from the cache. The caller stores them with the start's outcome.
func (s *Service) prepareStart(ctx context.Context, c *containers.Container) (sandbox.Driver, error) {
	cfg := &c.Config
	if cfg.Accel == "" {
		choice, err := s.cfg.ChooseDriver(firstNonEmpty(cfg.Hypervisor, "auto"))
		if err != nil {
			return nil, err
		}
		cfg.Hypervisor, cfg.Accel = choice.Driver, choice.Accel
	}
	drv, err := s.cfg.OpenDriver(sandbox.Choice{Driver: cfg.Hypervisor, Accel: cfg.Accel})
	if err != nil {
		return nil, fmt.Errorf("cannot start container %s (created for hypervisor %s): %w", displayName(c), cfg.Hypervisor, err)
	}
	if cfg.Spec == nil {
		if cfg.Spec, err = BuildSpec(c); err != nil {
			return nil, err
		}
	}
	if !allRegular(cfg.Disks()) {
		// Never built (an earlier version's record), or pruned since.
		disks, err := s.cfg.Images.Disks(ctx, cfg.ImageID, imageDiskBudget(len(cfg.Mounts)))
		if err != nil {
			return nil, fmt.Errorf("image disk: %w", err)
		}
		cfg.ImageDisks, cfg.ImageDisk = disks, ""
	}
	return drv, nil
}

func (t *task) boot(ctx context.Context) error {
	s, c := t.svc, t.c
	drv, err := s.prepareStart(ctx, c)
	if err != nil {
		return err
	}
	vols, err := s.attachVolumes(ctx, c)
	if err != nil {
		return err
	}
	// Held until the container is recorded as running, below.
	defer vols.release()
	binds, err := attachBinds(c, sandbox.ShareFS(drv))
	if err != nil {
		return err
	}
	var plumbing Plumbing
	if s.cfg.Network != nil {
		// Unplumbed by destroy, whatever happens from here on.
		if plumbing, err = s.cfg.Network.Plumb(ctx, c.ID); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	vcpus, mem := vmShape(c.Config)
	console := s.ConsoleLog(c.ID)
	os.Remove(console)
	sb, restored, err := s.startVM(ctx, drv, c, sandbox.Config{
		ID:        c.ShortID(),
		Kernel:    s.cfg.Kernel,
		Initrd:    s.cfg.Initrd,
		VCPUs:     vcpus,
		MemoryMiB: mem,
		Disks: append(append(imageSandboxDisks(c),
			sandbox.Disk{Path: s.writableDisk(c.ID), Serial: contract.WritableDiskSerial},
		), vols.disks...),
		Shares:     binds.shares,
		NICs:       plumbing.NICs,
		StateDir:   filepath.Join(s.cfg.ExecRoot, c.ShortID()),
		ConsoleLog: console,
	})
	if err != nil {
		return err
	}
	t.sb = sb

	bootCtx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancel()
	// A VM that dies during boot must fail the start at once, not at the
	// boot timeout.
	go func() {
		if exit, err := sb.Wait(bootCtx); err == nil {
			_ = exit
			cancel()
		}
	}()
	conn, err := sb.DialAgent(bootCtx)
	if err != nil {
		return t.bootError("connect to the guest agent", err)
	}
	t.agent = s.newAgent(conn)
	if _, err := t.agent.Health(bootCtx); err != nil {
		return t.bootError("wait for the guest agent", err)
	}
	if restored {
		if err := t.agent.Restored(bootCtx, restoredMACs(plumbing.NICs)); err != nil {
			return t.bootError("bring the restored guest up to date", err)
		}
	}
	if len(plumbing.Interfaces) > 0 || len(plumbing.Routes) > 0 {
		if err := t.agent.ConfigureNetwork(bootCtx, plumbing.Interfaces, plumbing.Routes); err != nil {
			return t.bootError("configure the guest's network", err)
		}
	}
	err = t.agent.CreateContainer(bootCtx, c.ID, c.Config.Spec, append(append(imageStorages(c),
		agent.Storage{Serial: contract.WritableDiskSerial, FSType: "ext4", Role: contract.RoleWritable},
	), append(vols.storages, binds.storages...)...), plumbing.containerNetwork(c.Config.Hostname))
	if err != nil {
		return commandError(err)
	}
	if err := t.agent.StartContainer(bootCtx, c.ID); err != nil {
		return commandError(err)
	}
	c.State = containers.State{
		Status: containers.StatusRunning, StartedAt: time.Now().UTC(),
		Driver: drv.Name(), Accel: c.Config.Accel, VMMPid: sb.Pid(), OwnerPid: os.Getpid(),
		RestartCount: t.restartCount,
	}
	return s.cfg.Store.Update(c)
}

// startVM starts a run's VM: from the saved state of its shape where the
// service keeps them and the container does not ask for a cold boot
// (ColdBootLabel), else booted. restored says which; a restored guest
// must be told (the agent's Restored) before anything else.
func (s *Service) startVM(ctx context.Context, drv sandbox.Driver, c *containers.Container, cfg sandbox.Config) (sandbox.Sandbox, bool, error) {
	if s.cfg.Snapshots == nil || c.Config.Labels[ColdBootLabel] == "true" {
		sb, err := drv.Start(ctx, cfg)
		return sb, false, err
	}
	return s.cfg.Snapshots.Start(ctx, drv, cfg)
}

// ColdBootLabel set to "true" on a container makes each of its runs boot
// its VM rather than start it from a saved state (docker run --label
// io.vmctl.cold-boot=true, vmctl run --cold-boot).
const ColdBootLabel = "io.vmctl.cold-boot"

// restoredMACs maps the template's NIC addresses to the run's own.
func restoredMACs(nics []sandbox.NIC) map[string]net.HardwareAddr {
	macs := map[string]net.HardwareAddr{}
	for i, n := range nics {
		macs[sandbox.TemplateMAC(i).String()] = n.MAC
	}
	return macs
}

// bootError explains a failed boot, pointing at the console log when the VM died.
func (t *task) bootError(what string, err error) error {
	waitCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if exit, werr := t.sb.Wait(waitCtx); werr == nil {
		msg := fmt.Sprintf("the VM ended during boot (%s: %s)", exit.Reason, exit.Detail)
		if tail := lastLines(t.svc.ConsoleLog(t.c.ID), 1); tail != "" {
			msg += "; last console line: " + tail
		}
		return errs.New(errdefs.ErrUnavailable, "%s: %s", what, msg)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return errs.New(errdefs.ErrUnavailable, "%s: no answer within %s (guest console: %s)", what, t.svc.cfg.BootTimeout, t.svc.ConsoleLog(t.c.ID))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// run carries stdio until the process exits, then records the exit, stops
// the VM and releases everything.
func (t *task) run() {
	var pumps sync.WaitGroup
	pump := func(read agent.ReadFunc, stream Stream) {
		defer pumps.Done()
		t.pumpOutput(t.ctx, "", read, t.resume[stream], func(b []byte) { t.output(stream, b) })
	}
	pumps.Add(1)
	go pump(t.agent.ReadStdout, StreamStdout)
	if !t.c.Config.Tty {
		pumps.Add(1)
		go pump(t.agent.ReadStderr, StreamStderr)
	}
	if t.c.Config.OpenStdin {
		go t.pumpStdin()
	} else {
		t.closeStdinNow(t.ctx)
	}

	exit := ExitStatus{}
	end, err := t.agent.WaitProcess(t.ctx, t.process(""))
	if err != nil {
		exit.Code = 255
		exit.Error = "lost the container: " + err.Error()
		waitCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		if vmExit, werr := t.sb.Wait(waitCtx); werr == nil {
			exit.Error = fmt.Sprintf("the VM ended unexpectedly (%s: %s)", vmExit.Reason, vmExit.Detail)
		}
		cancel()
	} else {
		exit.Code = end.Status
		exit.OOMKilled = end.OOMKilled
	}

	// Output written just before the exit is still in flight; give the
	// pumps a moment to reach EOF, but never hang on a stuck guest.
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
	}
	t.endOutput()
	if t.disposable() {
		t.destroy()
	} else {
		t.shutdown()
	}

	t.exit = exit
	c := t.c
	c.State.Status = containers.StatusExited
	c.State.FinishedAt = time.Now().UTC()
	c.State.ExitCode = exit.Code
	c.State.OOMKilled = exit.OOMKilled
	c.State.Error = exit.Error
	c.State.VMMPid, c.State.OwnerPid = 0, 0
	c.State.ManuallyStopped = t.manualStop.Load()
	c.State.Paused = false
	s := t.svc
	if cur, err := s.cfg.Store.Get(c.ID); err == nil {
		// Renamed or updated (its restart policy) while it ran.
		c.Name, c.Config = cur.Name, cur.Config
	}
	s.mu.Lock()
	// The exit is recorded before the removal so that a "removed" waiter
	// finds the status.
	s.exitRecord(c.ID).record(exit)
	s.mu.Unlock()
	s.publishExit(c, exit)
	removed := c.Config.AutoRemove && s.autoRemove(c)
	if !removed {
		s.cfg.Store.Update(c)
	}
	s.mu.Lock()
	delete(s.tasks, c.ID)
	if removed {
		s.forgetLocked(c.ID)
	}
	s.mu.Unlock()
	if removed {
		s.publish("destroy", c, nil)
	} else {
		s.afterExit(c, exit.Code, c.State.FinishedAt.Sub(c.State.StartedAt))
	}
	close(t.done)
	s.notify()
}

// disposable says whether nothing the VM wrote outlives the run: a --rm
// container whose disks are its writable layer (removed with it) and
// anonymous volumes (removed with it too), with no named volume and no
// bind mount. Its guest need not unmount and sync before the VM is ended
// (about 90 ms of a run's exit under emulation). Should the removal fail,
// the kept writable layer is as after a power loss: ext4's journal
// recovers it at its next mount.
func (t *task) disposable() bool {
	cfg := t.c.Config
	if !cfg.AutoRemove || len(cfg.Binds) > 0 {
		return false
	}
	for _, m := range cfg.Mounts {
		if !m.Anonymous {
			return false
		}
	}
	return true
}

// shutdown asks the agent to end the guest cleanly: it removes the
// container, syncs and unmounts every filesystem, and only then replies. From
// that reply on, the writable disk is consistent on the host, so the VM is
// ended at once rather than after the guest's own reboot.
func (t *task) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := t.agent.Shutdown(ctx); err != nil {
		// No clean unmount: give the guest a moment in case it is
		// shutting down on its own, then end it.
		waitCtx, cancelWait := context.WithTimeout(context.Background(), time.Second)
		t.sb.Wait(waitCtx)
		cancelWait()
	}
	t.destroy()
}

// destroy kills the VM if it runs and frees every host resource, the
// run's network included. Idempotent.
func (t *task) destroy() {
	t.destroyOnce.Do(func() {
		if t.cancel != nil {
			t.cancel()
		}
		if t.agent != nil {
			t.agent.Close()
		}
		if t.sb != nil {
			t.sb.Destroy()
		}
		if n := t.svc.cfg.Network; n != nil {
			ctx, cancel := context.WithTimeout(context.Background(), unplumbTimeout)
			// A failure leaves taps or rules the network service sweeps
			// at its next Restore; the run has ended either way.
			_ = n.Unplumb(ctx, t.c.ID)
			cancel()
		}
	})
}

// booted reports whether the agent can be called; before that the run
// only has a VM in boot.
func (t *task) booted() error {
	select {
	case <-t.ready:
		return nil
	default:
		return errs.New(errdefs.ErrConflict, "container %s is starting", t.c.Name)
	}
}

func (t *task) signal(ctx context.Context, sig syscall.Signal) error {
	if err := t.booted(); err != nil {
		return err
	}
	return t.agent.SignalProcess(ctx, t.process(""), sig)
}

func (t *task) resize(ctx context.Context, rows, cols uint16) error {
	if err := t.booted(); err != nil {
		return err
	}
	return t.agent.ResizeTty(ctx, t.process(""), rows, cols)
}

// process addresses a process of this run: the container's own for an
// empty execID.
func (t *task) process(execID string) agent.Process {
	return agent.Process{ContainerID: t.c.ID, ExecID: execID}
}

// pumpOutput reads one output stream of a process (execID "" is the
// container's own) from stream offset from until its EOF or the end of ctx
// (the run's, or an exec's), handing each chunk to deliver
// (agent.PumpOutput).
func (t *task) pumpOutput(ctx context.Context, execID string, read agent.ReadFunc, from uint64, deliver func([]byte)) {
	agent.PumpOutput(ctx, read, t.process(execID), ioChunk, from, deliver)
}
