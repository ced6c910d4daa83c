// Package vmm is the sandbox driver for vmctl-vmm, the project's native Go
// VMM: one vmctl-vmm process per VM, controlled over its ttrpc control API
// (api/vmm/v1), with the guest agent reached through the VM's hybrid
// virtio-vsock socket (`CONNECT <port>` on a unix socket, the port of
// api/agent/contract).
//
// The engine never links the VMM: a crashed or compromised VMM takes down
// only its own VM. This package does not decide whether this host can run
// vmctl-vmm (engine/sandbox.Choose does); vmctl-vmm itself refuses, with exit
// status 3, where /dev/kvm cannot run full guests.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/vmctl/vmctl/api/agent/contract"
	vmmapi "github.com/vmctl/vmctl/api/vmm/v1"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/internal/hybridvsock"
)

// Binary is the VMM executable's name.
const Binary = "vmctl-vmm"

// guestCID is the guest's vsock context ID; each VM has its own device, so
// every guest can use the first guest CID.
const guestCID = 3

// baseCmdline: reboot=k because vmctl-vmm emulates the i8042 reset line,
// which ends the VM at once; panic=-1 turns a guest panic into a reboot.
const baseCmdline = "console=ttyS0 reboot=k panic=-1 quiet"

// Exit codes of vmctl-vmm (see vmctl-vmm -help).
const (
	exitGuestEnded = 0
	exitHostKVM    = 3
)

// Options configures the driver.
type Options struct {
	// Binary is the vmctl-vmm executable; empty means vmctl-vmm next to
	// the running program, else in PATH.
	Binary string
	// Detach lets VMs outlive the engine process.
	Detach bool
	// Unjailed starts vmctl-vmm without its jail (it still filters its
	// system calls). The jail needs root: a driver not running as root
	// never jails.
	Unjailed bool
}

// maxShares is how many virtio-9p devices vmctl-vmm gives a VM.
const maxShares = 4

// Driver starts vmctl-vmm VMs.
type Driver struct {
	binary string
	detach bool
	jail   bool
}

// New finds the vmctl-vmm binary.
func New(opts Options) (*Driver, error) {
	bin := opts.Binary
	if bin == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), Binary); isExecutable(p) {
				bin = p
			}
		}
	}
	if bin == "" {
		p, err := exec.LookPath(Binary)
		if err != nil {
			return nil, fmt.Errorf("%s not found next to this program or in PATH: build it with `make build`", Binary)
		}
		bin = p
	}
	if !isExecutable(bin) {
		return nil, fmt.Errorf("%s is not an executable file", bin)
	}
	return &Driver{binary: bin, detach: opts.Detach, jail: !opts.Unjailed && os.Geteuid() == 0}, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// ShareFS returns sandbox.Share9P: vmctl-vmm serves shares over its own
// virtio-9p device.
func (d *Driver) ShareFS() string { return sandbox.Share9P }

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return "kvm" }

