// Package qemu is the sandbox driver that runs each VM in its own
// qemu-system-x86_64 process on the microvm machine: virtio-mmio devices,
// no ACPI, no PCI, the guest kernel and initramfs loaded directly.
//
// Per VM the driver creates, in Config.StateDir:
//   - qmp.sock: QMP, bound by the driver and handed to QEMU as a listening
//     descriptor, driven with github.com/digitalocean/go-qemu (status, quit,
//     and the SHUTDOWN / GUEST_PANICKED / STOP events that give the exit
//     reason);
//   - agent.sock: bound by the driver and handed to QEMU as a listening
//     descriptor like qmp.sock; the driver connects to it for the agent's
//     virtio-serial port (api/agent/contract), its only channel (one byte
//     stream; vhost-vsock is not available on every host);
//   - jail: an empty directory a jailed QEMU chroots into;
//   - qemu.log (QEMU's stdout and stderr, quoted in start errors) and
//     qemu.pid.
//
// Run as root, the driver jails QEMU (Options.Unjailed turns it off): once
// QEMU has opened everything on its command line, it chroots into the empty
// jail directory and becomes the VM's own unprivileged user and group
// (sandbox.UnprivilegedID), so a guest that takes over QEMU holds a process
// with no capabilities, no files to open and no other VM to signal. Every
// socket and file QEMU uses is opened before that, or passed in.
//
// QEMU runs in its own process group so that a terminal's Ctrl-C to the
// engine does not reach it, and dies with the engine (Pdeathsig, until it
// is jailed: see procAttr) unless Options.Detach asks for VMs that outlive
// it.
//
// Reattach adopts a VM started by an earlier engine process (see
// reattach.go). The package does not know what runs in the guest and does
// not speak the agent protocol.
//
// Boot tuning, measured under TCG on the 2-core development machines with
// the project kernel (boot to the first byte echoed by the guest's PID 1,
// BenchmarkBootToFirstByte; ~0.65-0.9 s depending on host load):
//   - nolapic_timer (TCG, one vCPU) saves the local APIC timer calibration,
//     ~0.2-0.3 s of emulated waiting;
//   - the microvm machine keeps its PIC, PIT and RTC: pit=off or pic=off
//     hang the boot under TCG (no clock to calibrate against) and rtc=off
//     was ~1 s slower;
//   - the serial backend (null or file) and the uncompressed initramfs make
//     no measurable difference next to the kernel's own init.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/virtiofsd"
	"golang.org/x/sys/unix"
)

// Binary is the QEMU executable looked up in PATH when Options.Binary is
// empty.
const Binary = "qemu-system-x86_64"

// Options configures the driver for every VM it starts.
type Options struct {
	// Binary is the QEMU executable; empty means Binary looked up in PATH.
	Binary string
	// Accel is "kvm" (with -cpu host) or "tcg" (software emulation, with
	// -cpu max). Empty means kvm where sandbox.KVMCapability says KVM can
	// run full guests, else tcg.
	Accel string
	// Detach lets VMs outlive the engine process: QEMU starts in a session
	// of its own and is not killed when the engine dies.
	Detach bool
	// ShareFS is how shared directories reach guests: sandbox.ShareVirtioFS
	// (the default) or sandbox.Share9P, QEMU's own 9p server, kept to be
	// measured against (make bench sets it through ShareFSEnv).
	ShareFS string
	// Unjailed keeps QEMU root (its seccomp filter still applies). Without
	// it, a driver running as root jails every QEMU; a VM with 9p shares
	// is never jailed, as QEMU's 9p server needs root to keep the guest's
	// owners.
	Unjailed bool
	// ProbeCache, if set, is a file where what New learns of the QEMU
	// binary (its -help) is kept for later processes (probecache.go).
	ProbeCache string
}

// ShareFSEnv, when set to "9p", makes New's default ShareFS sandbox.Share9P.
const ShareFSEnv = "VMCTL_QEMU_SHARE_FS"

// Driver starts QEMU VMs. It is safe for concurrent use.
type Driver struct {
	binary  string
	accel   string
	detach  bool
	shareFS string
	// drop is how this QEMU is jailed; dropNone when it is not.
	drop privDrop
}

var _ sandbox.Driver = (*Driver)(nil)

