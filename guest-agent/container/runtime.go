// Package container runs OCI containers inside the guest: one init process
// per container in new namespaces, a cgroup v2 directory with the spec's
// limits, a private /dev and the spec's mounts on a prepared rootfs, and
// extra processes exec'd into running containers.
//
// The init is a re-exec of the agent binary (InitArg): it builds the mounts,
// pivots into the rootfs, reports "ready" and blocks until Start, then execs
// the user's command, which so becomes PID 1 of the container. An exec is a
// re-exec too, started from the agent's own root into the container's
// cgroup and PID namespace: it joins the container's mount namespace and
// execs the process. Both install the spec's seccomp filter last, so the
// agent itself never forks under one. Exit statuses come from the
// agent-wide reaper, never from exec.Cmd.Wait.
//
// The package does not mount disks or build the rootfs (see storage), and
// does not speak the agent protocol (see service).
package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/reaper"
	"github.com/vmctl/vmctl/guest-agent/seccomp"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// Config configures a Runtime.
type Config struct {
	// Reaper collects exit statuses; it must be running.
	Reaper *reaper.Reaper
	// CgroupRoot is a cgroup v2 directory with the controllers the limits
	// need enabled in its cgroup.subtree_control. Default /sys/fs/cgroup.
	CgroupRoot string
	// DevPts is the guest's devpts, bound into every container. Default
	// /dev/pts.
	DevPts string
	// Exe is the binary re-executed as the container init; it must call
	// InitMain when its first argument is InitArg. Default /proc/self/exe.
	Exe string
	// SetupTimeout bounds how long the init may take to report ready.
	// Default 30s (the guest may be emulated).
	SetupTimeout time.Duration
}

// Runtime tracks the guest's containers.
type Runtime struct {
	cfg Config

	mu         sync.Mutex // guards containers and creating
	containers map[string]*Container
	// creating reserves the IDs of containers being created; they are not
	// visible to other calls until Create has finished.
	creating map[string]bool
}

// State is a container's lifecycle state.
type State int

const (
	// Created: the init is set up and waits for Start.
	Created State = iota
	// Running: the user's command runs (or ran: see Process.Exited).
	Running
)

// Container is one container.
type Container struct {
	ID   string
	spec *specs.Spec
	// filter is the spec's seccomp filter, for the init and every exec;
	// nil for none.
	filter *seccomp.Filter
	cg     *cgroup

	mu    sync.Mutex // guards state, procs, sync
	state State
	init  *Process
	procs map[string]*Process
	sync  net.Conn // to the init until it execs
}

// New returns a runtime.
func New(cfg Config) (*Runtime, error) {
	if cfg.Reaper == nil {
		return nil, errors.New("container: a reaper is required")
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if cfg.DevPts == "" {
		cfg.DevPts = "/dev/pts"
	}
	if cfg.Exe == "" {
		cfg.Exe = "/proc/self/exe"
	}
	if cfg.SetupTimeout == 0 {
		cfg.SetupTimeout = 30 * time.Second
	}
	return &Runtime{cfg: cfg, containers: make(map[string]*Container), creating: make(map[string]bool)}, nil
}

// Get returns a container.
func (r *Runtime) Get(id string) (*Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	if !ok {
		return nil, errorf(ErrNotFound, "container %q not found", id)
	}
	return c, nil
}

// IDs lists the containers.
func (r *Runtime) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id := range r.containers {
		ids = append(ids, id)
	}
	return ids
}

// Create starts the container's init on rootfs (a prepared directory) and
// waits until it is ready to exec the user's command.
func (r *Runtime) Create(ctx context.Context, id string, valid ValidSpec, rootfs string) (err error) {
	if err := validID(id); err != nil {
		return err
	}
	spec := valid.spec
	if spec == nil {
		return errorf(ErrInvalid, "spec is missing")
	}
	c := &Container{ID: id, spec: spec, filter: valid.filter, procs: make(map[string]*Process)}
	r.mu.Lock()
	if _, ok := r.containers[id]; ok || r.creating[id] {
		r.mu.Unlock()
		return errorf(ErrExists, "container %q already exists", id)
	}
	r.creating[id] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.creating, id)
		if err == nil {
			r.containers[id] = c
		}
		r.mu.Unlock()
	}()

	c.cg, err = newCgroup(r.cfg.CgroupRoot, id, spec.Linux.Resources)
	if err != nil {
		return err
	}
	trace.Step("create: cgroup made")
	if err := r.startInit(ctx, c, rootfs); err != nil {
		c.cg.kill()
		if c.init != nil {
			waitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c.init.Wait(waitCtx)
			cancel()
			c.init.io.close()
		}
		c.cg.remove()
		return err
	}
	return nil
}