// Args returns vmctl-vmm's argument list for cfg, with the given socket and
// log paths. It is exported for tests and for the nested harness.
func Args(cfg sandbox.Config, controlSock, vsockSock, console string) []string {
	cmdline := strings.Join(append([]string{baseCmdline}, cfg.KernelArgs...), " ")
	args := []string{
		"-kernel", cfg.Kernel,
		"-cmdline", cmdline,
		"-vcpus", strconv.Itoa(max(cfg.VCPUs, 1)),
		"-memory", strconv.Itoa(max(cfg.MemoryMiB, 128)),
		"-vsock-uds", vsockSock,
		"-vsock-cid", strconv.Itoa(guestCID),
		"-console", console,
		"-control", controlSock,
		"-log-level", "warn",
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	for _, d := range cfg.Disks {
		spec := d.Path
		if d.Serial != "" {
			spec += ",serial=" + d.Serial
		}
		if d.ReadOnly {
			spec += ",ro"
		}
		args = append(args, "-disk", spec)
	}
	for _, sh := range cfg.Shares {
		spec := sh.Path + ",tag=" + sh.Tag
		if sh.ReadOnly {
			spec += ",ro"
		}
		args = append(args, "-share", spec)
	}
	// vmctl-vmm has one virtio-net device (validate refuses more).
	for i, n := range cfg.NICs[:min(len(cfg.NICs), 1)] {
		if cfg.Template {
			args = append(args, "-detached-nic", "-mac", sandbox.TemplateMAC(i).String())
			continue
		}
		args = append(args, "-tap", n.Tap, "-mac", n.MAC.String())
		if n.MTU > 0 {
			args = append(args, "-mtu", strconv.Itoa(n.MTU))
		}
	}
	return args
}

func validate(cfg sandbox.Config) error {
	if cfg.ID == "" || cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return errors.New("sandbox config: ID and an absolute StateDir are required")
	}
	for _, f := range []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}} {
		if f.path == "" && f.what == "initrd" {
			continue
		}
		if st, err := os.Stat(f.path); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("guest %s not found at %s", f.what, f.path)
		}
	}
	for _, d := range cfg.Disks {
		if strings.Contains(d.Path, ",") || strings.Contains(d.Serial, ",") || len(d.Serial) > 20 {
			return fmt.Errorf("disk %s: paths and serials must not contain commas; serials are at most 20 bytes", d.Path)
		}
	}
	if len(cfg.Shares) > maxShares {
		return fmt.Errorf("%s gives a VM %d shared directories; this one has %d: use the qemu hypervisor for more", Binary, maxShares, len(cfg.Shares))
	}
	tags := map[string]bool{}
	for _, sh := range cfg.Shares {
		if err := sh.Validate(); err != nil {
			return err
		}
		if strings.Contains(sh.Path, ",") || tags[sh.Tag] {
			return fmt.Errorf("share %s: paths must not contain commas and tags must differ", sh.Path)
		}
		tags[sh.Tag] = true
	}
	if len(cfg.NICs) > 1 {
		return fmt.Errorf("%s gives a VM one NIC; this one has %d: use the qemu hypervisor for more", Binary, len(cfg.NICs))
	}
	for _, n := range cfg.NICs {
		if cfg.Template {
			break // placeholders: only their number counts
		}
		if err := n.Validate(); err != nil {
			return err
		}
	}
	// sockaddr_un holds 107 bytes; the vsock device also binds <sock>_<port>.
	if n := len(filepath.Join(cfg.StateDir, "vsock.sock")) + len("_4294967295"); n > 107 {
		return fmt.Errorf("state directory %s is too long for unix sockets: use a shorter one", cfg.StateDir)
	}
	return nil
}