// New checks opts and returns a driver. It fails if QEMU is missing.
func New(opts Options) (*Driver, error) {
	bin := opts.Binary
	if bin == "" {
		p, err := exec.LookPath(Binary)
		if err != nil {
			return nil, fmt.Errorf("%s not found: install qemu-system-x86", Binary)
		}
		bin = p
	} else if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("qemu binary %s is not an executable file: install qemu-system-x86 or fix the path", bin)
	}
	accel := opts.Accel
	switch accel {
	case "":
		accel = "tcg"
		if ok, _ := sandbox.KVMCapability(); ok {
			accel = "kvm"
		}
	case "kvm", "tcg":
	default:
		return nil, fmt.Errorf("qemu accelerator %q: use kvm or tcg", accel)
	}
	shareFS := opts.ShareFS
	if shareFS == "" {
		shareFS = sandbox.ShareVirtioFS
		if os.Getenv(ShareFSEnv) == sandbox.Share9P {
			shareFS = sandbox.Share9P
		}
	}
	if shareFS != sandbox.ShareVirtioFS && shareFS != sandbox.Share9P {
		return nil, fmt.Errorf("qemu share file system %q: use %s or %s", shareFS, sandbox.ShareVirtioFS, sandbox.Share9P)
	}
	d := &Driver{binary: bin, accel: accel, detach: opts.Detach, shareFS: shareFS}
	if !opts.Unjailed && os.Geteuid() == 0 {
		if d.drop = cachedDrop(bin, opts.ProbeCache); d.drop == dropNone {
			return nil, fmt.Errorf("%s can neither -runas nor -run-with user=: it cannot be jailed (use a QEMU from 7.2 on, or run unjailed)", bin)
		}
	}
	return d, nil
}

// probeDrop asks QEMU's -help which options drop privileges.
func probeDrop(bin string) privDrop {
	out, err := exec.Command(bin, "-help").Output()
	if err != nil {
		return dropNone
	}
	return parseDrop(string(out))
}

// parseDrop reads QEMU's -help text, where each option starts a line
// with "-" and its description continues on indented lines: -run-with
// with a user= key (QEMU 9.1 on) is preferred to -chroot and -runas
// (deprecated there, then removed).
func parseDrop(help string) privDrop {
	opts := map[string]string{} // option -> its help text
	var cur string
	for _, line := range strings.Split(help, "\n") {
		if strings.HasPrefix(line, "-") {
			cur, _, _ = strings.Cut(line, " ")
		}
		if cur != "" {
			opts[cur] += line + "\n"
		}
	}
	switch {
	case strings.Contains(opts["-run-with"], "user="):
		return dropRunWith
	case opts["-runas"] != "" && opts["-chroot"] != "":
		return dropRunas
	}
	return dropNone
}

// Jailed says whether the driver jails QEMU (root, not Options.Unjailed).
func (d *Driver) Jailed() bool { return d.drop != dropNone }

// Name returns "qemu".
func (d *Driver) Name() string { return "qemu" }

// ShareFS says how shares reach the guest: sandbox.ShareVirtioFS
// (vhost-user-fs devices) unless Options.ShareFS chose 9p.
func (d *Driver) ShareFS() string { return d.shareFS }

// Accel returns the accelerator VMs run with ("kvm" or "tcg").
func (d *Driver) Accel() string { return d.accel }

// startTimeout bounds QEMU's start-up (process exec to QMP "cont") when
// the caller's context has no deadline.
const startTimeout = 30 * time.Second

