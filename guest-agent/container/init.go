package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/mountopt"
	"github.com/vmctl/vmctl/guest-agent/netif"
	"github.com/vmctl/vmctl/guest-agent/seccomp"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// InitArg is the hidden first argument that turns the agent binary into a
// container init. The agent's main (and a test binary's TestMain) must call
// InitMain when os.Args[1] is InitArg, before doing anything else.
const InitArg = "__vmctl_container_init"

// syncFd is the descriptor of the init's end of the sync socket (ExtraFiles[0]).
const syncFd = 3

// initConfig is what the agent sends the init over the sync socket (see
// wire.go for the encoding and which parts of Spec it carries).
type initConfig struct {
	Rootfs string
	DevPts string
	Spec   *specs.Spec
	// Trace asks the init to time its steps and send them with "ready".
	Trace bool
	// Pause makes the init wait after start instead of running the
	// spec's process (contract.InitPause).
	Pause bool
	// Reap keeps the init as PID 1 over the spec's process
	// (contract.InitReap).
	Reap bool
	// GroupAdd are more groups of the process, names resolved in the
	// container (contract.AnnotationGroupAdd).
	GroupAdd []string
	// Privileged gives the container every device of its VM
	// (contract.AnnotationPrivileged).
	Privileged bool
	// Filter is the process's seccomp filter; nil for none.
	Filter *seccomp.Filter
}

// InitMain runs the container init, or an exec helper: it never returns.
// Sequence of an init: agent --config--> init; init sets up the container
// and answers "ready" or "error"; agent --start--> init; init execs the
// user's command, which closes the sync socket (close-on-exec) and tells
// the agent the exec happened; or it sends "error". An exec helper gets
// "exec" instead of "config", joins the running container and execs the
// process the same way (execInContainer).
func InitMain() {
	// Capabilities, no_new_privs and the cgroup namespace are per thread:
	// everything must happen on the thread that finally calls execve.
	runtime.LockOSThread()
	entered := trace.Now()
	sock := os.NewFile(syncFd, "sync")
	unix.CloseOnExec(syncFd)
	fail := func(err error) {
		_ = writeSync(sock, syncMsg{Type: msgError, Kind: kindName(err), Msg: err.Error()})
		os.Exit(initFailStatus(err))
	}
	m, err := readSync(sock)
	if err == nil && m.Type != msgConfig && m.Type != msgExec {
		err = fmt.Errorf("%w: got type %q instead of the config", errMalformed, m.Type)
	}
	if err != nil {
		fail(fmt.Errorf("read container config: %w", err))
	}
	cfg := m.Cfg
	if cfg.Spec == nil || cfg.Spec.Process == nil || cfg.Spec.Linux == nil {
		fail(errorf(ErrInvalid, "container config is incomplete"))
	}
	if m.Type == msgExec {
		fail(execInContainer(&cfg))
	}
	trace.Enable(cfg.Trace)
	trace.Add(trace.Mark{Name: "init: main (after runtime and package init)", At: entered})
	trace.Step("init: config read")
	path, err := setupContainer(&cfg)
	if err != nil {
		fail(err)
	}
	trace.Step("init: command found")
	if err := writeSync(sock, syncMsg{Type: msgReady, Mark: trace.Take()}); err != nil {
		os.Exit(1)
	}
	if msg, err := readSync(sock); err != nil || msg.Type != msgStart {
		// The agent went away or removed the container before start.
		os.Exit(1)
	}
	if cfg.Pause {
		// The container lives for ExecProcess calls; removal kills it.
		sock.Close()
		for {
			unix.Pause()
		}
	}
	if cfg.Reap {
		fail(reapProcess(path, cfg.Spec.Process, sock, cfg.GroupAdd, cfg.Filter))
	}
	fail(execProcess(path, cfg.Spec.Process, cfg.GroupAdd, cfg.Filter))
}

// initFailStatus is the exit status of an init that could not run the
// command, as shells report it.
func initFailStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return 127
	case errors.Is(err, ErrPermission):
		return 126
	}
	return 1
}

