package containersvc

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// ExecOptions is what docker exec asks for.
type ExecOptions struct {
	Cmd        []string
	Env        []string // KEY=VALUE, over the container's environment
	WorkingDir string   // "": the container's
	User       string   // "": the container's; user[:group], names resolved in the container
	Tty        bool
	// Attach* say which streams the client connects at start; stdin of a
	// process without AttachStdin is closed at once.
	AttachStdin, AttachStdout, AttachStderr bool
	ConsoleRows, ConsoleCols                uint16
	// DetachKeys are the keys that detach a client from a process with a
	// terminal (docker exec --detach-keys; "" for ctrl-p,ctrl-q).
	DetachKeys string
	// Privileged gives the process every capability (docker exec
	// --privileged); the container's seccomp filter and devices stay, as
	// under Docker.
	Privileged bool
}

// ExecInfo is what ExecInspect reports.
type ExecInfo struct {
	ID          string
	ContainerID string
	Options     ExecOptions
	Running     bool
	// ExitCode is nil until the process has ended, and stays nil if it
	// never reached the guest; a command the guest could not run has 127
	// (not found) or 126 (not executable).
	ExitCode *int
}

// execProcess is one exec instance: created, then started once, then ended.
type execProcess struct {
	id string
	t  *task // the run it belongs to; the record goes away with it

	mu       sync.Mutex
	opts     ExecOptions // guarded by mu (resize before start updates the size)
	started  bool        // guarded by mu
	running  bool        // guarded by mu
	exitCode *int        // guarded by mu
	ended    time.Time   // guarded by mu; zero while not ended
	agentRun bool        // guarded by mu: the agent knows the process

	done chan struct{} // closed once the process has ended and its output is delivered
	// detached is closed when the attached client typed the detach keys
	// (its stdin returned ErrDetached): the process runs on, unattached.
	detached     chan struct{}
	detachedOnce sync.Once
	// sized is closed at the first resize before the start.
	sized     chan struct{}
	sizedOnce sync.Once
}