// Start implements sandbox.Driver.
func (d *Driver) Start(ctx context.Context, cfg sandbox.Config) (_ sandbox.Sandbox, err error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	if cfg.NetNS != "" {
		return nil, errors.New("sandbox config: vmctl-vmm does not run in another network namespace (NetNS): use the qemu driver")
	}
	if cfg.Template || cfg.Restore != nil {
		if err := d.CanRestore(cfg); err != nil {
			return nil, fmt.Errorf("sandbox config: %w", err)
		}
	}
	createdDir := false
	if _, err := os.Stat(cfg.StateDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, err
		}
		createdDir = true
	}
	v := &vm{
		id:          cfg.ID,
		stateDir:    cfg.StateDir,
		createdDir:  createdDir,
		controlSock: filepath.Join(cfg.StateDir, "vmm.sock"),
		vsockSock:   filepath.Join(cfg.StateDir, "vsock.sock"),
		logPath:     filepath.Join(cfg.StateDir, "vmm.log"),
		exited:      make(chan struct{}),
	}
	defer func() {
		if err != nil {
			v.Destroy()
		}
	}()
	logf, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	console := cfg.ConsoleLog
	if cfg.Template {
		if cfg.Disks, err = templateDisks(cfg); err != nil {
			return nil, err
		}
		for _, d := range cfg.Disks {
			v.placeholders = append(v.placeholders, d.Path)
		}
	}
	if v.cmd, err = d.command(cfg.StateDir, cfg.ID, Args(cfg, v.controlSock, v.vsockSock, console)); err != nil {
		return nil, err
	}
	kept, err := saveFiles(v.cmd, cfg)
	if err != nil {
		closeExtraFiles(v.cmd)
		return nil, err
	}
	if cfg.Template {
		v.saveState = kept
	}
	if d.jail {
		v.jailDir = jailDir(cfg.StateDir)
	}
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	err = startFromFreshThread(v.cmd)
	closeExtraFiles(v.cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", d.binary, err)
	}
	v.pid = v.cmd.Process.Pid
	v.killProc = func() error { return v.cmd.Process.Signal(syscall.SIGKILL) }
	v.waitProc = func() (int, bool, string) {
		err := v.cmd.Wait()
		st := v.cmd.ProcessState
		if st == nil {
			return 0, false, fmt.Sprint(err)
		}
		return st.ExitCode(), st.Exited(), describeExit(st)
	}
	go v.reap()
	var fed chan error
	if cfg.Restore != nil {
		// vmctl-vmm reads the state to its end before it builds the VM
		// and serves its control socket.
		fed = make(chan error, 1)
		go func() {
			_, err := io.Copy(kept, cfg.Restore)
			kept.Close()
			fed <- err
		}()
	}
	err = v.connectControl(ctx)
	if fed != nil {
		// A VMM that ended early breaks the pipe: its own error says why.
		if ferr := <-fed; ferr != nil && (err == nil || !errors.Is(ferr, syscall.EPIPE)) {
			return nil, fmt.Errorf("restore: read the saved state: %w", ferr)
		}
	}
	if err != nil {
		return nil, err
	}
	if cfg.Restore != nil {
		// Started only now that the whole state was read and found good.
		if _, err := v.ctlAPI.Start(ctx, &vmmapi.StartRequest{}); err != nil {
			return nil, fmt.Errorf("start the restored VM: %w", err)
		}
	}
	return v, nil
}

// Env is the environment a vmctl-vmm process gets: env with the Go
// runtime told to keep transparent huge pages off its heap
// (GODEBUG=disablethp=1). On a host whose THP setting is "always", a heap
// of a few hundred KiB otherwise takes whole 2 MiB pages: 4 MiB of a VMM's
// ~10 MiB outside guest RAM. Guest RAM keeps them.
func Env(env []string) []string {
	for i, e := range env {
		if v, ok := strings.CutPrefix(e, "GODEBUG="); ok {
			if strings.Contains(v, "disablethp=") {
				return env
			}
			out := slices.Clone(env)
			out[i] = e + ",disablethp=1"
			return out
		}
	}
	return append(slices.Clone(env), "GODEBUG=disablethp=1")
}

// jailDir is where a jailed VMM of a VM with stateDir is confined: an
// empty directory its own mount namespace covers with a read-only tmpfs.
func jailDir(stateDir string) string { return filepath.Join(stateDir, "jail") }

// command returns the vmctl-vmm command for the VM id with args, jailed
// when the driver jails: started in mount and pid namespaces of its own,
// with the engine's mount namespace open as descriptor 3 (vmctl-vmm
// refuses to jail itself in it) and the VM's own uid and gid.
func (d *Driver) command(stateDir, id string, args []string) (*exec.Cmd, error) {
	attr := &syscall.SysProcAttr{Setpgid: !d.detach, Setsid: d.detach}
	if !d.detach {
		attr.Pdeathsig = syscall.SIGKILL
	}
	cmd := exec.Command(d.binary, args...)
	cmd.SysProcAttr = attr
	cmd.Env = Env(os.Environ())
	if !d.jail {
		return cmd, nil
	}
	dir := jailDir(stateDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("jail directory: %w", err)
	}
	ns, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		return nil, fmt.Errorf("jail: %w", err)
	}
	uid := strconv.Itoa(sandbox.UnprivilegedID(id))
	cmd.Args = append(cmd.Args, "-jail", dir, "-jail-uid", uid, "-jail-gid", uid, "-jail-outer-ns", "3")
	cmd.ExtraFiles = []*os.File{ns}
	attr.Cloneflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID
	return cmd, nil
}