// Start boots a VM: it validates cfg, prepares StateDir and its sockets,
// starts QEMU paused, connects QMP, subscribes to events and resumes the
// guest. On error everything it created is removed and QEMU is reaped.
func (d *Driver) Start(ctx context.Context, cfg sandbox.Config) (_ sandbox.Sandbox, err error) {
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}

	v := &vm{
		id:         cfg.ID,
		stateDir:   cfg.StateDir,
		consoleLog: cfg.ConsoleLog,
		qmpPath:    filepath.Join(cfg.StateDir, qmpSocketName),
		agentPath:  filepath.Join(cfg.StateDir, agentSocketName),
		logPath:    filepath.Join(cfg.StateDir, stderrLogName),
		pidPath:    filepath.Join(cfg.StateDir, pidFileName),
		exited:     make(chan struct{}),
		done:       make(chan struct{}),
		agentConns: make(chan net.Conn, 1),
	}
	// Every step below registers its undo in v (files, listeners) or is
	// undone by v.cleanup; on error, kill and clean up what exists so far.
	defer func() {
		if err != nil {
			v.abortStart()
		}
	}()

	if _, statErr := os.Stat(cfg.StateDir); errors.Is(statErr, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		v.createdDir = true
	}
	for _, p := range []string{v.qmpPath, v.agentPath} {
		if err := removeStaleSocket(p); err != nil {
			return nil, err
		}
	}

	// QEMU serves both sockets on descriptors the driver bound, so the
	// driver can connect without polling and QEMU never opens a path. Its
	// listeners stay until Destroy: the files must stay with them.
	var inherited []*os.File
	defer func() {
		// Closed right after QEMU starts (below) or fails to: if QEMU dies,
		// the listening sockets must die with it, or a connection would
		// wait forever.
		for _, f := range inherited {
			f.Close()
		}
	}()
	for _, p := range []string{v.qmpPath, v.agentPath} { // fds 3, 4
		f, err := v.listenFor(p)
		if err != nil {
			return nil, err
		}
		inherited = append(inherited, f)
	}

	// A saved state travels through a pipe (save.go): out of a template,
	// into a restored VM, whose feeder starts once QEMU runs.
	var feed *os.File
	var diskFDs [][]int
	defer func() {
		if feed != nil {
			feed.Close()
		}
	}()
	switch {
	case cfg.Restore != nil:
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("state pipe: %w", err)
		}
		inherited = append(inherited, r) // fd 5: stateFD
		feed = w
		// A restored QEMU opens its disks again when it takes them
		// over from the saved state, by then in its jail: it gets them as
		// descriptors (-add-fd), one per access mode it may ask for.
		for _, d := range cfg.Disks {
			var fds []int
			for _, mode := range []int{os.O_RDONLY, os.O_RDWR} {
				if mode == os.O_RDWR && d.ReadOnly {
					continue
				}
				f, err := os.OpenFile(d.Path, mode, 0)
				if err != nil {
					return nil, fmt.Errorf("disk %s: %w", d.Path, err)
				}
				fds = append(fds, 3+len(inherited))
				inherited = append(inherited, f)
			}
			diskFDs = append(diskFDs, fds)
		}
	case cfg.Template:
		v.savePath = filepath.Join(cfg.StateDir, saveSocketName)
		v.sharedRAM = cfg.Memory != nil
		if err := removeStaleSocket(v.savePath); err != nil {
			return nil, err
		}
		f, err := v.listenFor(v.savePath)
		if err != nil {
			return nil, err
		}
		inherited = append(inherited, f) // fd 5: stateFD
	}

	memFD := 0
	if cfg.Memory != nil {
		// A copy of the caller's descriptor, closed with the others.
		fd, err := unix.FcntlInt(cfg.Memory.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("guest memory: %w", err)
		}
		memFD = 3 + len(inherited)
		inherited = append(inherited, os.NewFile(uintptr(fd), "guest-memory"))
	}

	var jail *jailSpec
	if d.drop != dropNone && !(len(cfg.Shares) > 0 && d.shareFS == sandbox.Share9P) {
		id := sandbox.UnprivilegedID(cfg.ID)
		jail = &jailSpec{how: d.drop, root: filepath.Join(cfg.StateDir, jailDirName), uid: id, gid: id}
		// Empty and root's: the jailed QEMU can neither list nor write it.
		// An empty one left by a killed engine is taken over.
		_ = os.Remove(jail.root)
		if err := os.Mkdir(jail.root, 0o500); err != nil {
			return nil, fmt.Errorf("create jail dir: %w", err)
		}
		v.created = append(v.created, jail.root)
	}

	logFile, err := os.OpenFile(v.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu log: %w", err)
	}
	v.created = append(v.created, v.logPath, v.pidPath)
	defer logFile.Close()

	// One virtiofsd per shared directory, listening before QEMU connects.
	if len(cfg.Shares) > 0 && d.shareFS == sandbox.ShareVirtioFS {
		bin, err := virtiofsd.Binary()
		if err != nil {
			return nil, err
		}
		for i, sh := range cfg.Shares {
			sock := virtiofsd.SocketName(cfg.StateDir, i)
			v.created = append(v.created, sock)
			dmn, err := virtiofsd.Start(bin, virtiofsd.Config{
				Dir: sh.Path, ReadOnly: sh.ReadOnly, Socket: sock, Log: v.logPath + ".virtiofsd",
				SysProcAttr: procAttr(d.detach),
			})
			if err != nil {
				return nil, err
			}
			v.daemons = append(v.daemons, dmn)
		}
		v.created = append(v.created, v.logPath+".virtiofsd")
	}

	args := buildArgs(launch{
		id: cfg.ID, accel: d.accel, cfg: cfg,
		pidFile: v.pidPath, consoleLog: cfg.ConsoleLog,
		vhostNet: len(cfg.NICs) > 0 && vhostNetAvailable(), shareFS: d.shareFS,
		jail: jail, template: cfg.Template, incoming: cfg.Restore != nil, diskFDs: diskFDs, memFD: memFD,
	})
	cmd := exec.Command(d.binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.ExtraFiles = inherited // fds 3, 4, 5...: qmpFD, agentFD, stateFD, diskFDs
	cmd.SysProcAttr = procAttr(d.detach)
	err = startProcess(cmd, cfg.NetNS)
	for _, f := range inherited {
		f.Close()
	}
	inherited = nil
	logFile.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", d.binary, err)
	}
	v.cmd = cmd
	v.pid = cmd.Process.Pid
	v.killProc = cmd.Process.Kill
	v.waitProc = func() syscall.WaitStatus {
		_ = cmd.Wait() // the status is read from ProcessState
		status, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		return status
	}
	go v.reap()
	var fed <-chan error
	if feed != nil {
		fed = feedState(feed, cfg.Restore)
		feed = nil // the feeder closes it
	}

	if err := v.connectMonitor(ctx, true); err != nil {
		return nil, v.startError("connect to QMP", err)
	}
	if fed != nil && cfg.Memory != nil {
		if err := v.startIncoming(ctx); err != nil {
			return nil, v.startError("restore saved state", err)
		}
	}
	if fed != nil {
		if err := v.awaitRestore(ctx, fed); err != nil {
			if se := (*stateReadError)(nil); errors.As(err, &se) {
				return nil, fmt.Errorf("start VM: %w", err)
			}
			return nil, v.startError("restore saved state", err)
		}
	}
	// Paused --cont--> Running. Events are subscribed, so none is lost.
	if err := v.run(ctx, "cont"); err != nil {
		return nil, v.startError("resume guest", err)
	}
	return v, nil
}

