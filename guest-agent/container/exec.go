package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// execNamespaces are joined, in this order, by an exec. The mount namespace
// comes last: after it, /proc/<pid>/ns of the agent's view is gone.
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
	{"mnt", unix.CLONE_NEWNS, specs.MountNamespace},
}

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
	if err := r.startExec(c, proc, p); err != nil {
		io.close()
		return err
	}
	c.procs[execID] = proc
	return nil
}

// startExec joins the container's namespaces on a dedicated OS thread and
// forks the process from there, so the child is born inside them. The thread
// is never unlocked: tainted by setns, it exits with its goroutine.
func (r *Runtime) startExec(c *Container, proc *Process, p *specs.Process) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		done <- r.forkInContainer(c, proc, p)
	}()
	return <-done
}

// forkInContainer runs on a locked thread. Preconditions: c.mu is held and
// the init is alive.
func (r *Runtime) forkInContainer(c *Container, proc *Process, p *specs.Process) error {
	// Go threads share one fs_struct (CLONE_FS), and setns into a mount
	// namespace is refused while it is shared.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("exec: unshare fs: %w", err)
	}
	initPid := c.init.Pid
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", initPid))
	if err != nil {
		return errorf(ErrState, "container %q is not running", c.ID)
	}
	defer root.Close()
	var nsFiles []*os.File
	defer func() {
		for _, f := range nsFiles {
			f.Close()
		}
	}()
	for _, ns := range execNamespaces {
		if ns.typ != specs.MountNamespace && !hasNamespace(c.spec, ns.typ) {
			continue
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", initPid, ns.file))
		if err != nil {
			return errorf(ErrState, "container %q is not running", c.ID)
		}
		nsFiles = append(nsFiles, f)
		// setns(CLONE_NEWPID) only sets the namespace of our children.
		if err := unix.Setns(int(f.Fd()), ns.flag); err != nil {
			return fmt.Errorf("exec: join %s namespace: %w", ns.file, err)
		}
	}
	// Be at the container's root even if its namespace's root differs.
	if err := unix.Fchdir(int(root.Fd())); err != nil {
		return fmt.Errorf("exec: enter container root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("exec: chroot: %w", err)
	}
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
	user := p.User
	home := "/"
	if user.Username != "" {
		// A name is the container's: its /etc/passwd is here now.
		u, err := lookupUser(user.Username, "/etc/passwd", "/etc/group")
		if err != nil {
			return errorf(ErrInvalid, "%v", err)
		}
		user.UID, user.GID, home = u.uid, u.gid, u.home
		user.AdditionalGids = append(u.groups, user.AdditionalGids...)
	}
	extra, err := lookupGroups(groupAdd(c.spec), "/etc/group")
	if err != nil {
		return errorf(ErrInvalid, "%v", err)
	}
	user.AdditionalGids = append(user.AdditionalGids, extra...)
	groups := make([]uint32, len(user.AdditionalGids))
	copy(groups, user.AdditionalGids)
	env := p.Env
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME="+home)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   p.Args,
		Env:    env,
		Dir:    cwd,
		Stdin:  proc.io.child[0],
		Stdout: proc.io.child[1],
		Stderr: proc.io.child[2],
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:      true,
			Setctty:     p.Terminal,
			UseCgroupFD: true,
			CgroupFD:    c.cg.fd(),
			Credential: &syscall.Credential{
				Uid: user.UID, Gid: user.GID, Groups: groups,
			},
		},
	}
	// Capability bounds and no_new_privs are per thread and inherited by
	// the child; this thread dies afterwards, so the agent keeps its own.
	if err := limitThread(p); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	_, ch, err := r.cfg.Reaper.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	proc.io.closeChild()
	if err != nil {
		return execError(p.Args[0], err)
	}
	proc.Pid, proc.proc = cmd.Process.Pid, cmd.Process
	// Not the agent's -1000 (inherited at fork): an exec is the
	// container's, killable as its processes are.
	adj := 0
	if p.OOMScoreAdj != nil {
		adj = *p.OOMScoreAdj
	}
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", proc.Pid), []byte(fmt.Sprint(adj)), 0)
	proc.watch(ch)
	return nil
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
