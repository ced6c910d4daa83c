package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// execNamespaces are joined, in this order, by the agent's thread that
// starts an exec helper, which is so born in them (the PID namespace
// applies to children only). The helper joins the mount namespace itself
// (execInContainer): the agent starts it from its own root, never by a
// path a container could have planted something at.
var execNamespaces = []struct {
	file string
	flag int
	typ  specs.LinuxNamespaceType
}{
	{"ipc", unix.CLONE_NEWIPC, specs.IPCNamespace},
	{"uts", unix.CLONE_NEWUTS, specs.UTSNamespace},
	{"net", unix.CLONE_NEWNET, specs.NetworkNamespace},
	{"cgroup", unix.CLONE_NEWCGROUP, specs.CgroupNamespace},
	{"pid", unix.CLONE_NEWPID, specs.PIDNamespace},
}

// The exec helper's descriptors after the sync socket (syncFd): the
// container's mount namespace and root, which the agent opened.
const (
	execMntFd  = syncFd + 1
	execRootFd = syncFd + 2
)

// Exec starts p inside the running container id as process execID.
func (r *Runtime) Exec(ctx context.Context, id, execID string, p *specs.Process) error {
	if err := validID(execID); err != nil {
		return err
	}
	if err := ValidateProcess(p); err != nil {
		return err
	}
	c, err := r.Get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != Running || c.init.Exited() {
		return errorf(ErrState, "container %q is not running", id)
	}
	if _, ok := c.procs[execID]; ok {
		return errorf(ErrExists, "process %q already exists in container %q", execID, id)
	}
	io, err := newStdio(p.Terminal, p.ConsoleSize)
	if err != nil {
		return err
	}
	proc := newProcess(execID, io, c.cg)
	if err := r.startExec(ctx, c, proc, p); err != nil {
		io.close()
		return err
	}
	c.procs[execID] = proc
	return nil
}

// startExec starts an exec helper on a dedicated OS thread that joined the
// container's namespaces, so the helper is born inside them. The thread is
// never unlocked: tainted by setns, it exits with its goroutine.
func (r *Runtime) startExec(ctx context.Context, c *Container, proc *Process, p *specs.Process) error {
	done := make(chan error, 1)
	onEndingThread(func() { done <- r.forkInContainer(ctx, c, proc, p) })
	return <-done
}

// onEndingThread runs fn in a goroutine locked to an OS thread that ends
// with it. The runtime does not end the main thread when its goroutine
// exits locked: it parks it, for good, in whatever namespaces fn joined
// (and the process's /proc/self is the main thread's). So fn never runs
// there: from the main thread, which stays locked meanwhile, fn goes to
// another goroutine, which the runtime must then put on another thread.
func onEndingThread(fn func()) {
	go func() {
		runtime.LockOSThread() // never unlocked where fn ran
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			fn()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
}

// forkInContainer runs on a locked thread. It starts the helper, a re-exec
// of the agent (InitArg) in the container's cgroup, namespaces and
// session, and waits until the helper has exec'd p or reported why it
// could not. Why a helper: the spec's seccomp filter must be installed by
// the process that execs, last, and Docker's profile answers clone3 (which
// a fork into a cgroup needs) with ENOSYS. Preconditions: c.mu is held and
// the init is alive.
func (r *Runtime) forkInContainer(ctx context.Context, c *Container, proc *Process, p *specs.Process) error {
	initPid := c.init.Pid
	gone := func() error { return errorf(ErrState, "container %q is not running", c.ID) }
	mnt, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", initPid))
	if err != nil {
		return gone()
	}
	defer mnt.Close()
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", initPid))
	if err != nil {
		return gone()
	}
	defer root.Close()
	sock, childEnd, err := syncPair()
	if err != nil {
		return err
	}
	defer sock.Close()
	for _, ns := range execNamespaces {
		if !hasNamespace(c.spec, ns.typ) {
			continue
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", initPid, ns.file))
		if err != nil {
			childEnd.Close()
			return gone()
		}
		err = unix.Setns(int(f.Fd()), ns.flag)
		f.Close()
		if err != nil {
			childEnd.Close()
			return fmt.Errorf("exec: join %s namespace: %w", ns.file, err)
		}
	}
	cmd := &exec.Cmd{
		Path:       r.cfg.Exe,
		Args:       []string{"vmctl-exec", InitArg},
		Env:        []string{},
		Stdin:      proc.io.child[0],
		Stdout:     proc.io.child[1],
		Stderr:     proc.io.child[2],
		ExtraFiles: []*os.File{childEnd, mnt, root},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:      true,
			Setctty:     p.Terminal,
			UseCgroupFD: true,
			CgroupFD:    c.cg.fd(),
		},
	}
	_, ch, err := r.cfg.Reaper.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	childEnd.Close()
	proc.io.closeChild()
	if err != nil {
		return fmt.Errorf("exec: start the exec helper: %w", err)
	}
	deadline := time.Now().Add(r.cfg.SetupTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	sock.SetDeadline(deadline)
	cfg := initConfig{Spec: &specs.Spec{Process: p, Linux: &specs.Linux{}}, GroupAdd: groupAdd(c.spec), Filter: c.filter}
	err = writeSync(sock, syncMsg{Type: msgExec, Cfg: cfg})
	var msg syncMsg
	if err == nil {
		// The socket is close-on-exec in the helper: EOF means the exec
		// worked.
		msg, err = readSync(sock)
	}
	switch {
	case err == io.EOF:
		proc.Pid, proc.proc = cmd.Process.Pid, cmd.Process
		proc.watch(ch)
		return nil
	case err == nil && msg.Type == msgError:
		// The helper exits by itself; the reaper collects it.
		cmd.Process.Release()
		return kindError(msg.Kind, msg.Msg)
	case err == nil:
		err = fmt.Errorf("unexpected %q", msg.Type)
	}
	cmd.Process.Kill()
	cmd.Process.Release()
	return fmt.Errorf("exec: the exec helper did not report: %w", err)
}

// execInContainer runs in an exec helper, locked to its thread, which the
// agent started in the container's cgroup and its other namespaces: it
// enters the container's mount namespace and root, and execs the process
// as the init execs the container's (execProcess). It only returns on
// failure.
func execInContainer(cfg *initConfig) error {
	p := cfg.Spec.Process
	// Go threads share one fs_struct (CLONE_FS), and setns into a mount
	// namespace is refused while it is shared.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("exec: unshare fs: %w", err)
	}
	if err := unix.Setns(execMntFd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("exec: join mnt namespace: %w", err)
	}
	// Be at the container's root even if its namespace's root differs.
	if err := unix.Fchdir(execRootFd); err != nil {
		return fmt.Errorf("exec: enter container root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("exec: chroot: %w", err)
	}
	// Nothing of the agent's reaches the process.
	unix.Close(execMntFd)
	unix.Close(execRootFd)
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return errorf(ErrInvalid, "chdir to %s: %v", cwd, err)
	}
	path, err := lookPath(p.Args[0], pathEnv(p.Env))
	if err != nil {
		return err
	}
	return execProcess(path, p, cfg.GroupAdd, cfg.Filter)
}

// execError classifies a failed fork/exec.
func execError(arg0 string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return errorf(ErrNotFound, "exec: %q: no such file or directory", arg0)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOEXEC):
		return errorf(ErrPermission, "exec: %q: permission denied", arg0)
	}
	return fmt.Errorf("exec: %q: %w", arg0, err)
}