// setupContainer builds the container's view of the world and returns the
// resolved command path. It runs as root in the new namespaces.
func setupContainer(cfg *initConfig) (string, error) {
	s := cfg.Spec
	if hasNamespace(s, specs.CgroupNamespace) {
		// We are already in the container's cgroup (clone into cgroup), so
		// the new namespace is rooted there.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return "", fmt.Errorf("unshare cgroup namespace: %w", err)
		}
	}
	// Mounts made below must not propagate back to the agent's namespace.
	propagation := uintptr(unix.MS_PRIVATE | unix.MS_REC)
	if p, ok := mountopt.Propagation[s.Linux.RootfsPropagation]; ok {
		propagation = p | unix.MS_REC
	}
	if err := unix.Mount("", "/", "", propagation, ""); err != nil {
		return "", fmt.Errorf("set root propagation: %w", err)
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(cfg.Rootfs, cfg.Rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", fmt.Errorf("bind rootfs: %w", err)
	}
	devices := s.Linux.Devices
	if cfg.Privileged {
		if err := allowDevices(cfg.Rootfs); err != nil {
			return "", err
		}
		vm, err := vmDevices("/dev")
		if err != nil {
			return "", err
		}
		devices = append(vm, devices...)
	}
	terminal := s.Process.Terminal
	trace.Step("init: cgroup ns, propagation, rootfs bind")
	if err := mountAll(cfg.Rootfs, cfg.DevPts, s.Mounts, terminal, cfg.Privileged); err != nil {
		return "", err
	}
	trace.Step("init: spec mounts and /dev")
	if err := createDevices(cfg.Rootfs, devices); err != nil {
		return "", err
	}
	if err := pivotRoot(cfg.Rootfs); err != nil {
		return "", err
	}
	trace.Step("init: pivot_root")
	if hasNamespace(s, specs.UTSNamespace) {
		if s.Hostname != "" {
			if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
				return "", fmt.Errorf("set hostname: %w", err)
			}
		}
		if s.Domainname != "" {
			if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
				return "", fmt.Errorf("set domain name: %w", err)
			}
		}
	}
	if hasNamespace(s, specs.NetworkNamespace) {
		if err := netif.LinkUp("lo"); err != nil {
			return "", err
		}
	}
	for k, v := range s.Linux.Sysctl {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return "", fmt.Errorf("set sysctl %s: %w", k, err)
		}
	}
	if err := maskPaths(s.Linux.MaskedPaths); err != nil {
		return "", err
	}
	if err := readonlyPaths(s.Linux.ReadonlyPaths); err != nil {
		return "", err
	}
	trace.Step("init: hostname, lo, sysctls, masked and read-only paths")
	if s.Root != nil && s.Root.Readonly {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|lockedFlags("/"), ""); err != nil {
			return "", fmt.Errorf("remount / read-only: %w", err)
		}
	}
	cwd := s.Process.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return "", errorf(ErrInvalid, "chdir to %s: %v", cwd, err)
	}
	if cfg.Pause {
		return "", nil
	}
	return lookPath(s.Process.Args[0], pathEnv(s.Process.Env))
}

// pauses says whether a container's init waits instead of running the
// spec's process (contract.InitPause).
func pauses(s *specs.Spec) bool { return s.Annotations[contract.AnnotationInit] == contract.InitPause }

// reaps says whether a container's init stays its PID 1 (contract.InitReap).
func reaps(s *specs.Spec) bool { return s.Annotations[contract.AnnotationInit] == contract.InitReap }

// lookPath resolves a command as execve will see it in the current root,
// with Go's exec error wording.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		if err := checkExecutable(file); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", errorf(ErrNotFound, "exec: %q: stat %s: no such file or directory", file, file)
			}
			return "", errorf(ErrPermission, "exec: %q: permission denied", file)
		}
		return file, nil
	}
	denied := false
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			denied = true
		}
	}
	if denied {
		return "", errorf(ErrPermission, "exec: %q: permission denied", file)
	}
	return "", errorf(ErrNotFound, "exec: %q: executable file not found in $PATH", file)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}