// startError explains a failed start step. When QEMU died, its exit status
// and the tail of its stderr are the useful part (bad disk path, bad
// option), so they replace the step's own error.
func (v *vm) startError(step string, err error) error {
	select {
	case <-v.exited:
	case <-time.After(time.Second):
		// Still running: the step itself failed (or ctx ended).
		return fmt.Errorf("start VM: %s: %w", step, err)
	}
	tail := tailLines(v.logPath, 3, 4096)
	if tail == "" {
		tail = "no output"
	}
	return fmt.Errorf("qemu failed to start (%s): %s", v.exitStatus(), tail)
}

// abortStart undoes a failed Start: kill QEMU if it runs, wait for the
// reaper, close and remove everything created.
func (v *vm) abortStart() {
	if v.cmd != nil {
		v.kill()
		<-v.done
	}
	v.stopDaemons()
	v.cleanup()
}

// stopDaemons ends the VM's virtiofsd processes; each exits by itself once
// QEMU is gone, this only makes sure.
func (v *vm) stopDaemons() {
	for _, d := range v.daemons {
		d.Stop()
	}
}

// startProcess starts cmd from a goroutine that is not locked to its OS
// thread. Pdeathsig fires when the thread that forked the child exits, not
// the process; a caller locked to a thread that later exits would otherwise
// kill the VM. Unlocked goroutines run on threads that never exit.
//
// With netNS, QEMU starts in that network namespace: the fork happens on a
// thread moved into it (a child is born in its thread's namespace), which
// then moves back and returns to the runtime, so that it lives on.
func startProcess(cmd *exec.Cmd, netNS string) error {
	errc := make(chan error, 1)
	go func() {
		if netNS == "" {
			errc <- cmd.Start()
			return
		}
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(netNS)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network namespace %s: %w", netNS, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", netNS, err)
			return
		}
		errc <- cmd.Start()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
			return
		}
		// Stuck in the pod's namespace: the thread must not serve other
		// goroutines, and must not exit either (QEMU's parent-death
		// signal): it parks for good.
		select {}
	}()
	return <-errc
}

// listenFor binds a socket at path for QEMU to serve, records it for
// removal, and returns its listening descriptor for QEMU to inherit. The
// socket file stays until Destroy, with the listener QEMU holds.
func (v *vm) listenFor(path string) (*os.File, error) {
	ln, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	v.created = append(v.created, path)
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return f, nil
}

// listenUnix binds a unix socket, with a clear error for the usual causes.
func listenUnix(path string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

// removeStaleSocket removes a socket file left by an earlier run whose
// process is gone (connecting is refused). A socket something still listens
// on belongs to a live VM: refuse to take its state directory.
func removeStaleSocket(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("state dir in use: something listens on %s (another VM?)", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