func closeExtraFiles(cmd *exec.Cmd) {
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
}

// describeExit says how a VMM process ended; a seccomp kill says so.
func describeExit(st *os.ProcessState) string {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGSYS {
		return "killed by SIGSYS: " + Binary + " made a system call its seccomp filter forbids"
	}
	return st.String()
}

// startFromFreshThread starts cmd from a goroutine of its own: Pdeathsig
// fires when the starting *thread* exits, and a caller's thread may be one
// the runtime retires.
func startFromFreshThread(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() { errc <- cmd.Start() }()
	return <-errc
}

type vm struct {
	id, stateDir                    string
	createdDir                      bool
	controlSock, vsockSock, logPath string
	jailDir                         string    // empty if the VMM is not jailed
	cmd                             *exec.Cmd // nil for an adopted VM
	// saveState is a template VM's end of the pipe its state is saved
	// into (Driver.Save).
	saveState    *os.File
	placeholders []string // a template's disks, made in stateDir

	// The VMM process, whether this process started it or adopted it.
	pid      int
	killProc func() error
	// waitProc blocks until the process has ended and returns its exit
	// code, whether the code is known (an adopted VMM is not our child),
	// and a description of how it ended.
	waitProc func() (code int, known bool, how string)
	release  func() // frees what holds the process (an adopted VM's pidfd)
	// watchDone is closed when the control API's Wait has answered or
	// failed: the VMM's own account of the end is in vmmExit then.
	watchDone chan struct{}

	ctl    *ttrpc.Client
	ctlAPI vmmapi.TTRPCVMMService

	mu         sync.Mutex
	exit       sandbox.Exit // guarded by mu; valid once exited is closed
	vmmExit    *vmmapi.ExitStatus
	stopping   bool // guarded by mu: the host asked the VM to end
	exited     chan struct{}
	destroyOne sync.Once
}

func (v *vm) ID() string { return v.id }
func (v *vm) Pid() int   { return v.pid }