func (r *Runtime) startInit(ctx context.Context, c *Container, rootfs string) error {
	io, err := newStdio(c.spec.Process.Terminal, c.spec.Process.ConsoleSize)
	if err != nil {
		return err
	}
	sock, childEnd, err := syncPair()
	if err != nil {
		io.close()
		return err
	}

	cmd := &exec.Cmd{
		Path:       r.cfg.Exe,
		Args:       []string{"vmctl-init", InitArg},
		Env:        []string{},
		Stdin:      io.child[0],
		Stdout:     io.child[1],
		Stderr:     io.child[2],
		ExtraFiles: []*os.File{childEnd},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  cloneFlags(c.spec),
			Setsid:      true,
			Setctty:     c.spec.Process.Terminal,
			Ctty:        0,
			UseCgroupFD: true,
			CgroupFD:    c.cg.fd(),
		},
	}
	p := newProcess("", io, c.cg)
	_, ch, err := r.cfg.Reaper.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	childEnd.Close()
	io.closeChild()
	if err != nil {
		sock.Close()
		io.close()
		return fmt.Errorf("start container init: %w", err)
	}
	p.Pid, p.proc = cmd.Process.Pid, cmd.Process
	p.watch(ch)
	trace.Step("create: init forked")
	c.init = p
	c.sync = sock

	deadline := time.Now().Add(r.cfg.SetupTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	sock.SetDeadline(deadline)
	cfg := initConfig{Rootfs: rootfs, DevPts: r.cfg.DevPts, Spec: c.spec, Trace: trace.Enabled(), Pause: pauses(c.spec), Reap: reaps(c.spec),
		GroupAdd: groupAdd(c.spec), Privileged: privileged(c.spec), Filter: c.filter}
	if err := writeSync(sock, syncMsg{Type: msgConfig, Cfg: cfg}); err != nil {
		sock.Close()
		return fmt.Errorf("send config to container init: %w", err)
	}
	msg, err := readSync(sock)
	if err != nil {
		sock.Close()
		return fmt.Errorf("container init did not report ready: %w", err)
	}
	trace.Add(msg.Mark...)
	trace.Step("create: init ready")
	if msg.Type == msgError {
		sock.Close()
		return kindError(msg.Kind, msg.Msg)
	}
	if msg.Type != msgReady {
		sock.Close()
		return fmt.Errorf("container init sent %q instead of ready", msg.Type)
	}
	sock.SetDeadline(time.Time{})
	return nil
}

// syncPair makes the sync socket of a re-exec of the agent: the agent's
// end, and the child's, which the caller passes as ExtraFiles[0] (syncFd)
// and closes once the child is started.
func syncPair() (net.Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create sync socket: %w", err)
	}
	parentEnd := os.NewFile(uintptr(fds[0]), "sync")
	childEnd := os.NewFile(uintptr(fds[1]), "sync-child")
	sock, err := net.FileConn(parentEnd)
	parentEnd.Close()
	if err != nil {
		childEnd.Close()
		return nil, nil, fmt.Errorf("sync socket: %w", err)
	}
	return sock, childEnd, nil
}

// Start lets the init exec the user's command, and returns once the exec
// succeeded or failed.
func (r *Runtime) Start(ctx context.Context, id string) error {
	c, err := r.Get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != Created || c.sync == nil {
		return errorf(ErrState, "container %q is already started", id)
	}
	c.state = Running
	sock := c.sync
	c.sync = nil
	defer sock.Close()
	if d, ok := ctx.Deadline(); ok {
		sock.SetDeadline(d)
	}
	if err := writeSync(sock, syncMsg{Type: msgStart}); err != nil {
		return fmt.Errorf("start container %q: %w", id, err)
	}
	trace.Step("start: sent to init")
	// The socket is close-on-exec in the init: EOF means the exec worked.
	msg, err := readSync(sock)
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("start container %q: %w", id, err)
	}
	if msg.Type == msgError {
		return kindError(msg.Kind, msg.Msg)
	}
	return fmt.Errorf("start container %q: unexpected %q from init", id, msg.Type)
}

// CgroupDir is the container's cgroup v2 directory: every process of the
// container, execs included, is in it or below it.
func (c *Container) CgroupDir() string { return c.cg.path }

// InitPid is the pid of the container's init in the guest (the user's
// command once started), 0 once it has exited.
func (c *Container) InitPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.init == nil || c.init.Exited() {
		return 0
	}
	return c.init.Pid
}

// Process returns the init (execID "") or an exec'd process.
func (r *Runtime) Process(id, execID string) (*Process, error) {
	c, err := r.Get(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if execID == "" {
		return c.init, nil
	}
	p, ok := c.procs[execID]
	if !ok {
		return nil, errorf(ErrNotFound, "process %q not found in container %q", execID, id)
	}
	return p, nil
}

// Remove kills everything left in the container, waits for it, and forgets
// the container. Removing an unknown container succeeds, so it is safe to
// retry.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	r.mu.Lock()
	c, ok := r.containers[id]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	c.mu.Lock()
	if c.sync != nil {
		c.sync.Close()
		c.sync = nil
	}
	procs := []*Process{c.init}
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	if err := c.cg.kill(); err != nil {
		return fmt.Errorf("kill container %q: %w", id, err)
	}
	trace.Step("remove: cgroup killed")
	for _, p := range procs {
		if _, err := p.Wait(ctx); err != nil {
			return fmt.Errorf("wait for container %q to die: %w", id, err)
		}
		p.io.close()
	}
	trace.Step("remove: processes reaped")
	if err := c.cg.remove(); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.containers, id)
	r.mu.Unlock()
	return nil
}

// Pause freezes every process of the container, execs included, and
// returns once they are frozen; Resume thaws them.
func (r *Runtime) Pause(ctx context.Context, id string) error { return r.freeze(ctx, id, true) }

// Resume thaws a paused container.
func (r *Runtime) Resume(ctx context.Context, id string) error { return r.freeze(ctx, id, false) }

func (r *Runtime) freeze(ctx context.Context, id string, on bool) error {
	c, err := r.Get(id)
	if err != nil {
		return err
	}
	if c.cg == nil {
		return errorf(ErrInvalid, "container %q has no cgroup to freeze", id)
	}
	return c.cg.freeze(ctx, on)
}