// ExecCreate records a process to run in a running container and returns
// its ID. Nothing runs until ExecStart.
func (s *Service) ExecCreate(ref string, o ExecOptions) (string, error) {
	if len(o.Cmd) == 0 || o.Cmd[0] == "" {
		return "", errs.New(errdefs.ErrInvalidArgument, "no exec command specified")
	}
	t, err := s.running(ref)
	if err != nil {
		return "", err
	}
	if err := t.booted(); err != nil {
		return "", err
	}
	if err := refusePaused(t); err != nil {
		return "", err
	}
	// Catch bad input (user, working directory, environment) now: the
	// client learns it from create rather than from a failed start.
	if _, err := execSpec(t.c, o); err != nil {
		return "", err
	}
	p := &execProcess{id: containers.NewID(), t: t, opts: o, done: make(chan struct{}), sized: make(chan struct{}), detached: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tasks[t.c.ID] != t {
		return "", errs.New(errdefs.ErrConflict, "container %s is not running", t.c.Name)
	}
	if t.execs == nil {
		t.execs = map[string]*execProcess{}
	}
	t.pruneExecsLocked(time.Now())
	t.execs[p.id] = p
	s.publish("exec_create: "+strings.Join(o.Cmd, " "), t.c, map[string]string{"execID": p.id})
	return p.id, nil
}

// sizeWait bounds the wait for the terminal size of an interactive exec.
const sizeWait = time.Second

// execKeep is how long an ended exec stays inspectable. Clients read the
// exit code right after the end; without a bound, a long-running container
// that is exec'ed into periodically would grow its records forever.
const execKeep = 5 * time.Minute

// pruneExecsLocked drops the records of execs that ended more than
// execKeep before now. Precondition: t.svc.mu is held.
func (t *task) pruneExecsLocked(now time.Time) {
	for id, p := range t.execs {
		p.mu.Lock()
		old := !p.ended.IsZero() && now.Sub(p.ended) > execKeep
		p.mu.Unlock()
		if old {
			delete(t.execs, id)
		}
	}
}

// exec finds an exec instance among the running containers.
func (s *Service) exec(id string) (*execProcess, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tasks {
		if p := t.execs[id]; p != nil {
			return p, nil
		}
	}
	return nil, errs.New(errdefs.ErrNotFound, "No such exec instance: %s", id)
}

// ExecInspect reports an exec instance's state.
func (s *Service) ExecInspect(id string) (ExecInfo, error) {
	p, err := s.exec(id)
	if err != nil {
		return ExecInfo{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	info := ExecInfo{ID: p.id, ContainerID: p.t.c.ID, Options: p.opts, Running: p.running}
	if p.exitCode != nil {
		code := *p.exitCode
		info.ExitCode = &code
	}
	return info, nil
}

// ExecResize sets the size of the exec's terminal. Before the start it
// sets the initial size instead: the docker CLI may resize before its start
// request reaches the guest.
func (s *Service) ExecResize(ctx context.Context, id string, rows, cols uint16) error {
	p, err := s.exec(id)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if !p.opts.Tty {
		p.mu.Unlock()
		return errs.New(errdefs.ErrInvalidArgument, "exec %s has no terminal to resize", id)
	}
	if !p.agentRun {
		p.opts.ConsoleRows, p.opts.ConsoleCols = rows, cols
		p.mu.Unlock()
		p.sizedOnce.Do(func() { close(p.sized) })
		return nil
	}
	p.mu.Unlock()
	return p.t.agent.ResizeTty(ctx, p.t.process(p.id), rows, cols)
}

// ExecStart runs the exec's process. Without detach it carries stdio (nil
// members are not attached) and returns once the process has ended and its
// output is delivered; cancelling ctx then kills the process, as dockerd
// does when its client goes away, and a guest that does not report its
// end within killGrace of the kill is not waited for: the exit is
// recorded as the kill's (137). With detach it returns once the process
// runs, and its output is discarded.
//
// A command that cannot be run returns a *CommandError and records exit
// code 127 (not found) or 126 (not executable), as Docker does.
func (s *Service) ExecStart(ctx context.Context, id string, stdio Stdio, detach bool) error {
	p, err := s.exec(id)
	if err != nil {
		return err
	}
	if err := refusePaused(p.t); err != nil {
		return err
	}
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errs.New(errdefs.ErrConflict, "exec %s has already been started", id)
	}
	p.started = true
	o := p.opts
	p.mu.Unlock()
	if o.Tty && o.AttachStdin && !detach && (o.ConsoleRows == 0 || o.ConsoleCols == 0) {
		// API 1.41 has no size in exec create: the docker CLI sends it by
		// a resize right after the start's response, and -it always has a
		// terminal to take it from. Wait briefly for it, so the process
		// starts with its size instead of 0x0.
		select {
		case <-p.sized:
		case <-time.After(sizeWait):
		case <-ctx.Done():
		}
		p.mu.Lock()
		o = p.opts
		p.mu.Unlock()
	}

	t := p.t
	if s.task(t.c.ID) != t {
		p.finish(nil)
		return errs.New(errdefs.ErrConflict, "container %s is not running", t.c.Name)
	}
	spec, err := execSpec(t.c, o)
	if err != nil {
		p.finish(nil)
		return err
	}
	proc := t.process(p.id)
	if err := t.agent.ExecProcess(ctx, proc, spec); err != nil {
		err = commandError(err)
		code := 126 // Docker's status for an exec that could not start
		var ce *CommandError
		if errors.As(err, &ce) {
			code = ce.ExitCode
		}
		p.finish(&code)
		return err
	}
	s.publish("exec_start: "+strings.Join(o.Cmd, " "), t.c, map[string]string{"execID": p.id})
	// Created --ExecProcess--> Running
	p.mu.Lock()
	p.running, p.agentRun = true, true
	rows, cols := p.opts.ConsoleRows, p.opts.ConsoleCols
	p.mu.Unlock()
	if o.Tty && (rows != o.ConsoleRows || cols != o.ConsoleCols) {
		// A resize arrived while the process was being started: it was
		// stored after the size above was read, so apply it now.
		t.agent.ResizeTty(ctx, proc, rows, cols)
	}

	// The process's own calls (its wait, output and stdin) last as long
	// as the run, or until a cancelled start gives up on it (below).
	pctx, abandon := context.WithCancel(t.ctx)
	if detach {
		go func() {
			defer abandon()
			p.carry(pctx, Stdio{})
		}()
		return nil
	}
	ended := make(chan struct{})
	defer close(ended)
	// Closed when ctx ended, SIGKILL was sent, and the process still had
	// not ended killGrace later: the guest does not answer.
	unanswered := make(chan struct{})
	grace := killGrace
	go func() {
		select {
		case <-ctx.Done():
		case <-ended:
			return
		}
		killCtx, cancel := context.WithTimeout(context.Background(), grace)
		t.agent.SignalProcess(killCtx, proc, syscall.SIGKILL)
		cancel()
		select {
		case <-ended:
		case <-time.After(grace):
			close(unanswered)
		}
	}()
	// The client's output stops at a detach; the process goes on, as a
	// detached start's does, and its exit is recorded.
	gate := &detachGate{}
	stdio.Stdout, stdio.Stderr = gate.wrap(stdio.Stdout), gate.wrap(stdio.Stderr)
	carried := make(chan struct{})
	go func() {
		defer close(carried)
		defer abandon()
		p.carry(pctx, stdio)
	}()
	select {
	case <-carried:
	case <-p.detached:
		gate.close()
	case <-unanswered:
		// Neither the caller (a client gone, a health probe's timeout) nor
		// the run waits on such a guest: the process's calls are abandoned
		// and its exit recorded as the kill's.
		gate.close()
		abandon()
		<-carried
	}
	return nil
}

// detachGate drops a detached client's output.
type detachGate struct {
	mu     sync.Mutex
	closed bool
}

func (g *detachGate) wrap(w io.Writer) io.Writer {
	if w == nil {
		return nil
	}
	return gatedWriter{g: g, w: w}
}

func (g *detachGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type gatedWriter struct {
	g *detachGate
	w io.Writer
}

func (w gatedWriter) Write(b []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	if w.g.closed {
		return len(b), nil
	}
	return w.w.Write(b)
}

// carry pumps the process's stdio until it exits or ctx ends, then records
// its exit. A stdin reader still blocked when the process ends is left to
// its owner, who ends it by closing the connection it reads from.
func (p *execProcess) carry(ctx context.Context, stdio Stdio) {
	t := p.t
	proc := t.process(p.id)
	if p.opts.Tty {
		stdio.Stderr = nil // a terminal carries everything on stdout
	}
	if p.opts.AttachStdin && stdio.Stdin != nil {
		go p.pumpStdin(ctx, stdio)
	} else {
		t.agent.CloseStdin(ctx, proc)
	}

	var pumps sync.WaitGroup
	pump := func(read agent.ReadFunc, w io.Writer) {
		defer pumps.Done()
		failed := false
		t.pumpOutput(ctx, p.id, read, 0, func(b []byte) {
			// After a client's connection failed, keep draining so the
			// process does not block on a full pipe; drop the rest.
			if w != nil && !failed {
				if _, err := w.Write(b); err != nil {
					failed = true
				}
			}
		})
	}
	pumps.Add(1)
	go pump(t.agent.ReadStdout, stdio.Stdout)
	if !p.opts.Tty {
		pumps.Add(1)
		go pump(t.agent.ReadStderr, stdio.Stderr)
	}

	// If the wait fails, the container's run ended and its VM is gone:
	// the process was killed with it; or it was sent SIGKILL and the
	// guest did not answer (ExecStart abandoned it).
	code := 128 + int(syscall.SIGKILL)
	if end, err := t.agent.WaitProcess(ctx, proc); err == nil {
		code = end.Status
	}
	// As for the container's own process: output written just before the
	// exit is still in flight, but a stuck guest must not hang the client.
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
	}
	p.finish(&code)
}

// pumpStdin copies the client's stdin to the process and closes the
// process's stdin at the client's EOF.
func (p *execProcess) pumpStdin(ctx context.Context, stdio Stdio) {
	t := p.t
	proc := t.process(p.id)
	buf := make([]byte, ioChunk)
	for {
		n, err := stdio.Stdin.Read(buf)
		if n > 0 {
			if _, werr := t.agent.WriteStdin(ctx, proc, buf[:n]); werr != nil {
				return // the process has ended or the run is gone
			}
		}
		if errors.Is(err, ErrDetached) {
			// The process keeps its stdin open, as docker leaves it.
			p.detachedOnce.Do(func() { close(p.detached) })
			return
		}
		if err != nil {
			break
		}
	}
	t.agent.CloseStdin(ctx, proc)
}

// finish records the end. code nil means the process never ran and has no
// exit code (dockerd reports null then).
func (p *execProcess) finish(code *int) {
	p.mu.Lock()
	// Running --exit--> Ended
	p.running = false
	p.exitCode = code
	p.ended = time.Now()
	started := p.started
	p.mu.Unlock()
	if started && code != nil {
		p.t.svc.publish("exec_die", p.t.c, map[string]string{"execID": p.id, "exitCode": strconv.Itoa(*code)})
	}
	close(p.done)
}

// execSpec builds the OCI process for an exec: the command, the container's
// environment with the exec's on top, and the exec's user and working
// directory or else the container's.
func execSpec(c *containers.Container, o ExecOptions) (*specs.Process, error) {
	env, err := MergeEnv(c.Config.Env, o.Env, c.Config.Hostname, o.Tty)
	if err != nil {
		return nil, err
	}
	user := firstNonEmpty(o.User, c.Config.User)
	uid, gid, username, err := ParseUser(user)
	if err != nil {
		return nil, err
	}
	cwd := firstNonEmpty(o.WorkingDir, firstNonEmpty(c.Config.WorkingDir, "/"))
	if !strings.HasPrefix(cwd, "/") {
		return nil, errs.New(errdefs.ErrInvalidArgument, "working directory %q must be absolute", cwd)
	}
	proc := &specs.Process{
		Terminal: o.Tty,
		User:     specs.User{UID: uid, GID: gid, Username: username},
		Args:     append([]string(nil), o.Cmd...),
		Env:      env,
		Cwd:      cwd,
		// An exec is confined as the container's own processes are.
		Capabilities:    &specs.LinuxCapabilities{Bounding: capSet(c.Config.Security)},
		NoNewPrivileges: c.Config.Security.NoNewPrivileges,
	}
	if o.Privileged {
		proc.Capabilities.Bounding = slices.Clone(contract.Capabilities)
	}
	if adj := c.Config.Security.OOMScoreAdj; adj != 0 {
		proc.OOMScoreAdj = &adj
	}
	if o.Tty && o.ConsoleRows > 0 && o.ConsoleCols > 0 {
		proc.ConsoleSize = &specs.Box{Height: uint(o.ConsoleRows), Width: uint(o.ConsoleCols)}
	}
	return proc, nil
}

// ExportChanges writes what the container changed in its root file
// system to w as an OCI layer tar, read out of the guest by its agent (the
// host never mounts what a guest wrote; a container that is not running
// gets a maintenance boot): everything, or with sincePrevious what changed
// since the previous export of this run. At most limit bytes. It returns
// the number of tar entries (0: nothing changed).
func (s *Service) ExportChanges(ctx context.Context, ref string, sincePrevious bool, w io.Writer, limit int64) (n int, err error) {
	err = s.withAgent(ctx, ref, func(a guestAgent, id string) error {
		n, err = a.ExportChanges(ctx, id, sincePrevious, w, limit)
		return err
	})
	return n, err
}

// PathStat describes a path of a container's root file system.
type PathStat = agent.PathStat

// MaxCopy caps what one copy out of a container sends.
var MaxCopy int64 = 16 << 30

// StatPath describes a path of the container's root file system,
// resolved inside it (docker cp's stat).
func (s *Service) StatPath(ctx context.Context, ref, path string) (st PathStat, err error) {
	err = s.withAgent(ctx, ref, func(a guestAgent, id string) error {
		st, err = a.StatPath(ctx, id, path)
		return err
	})
	return st, err
}

// ArchivePath writes a tar of a path of the container's root file system
// to the writer open gives it once the path is known to exist (docker cp
// sends the path's description before the tar), in one boot of a
// container that is not running.
func (s *Service) ArchivePath(ctx context.Context, ref, path string, open func(PathStat) io.Writer) error {
	return s.withAgent(ctx, ref, func(a guestAgent, id string) error {
		st, err := a.StatPath(ctx, id, path)
		if err != nil {
			return err
		}
		_, err = a.ArchivePath(ctx, id, path, open(st), MaxCopy)
		return err
	})
}

// CopyIn unpacks the tar r into the directory dir of the container's root
// file system; without keepOwners root owns what it makes.
func (s *Service) CopyIn(ctx context.Context, ref, dir string, r io.Reader, keepOwners, noOverwriteDirNonDir bool) error {
	return s.withAgent(ctx, ref, func(a guestAgent, id string) error {
		return a.CopyIn(ctx, id, dir, r, keepOwners, noOverwriteDirNonDir)
	})
}