// connectControl dials the control socket until vmctl-vmm serves it.
func (v *vm) connectControl(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		conn, err := dialControl(v.controlSock)
		if err == nil {
			v.attachControl(conn)
			return nil
		}
		select {
		case <-v.exited:
			return v.startError()
		case <-ctx.Done():
			return fmt.Errorf("%s did not serve its control socket: %w", Binary, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func dialControl(path string) (net.Conn, error) {
	return net.Dial("unix", path)
}

// attachControl makes conn the control API client and starts watching for
// the end of the VM.
func (v *vm) attachControl(conn net.Conn) {
	v.ctl = ttrpc.NewClient(conn)
	v.ctlAPI = vmmapi.NewTTRPCVMMClient(v.ctl)
	v.watchDone = make(chan struct{})
	go v.watch()
}

// watch keeps the VMM's own account of why the VM ended.
func (v *vm) watch() {
	defer close(v.watchDone)
	resp, err := v.ctlAPI.Wait(context.Background(), &vmmapi.WaitRequest{})
	if err == nil && resp.Exit != nil {
		v.mu.Lock()
		v.vmmExit = resp.Exit
		v.mu.Unlock()
	}
}

func (v *vm) startError() error {
	msg := lastLine(v.logPath)
	if v.cmd.ProcessState != nil && v.cmd.ProcessState.ExitCode() == exitHostKVM {
		return fmt.Errorf("hypervisor kvm: %s", strings.TrimPrefix(msg, "vmctl-vmm: "))
	}
	if msg == "" {
		msg = v.cmd.ProcessState.String()
	}
	return fmt.Errorf("%s failed to start: %s", Binary, msg)
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// reap waits for the VMM process and classifies the end of the VM.
func (v *vm) reap() {
	code, known, how := v.waitProc()
	if v.cmd == nil && v.watchDone != nil {
		// An adopted VMM's exit code is not ours to wait for: its control
		// API said why the VM ended just before the process did.
		select {
		case <-v.watchDone:
		case <-time.After(time.Second):
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !known && v.vmmExit != nil {
		code, known = int(v.vmmExit.ExitCode), true
	}
	ex := sandbox.Exit{At: time.Now()}
	detail := ""
	if v.vmmExit != nil {
		detail = v.vmmExit.Reason
		if v.vmmExit.Detail != "" {
			detail += ": " + v.vmmExit.Detail
		}
	}
	switch {
	case v.stopping && !(known && code == exitGuestEnded):
		ex.Reason, ex.Detail = sandbox.ExitKilled, "stopped by the host"
	case known && code == exitGuestEnded:
		ex.Reason, ex.Detail = sandbox.ExitShutdown, firstNonEmpty(detail, "guest shut down")
		if v.stopping {
			ex.Reason = sandbox.ExitKilled
		}
	default:
		ex.Reason = sandbox.ExitCrashed
		ex.Detail = firstNonEmpty(detail, fmt.Sprintf("%s: %s", how, lastLine(v.logPath)))
	}
	v.exit = ex
	close(v.exited)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// DialAgent connects to the agent through the hybrid vsock socket. The
// guest may still be booting: until the agent listens, the VMM answers a
// CONNECT by closing the connection, so this retries until ctx ends.
func (v *vm) DialAgent(ctx context.Context) (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		conn, err := hybridvsock.Dial(ctx, v.vsockSock, contract.VsockPort)
		if err == nil {
			return conn, nil
		}
		select {
		case <-v.exited:
			return nil, fmt.Errorf("the VM ended before its agent answered: %s", v.exitNow().Detail)
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to the agent over vsock: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

func (v *vm) exitNow() sandbox.Exit {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exit
}

// Wait implements sandbox.Sandbox.
func (v *vm) Wait(ctx context.Context) (sandbox.Exit, error) {
	select {
	case <-v.exited:
		return v.exitNow(), nil
	case <-ctx.Done():
		return sandbox.Exit{}, ctx.Err()
	}
}

// Stop asks the VMM to stop the VM, and kills it if it has not ended when
// ctx does.
func (v *vm) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.stopping = true
	v.mu.Unlock()
	if v.ctlAPI != nil {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		v.ctlAPI.Stop(callCtx, &vmmapi.StopRequest{})
		cancel()
	}
	select {
	case <-v.exited:
		return nil
	case <-ctx.Done():
		v.kill()
		<-v.exited
		return nil
	}
}

func (v *vm) kill() {
	if v.killProc != nil {
		v.killProc()
	}
}

// Destroy kills the VMM if it runs, reaps it and removes what Start made.
func (v *vm) Destroy() error {
	v.destroyOne.Do(func() {
		v.mu.Lock()
		v.stopping = true
		v.mu.Unlock()
		if v.killProc != nil {
			v.kill()
			<-v.exited
		}
		if v.release != nil {
			v.release()
		}
		if v.ctl != nil {
			v.ctl.Close()
		}
		if v.saveState != nil {
			v.saveState.Close()
		}
		for _, p := range append([]string{v.controlSock, v.vsockSock, v.logPath, v.jailDir}, v.placeholders...) {
			if p != "" {
				os.Remove(p)
			}
		}
		if matches, _ := filepath.Glob(v.vsockSock + "_*"); len(matches) > 0 {
			for _, m := range matches {
				os.Remove(m)
			}
		}
		if v.createdDir {
			os.Remove(v.stateDir)
		}
	})
	return nil
}