// execProcess drops privileges as the process asks, installs its seccomp
// filter and replaces the calling process (an init or an exec helper,
// locked to its thread) with the user's command. It only returns on
// failure.
func execProcess(path string, p *specs.Process, groupAddOf []string, filter *seccomp.Filter) error {
	env, err := prepareProcess(p, groupAddOf)
	if err != nil {
		return err
	}
	// The filter goes on as late as it can, so that a profile need not
	// allow what the setup calls, in runc's order: without no_new_privs
	// installing it takes CAP_SYS_ADMIN, which another user loses at
	// setuid, so it goes on before the credentials change (a profile
	// must then allow setgroups, setresgid and setresuid, as Docker's
	// does); with no_new_privs, after them, right before execve.
	if !p.NoNewPrivileges {
		if err := filter.Install(false); err != nil {
			return err
		}
	}
	// Groups first: after setgid/setuid we may no longer change them.
	groups := make([]int, len(p.User.AdditionalGids))
	for i, g := range p.User.AdditionalGids {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setresgid(int(p.User.GID), int(p.User.GID), int(p.User.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", p.User.GID, err)
	}
	if err := unix.Setresuid(int(p.User.UID), int(p.User.UID), int(p.User.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", p.User.UID, err)
	}
	if p.User.Umask != nil {
		unix.Umask(int(*p.User.Umask))
	}
	if p.NoNewPrivileges {
		if err := filter.Install(false); err != nil {
			return err
		}
	}
	err = unix.Exec(path, p.Args, env)
	switch {
	case errors.Is(err, unix.ENOENT):
		return errorf(ErrNotFound, "exec: %q: %v", p.Args[0], err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOEXEC):
		return errorf(ErrPermission, "exec: %q: permission denied", p.Args[0])
	}
	return fmt.Errorf("exec: %q: %w", p.Args[0], err)
}

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

// dropBoundingSet removes every capability not in keep from the bounding
// set. For root, execve makes the bounding set the new permitted set, which
// is how Docker's default capability list takes effect; other users lose all
// capabilities at setuid anyway.
func dropBoundingSet(keep []string) error {
	want := map[uintptr]bool{}
	for _, c := range keep {
		want[capNumbers[c]] = true
	}
	for c := uintptr(0); c <= 63; c++ {
		if want[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			if err == unix.EINVAL {
				// Past the last capability this kernel knows.
				break
			}
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// prepareProcess gives the init what the spec's process asks, before it
// becomes or starts that process: resource limits, the capability bounds
// and no_new_privs of this thread, its OOM score, and its user and groups
// resolved in the container's /etc files. It returns the environment, with
// HOME set.
func prepareProcess(p *specs.Process, groupAddOf []string) ([]string, error) {
	for _, rl := range p.Rlimits {
		lim := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		if err := unix.Setrlimit(rlimitNames[rl.Type], &lim); err != nil {
			return nil, fmt.Errorf("set %s: %w", rl.Type, err)
		}
	}
	if err := limitThread(p); err != nil {
		return nil, err
	}
	// The agent shields itself from the OOM killer (-1000) and its
	// children inherit that: a container's processes get their own score,
	// 0 unless the spec says otherwise.
	adj := 0
	if p.OOMScoreAdj != nil {
		adj = *p.OOMScoreAdj
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(fmt.Sprint(adj)), 0); err != nil {
		return nil, fmt.Errorf("set oom_score_adj: %w", err)
	}
	// A user given by name is the container's: its /etc/passwd is here now.
	if p.User.Username != "" {
		u, err := lookupUser(p.User.Username, "/etc/passwd", "/etc/group")
		if err != nil {
			return nil, errorf(ErrInvalid, "%v", err)
		}
		p.User.UID, p.User.GID = u.uid, u.gid
		p.User.AdditionalGids = append(u.groups, p.User.AdditionalGids...)
		if !hasEnv(p.Env, "HOME") {
			p.Env = append(p.Env, "HOME="+u.home)
		}
	}
	if err := addGroups(p, groupAddOf); err != nil {
		return nil, errorf(ErrInvalid, "%v", err)
	}
	env := p.Env
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME=/")
	}
	return env, nil
}

// limitThread drops the capabilities outside the process's bounding set
// and sets no_new_privs as it asks. Both are per thread and inherited by
// what the thread forks or execs, so the caller runs locked to its thread.
func limitThread(p *specs.Process) error {
	if p.Capabilities != nil {
		if err := dropBoundingSet(p.Capabilities.Bounding); err != nil {
			return err
		}
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return nil
}

// reapProcess is docker run --init's init: the spec's process runs as the
// init's child, with the same privileges execProcess would give it, while
// the init stays PID 1, forwards it every signal it can catch and reaps
// every orphan the container's processes leave. It exits with the child's
// status and only returns on failure to start it.
func reapProcess(path string, p *specs.Process, sock *os.File, groupAddOf []string, filter *seccomp.Filter) error {
	// Signals are caught before the child exists, so none sent at its
	// start is lost; the child gets default dispositions at exec.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	// The bounds prepareProcess sets on this (locked) thread pass to the
	// child it forks.
	env, err := prepareProcess(p, groupAddOf)
	if err != nil {
		return err
	}
	if p.User.Umask != nil {
		unix.Umask(int(*p.User.Umask))
	}
	// The init stays, the command's parent: like docker-init under runc,
	// it runs under the command's filter, on all its threads, and the
	// child it forks (with clone, which Docker's profile allows without
	// namespace flags) inherits it. The init is root with CAP_SYS_ADMIN,
	// so no_new_privs is not needed for it.
	if err := filter.Install(true); err != nil {
		return err
	}
	cmd := exec.Command(path)
	cmd.Args, cmd.Env = p.Args, env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: p.User.UID, Gid: p.User.GID, Groups: p.User.AdditionalGids},
		// The child leads the terminal's session, as the command would
		// without an init.
		Setsid: p.Terminal, Setctty: p.Terminal,
	}
	if err := cmd.Start(); err != nil {
		return execError(p.Args[0], err)
	}
	// The command runs: the agent learns it from the sync socket's close,
	// as from an exec.
	sock.Close()
	child := cmd.Process.Pid
	go func() {
		for s := range sigs {
			// SIGCHLD is the init's own; SIGURG is the Go runtime's.
			if s == syscall.SIGCHLD || s == syscall.SIGURG {
				continue
			}
			_ = unix.Kill(child, s.(syscall.Signal))
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			os.Exit(1) // no child left, which cannot be before ours ended
		}
		if pid != child {
			continue // an orphan, reaped
		}
		if ws.Signaled() {
			os.Exit(128 + int(ws.Signal()))
		}
		os.Exit(ws.ExitStatus())
	}
}

// addGroups adds the --group-add groups, resolved in the container's
// /etc/group, to the process's.
func addGroups(p *specs.Process, entries []string) error {
	gids, err := lookupGroups(entries, "/etc/group")
	if err != nil {
		return err
	}
	p.User.AdditionalGids = append(p.User.AdditionalGids, gids...)
	return nil
}
