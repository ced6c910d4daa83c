// Command vmctl-vmm runs one VM on KVM with the project's native VMM and
// serves its control API (api/vmm/v1, ttrpc) on a unix socket. It is
// wiring only: flags to a machine.Config, the control server, signals,
// and the exit code.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/hypervisor/control"
	"github.com/vmctl/vmctl/hypervisor/jail"
	"github.com/vmctl/vmctl/hypervisor/machine"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

// Process exit codes besides the VM's own (see usage).
const (
	exitSetup   = 1
	exitUsage   = 2
	exitHostKVM = 3
)

const usageText = `usage: vmctl-vmm -kernel BZIMAGE [flags]
       vmctl-vmm -restore DIR [flags]

Runs one VM on KVM and serves its control API (ttrpc, api/vmm/v1) on the
-control unix socket. The guest console (serial ttyS0) goes to -console.

Once the VM is built, and before the guest runs, the process confines
itself: with -jail it pivots into an empty read-only directory and becomes
-jail-uid/-jail-gid with no capabilities (it must then be started in mount
and pid namespaces of its own); with -seccomp (on by default) every thread
gets a system call filter, and each vCPU thread a narrower one of its own.
A call outside them kills the process with SIGSYS.

-save-to DIR and the control API's Save write the running VM into DIR;
-restore DIR builds VMs from it (each maps the saved RAM copy-on-write).

On a host whose transparent huge pages setting is "always", start it with
GODEBUG=disablethp=1 (the engine does): the Go heap then stays in small
pages, a few MiB less per VMM.

Flags:
%s
Exit codes:
  0   the guest powered off or rebooted (i8042 reset, reboot=k), halted,
      or the VM was stopped (control Stop, SIGTERM, SIGINT)
  1   setup or host-side failure (bad file, a -tap that does not exist or
      is in use, a -mtu above the tap's MTU, KVM_RUN failed, ...)
  2   invalid command line
  3   this host's /dev/kvm cannot run full guests (no vmx/svm, or PVM)
  10  triple fault (KVM_EXIT_SHUTDOWN)
  11  instruction emulation failure (KVM internal error, suberror 1)
  12  other KVM internal error
  13  VM entry failure (KVM_EXIT_FAIL_ENTRY)
  14  guest crash reported by KVM
  15  an exit reason the VMM does not handle
`

// diskFlags collects repeated -disk PATH[,serial=S][,ro] values.
type diskFlags []machine.Disk

func (d *diskFlags) String() string { return fmt.Sprint(*d) }

func (d *diskFlags) Set(v string) error {
	parts := strings.Split(v, ",")
	disk := machine.Disk{Path: parts[0]}
	if disk.Path == "" {
		return errors.New("empty path")
	}
	for _, p := range parts[1:] {
		switch {
		case p == "ro":
			disk.ReadOnly = true
		case strings.HasPrefix(p, "serial="):
			disk.Serial = strings.TrimPrefix(p, "serial=")
		default:
			return fmt.Errorf("unknown disk option %q (want serial=S or ro)", p)
		}
	}
	*d = append(*d, disk)
	return nil
}

// shareFlags collects repeated -share PATH,tag=T[,ro] values.
type shareFlags []machine.Share

func (f *shareFlags) String() string { return fmt.Sprint(*f) }

func (f *shareFlags) Set(v string) error {
	parts := strings.Split(v, ",")
	sh := machine.Share{Path: parts[0]}
	if sh.Path == "" {
		return errors.New("empty path")
	}
	for _, p := range parts[1:] {
		switch {
		case p == "ro":
			sh.ReadOnly = true
		case strings.HasPrefix(p, "tag="):
			sh.Tag = strings.TrimPrefix(p, "tag=")
		default:
			return fmt.Errorf("unknown share option %q (want tag=T or ro)", p)
		}
	}
	if sh.Tag == "" {
		return errors.New("no tag=T: the guest mounts a share by its tag")
	}
	*f = append(*f, sh)
	return nil
}

func main() {
	start := time.Now()
	os.Exit(run(start, os.Args[1:]))
}

func run(start time.Time, args []string) int {
	fs := flag.NewFlagSet("vmctl-vmm", flag.ContinueOnError)
	// text is the executable's read-only mappings, read before the process
	// confines itself and dropped once the VM runs.
	var text []textRange
	var (
		kernel    = fs.String("kernel", "", "guest kernel `bzImage` (required)")
		initrd    = fs.String("initrd", "", "initramfs `file`")
		cmdline   = fs.String("cmdline", "console=ttyS0 reboot=k panic=-1 quiet", "kernel command line; virtio_mmio.device= entries are appended")
		vcpus     = fs.Int("vcpus", 1, "number of vCPUs")
		memMiB    = fs.Int("memory", 256, "guest RAM in `MiB`")
		disks     diskFlags
		shares    shareFlags
		vsockUDS  = fs.String("vsock-uds", "", "host unix socket `path` of the hybrid virtio-vsock device (enables it)")
		vsockCID  = fs.Uint("vsock-cid", 3, "guest vsock context ID")
		tap       = fs.String("tap", "", "tap interface `name` for a virtio-net device (enables it)")
		detached  = fs.Bool("detached-nic", false, "a virtio-net device on a tap of its own, attached to nothing (a VM to be saved and restored with a real -tap); needs CAP_NET_ADMIN")
		mac       = fs.String("mac", "", "guest MAC `address` for -tap (default: derived from the tap name)")
		mtu       = fs.Int("mtu", 0, "MTU offered to the guest for -tap, 68 to 65535, at most the tap's (default: the tap's MTU)")
		console   = fs.String("console", "-", "serial console output `file` (- for stdout, empty to discard)")
		ctlPath   = fs.String("control", "", "control API unix socket `path`")
		waitStart = fs.Bool("wait-start", false, "build the VM but boot it only on the control API's Start")
		saveTo    = fs.String("save-to", "", "let the control API's Save write the VM into `directory` (vm.state and vm.mem, made now)")
		ramFD     = fs.Int("ram-fd", -1, "guest RAM is the file (a memfd of -memory MiB) at descriptor `N`: mapped shared, so Save leaves RAM out, or with -restore-state-fd the saved RAM, mapped copy-on-write")
		saveFD    = fs.Int("save-state-fd", -1, "let the control API's Save write the VM state to descriptor `N` (with -ram-fd, which holds the RAM)")
		restoreFD = fs.Int("restore-state-fd", -1, "build the VM from the state read from descriptor `N` to its end and the RAM of -ram-fd")
		restore   = fs.String("restore", "", "build the VM from the one saved in `directory` instead of booting a kernel (same -vcpus, -memory and devices; their backing files, socket and tap may differ)")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		jailDir   = fs.String("jail", "", "confine the VMM in this empty `directory` once the VM is built (needs its own mount and pid namespaces)")
		jailUID   = fs.Int("jail-uid", 0, "unprivileged `uid` the jailed VMM runs as (a VM with -share keeps uid 0 with file capabilities only)")
		jailGID   = fs.Int("jail-gid", 0, "unprivileged `gid` the jailed VMM runs as")
		jailNS    = fs.Int("jail-outer-ns", -1, "open `fd` of the mount namespace the VMM was started from (e.g. 3</proc/$$/ns/mnt): -jail refuses to run in it")
		seccompFl = fs.String("seccomp", "kill", "system call filters: kill (a forbidden call kills the VMM with SIGSYS), trap (the Go runtime prints the calling stack, to find a missing entry) or off")
		probe     = fs.String("seccomp-probe", "", "check the filters: confine as for a VM, make the system call `KIND:NAME` (KIND vmm or vcpu) and exit 0 if it was allowed; see -seccomp-probe help")
	)
	fs.Var(&disks, "disk", "virtio-blk disk `PATH[,serial=S][,ro]` (repeatable; /dev/vda, /dev/vdb, ...)")
	fs.Var(&shares, "share", "host directory `PATH,tag=T[,ro]` served over virtio-9p (repeatable; mount -t 9p -o trans=virtio T DIR)")
	fs.Usage = func() {
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(os.Stderr)
		fmt.Fprintf(os.Stderr, usageText, b.String())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "vmctl-vmm: "+format+"\n", a...)
		return code
	}
	if fs.NArg() > 0 {
		return fail(exitUsage, "unexpected argument %q (see -help)", fs.Arg(0))
	}
	var mode jail.Mode
	switch *seccompFl {
	case "kill", "trap", "off":
		if *seccompFl == "trap" {
			mode = jail.ModeTrap
		}
	default:
		return fail(exitUsage, "-seccomp %q: want kill, trap or off", *seccompFl)
	}
	filtered := *seccompFl != "off"
	needs := jail.Needs{Shares: len(shares) > 0}
	var jcfg *jail.Config
	if *jailDir != "" {
		jcfg = &jail.Config{Root: *jailDir, UID: *jailUID, GID: *jailGID, KeepFileCaps: needs.Shares, Proc: needs.Shares, OuterMountNS: *jailNS}
		if !needs.Shares && (*jailUID <= 0 || *jailGID <= 0) {
			return fail(exitUsage, "-jail needs -jail-uid and -jail-gid: an unprivileged user and group other than 0")
		}
	} else if *jailUID != 0 || *jailGID != 0 {
		return fail(exitUsage, "-jail-uid and -jail-gid go with -jail DIR")
	}
	// confine jails the process and loads its filter; vCPU threads stack
	// theirs when they start.
	confine := func() error {
		if jcfg != nil {
			if err := jail.Enter(*jcfg); err != nil {
				return err
			}
		}
		if filtered {
			return jail.LoadProcess(needs, mode)
		}
		return nil
	}
	if *probe != "" {
		return runProbe(*probe, needs, mode, filtered, confine)
	}
	if *kernel == "" && *restore == "" && *restoreFD < 0 {
		return fail(exitUsage, "no kernel: give -kernel PATH or -restore DIR (see -help)")
	}
	if (*saveTo != "" || *saveFD >= 0) && *ctlPath == "" {
		return fail(exitUsage, "-save-to and -save-state-fd need -control: Save is a control API call")
	}
	if (*saveFD >= 0 || *restoreFD >= 0) && *ramFD < 0 {
		return fail(exitUsage, "-save-state-fd and -restore-state-fd go with -ram-fd, the guest RAM's file")
	}
	if (*saveTo != "" && *saveFD >= 0) || (*restore != "" && (*restoreFD >= 0 || *ramFD >= 0)) {
		return fail(exitUsage, "-save-to and -restore keep RAM in their directory: not with -save-state-fd, -restore-state-fd or -ram-fd")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail(exitUsage, "-log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := machine.Config{
		Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline, VCPUs: *vcpus, MemoryMiB: *memMiB,
		Disks: disks, Shares: shares, Log: log, ProcessStart: start,
	}
	if filtered {
		cfg.VCPUThreadSetup = func() error { return jail.LoadThread(jail.KindVCPU, needs, mode) }
	}
	if *vsockUDS != "" {
		if *vsockCID > 1<<32-1 {
			return fail(exitUsage, "-vsock-cid %d: out of range", *vsockCID)
		}
		// Once the guest's service has answered, the code and data that
		// booted it (the kernel's loading, each device's set-up, stacks
		// grown once) are not needed: let go of them a second time, as at
		// start, and keep resident only what the running VM touches.
		cfg.Vsock = &machine.Vsock{CID: uint32(*vsockCID), UDSPath: *vsockUDS, FirstConnect: func() { dropText(text) }}
	}
	if *tap != "" && *detached {
		return fail(exitUsage, "-tap and -detached-nic both give the one NIC: choose one")
	}
	if *tap == "" && !*detached && (*mac != "" || *mtu != 0) {
		return fail(exitUsage, "-mac and -mtu configure the NIC of -tap: give -tap NAME too")
	}
	if *tap != "" || *detached {
		cfg.Net = &machine.Net{Tap: *tap, MTU: *mtu, Detached: *detached}
		if *mac != "" {
			hw, err := net.ParseMAC(*mac)
			if err != nil || len(hw) != 6 {
				return fail(exitUsage, "-mac %q: want an Ethernet address like 02:00:00:00:00:01", *mac)
			}
			if hw[0]&1 != 0 || [6]byte(hw) == [6]byte{} {
				return fail(exitUsage, "-mac %s: want a unicast address (the first byte even), not all zeros", *mac)
			}
			copy(cfg.Net.MAC[:], hw)
		}
	}
	out, closeOut, err := openConsole(*console)
	if err != nil {
		return fail(exitSetup, "%v", err)
	}
	defer closeOut()
	cfg.Console = out

	if *restore != "" {
		snap, err := openSnapshot(*restore)
		if err != nil {
			return fail(exitSetup, "-restore: %v", err)
		}
		defer snap.Memory.Close()
		cfg.Restore = snap
	}
	if *ramFD >= 0 {
		cfg.RAM = os.NewFile(uintptr(*ramFD), "ram")
		defer cfg.RAM.Close()
	}
	if *restoreFD >= 0 {
		f := os.NewFile(uintptr(*restoreFD), "state")
		state, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return fail(exitSetup, "-restore-state-fd: %v", err)
		}
		cfg.Restore = &machine.Snapshot{State: state}
	}
	var save *control.SaveFiles
	switch {
	case *saveTo != "":
		if save, err = createSaveFiles(*saveTo); err != nil {
			return fail(exitSetup, "-save-to: %v", err)
		}
		defer save.State.Close()
		defer save.Memory.Close()
	case *saveFD >= 0:
		save = &control.SaveFiles{State: os.NewFile(uintptr(*saveFD), "save-state")}
		defer save.State.Close()
	}
	if err := cfg.Validate(); err != nil {
		return fail(exitUsage, "%v", err)
	}
	m, err := machine.New(cfg)
	if errors.Is(err, machine.ErrKVMCannotRunGuests) {
		return fail(exitHostKVM, "%v", err)
	}
	if err != nil {
		return fail(exitSetup, "%v", err)
	}
	defer m.Close()

	var srv *control.Server
	if *ctlPath != "" {
		svc := control.NewService(m, control.Info{VCPUs: cfg.VCPUs, MemoryMiB: cfg.MemoryMiB, Cmdline: m.Cmdline})
		if save != nil {
			svc.EnableSave(m, *save)
		}
		srv, err = control.Listen(*ctlPath, svc)
		if err != nil {
			return fail(exitSetup, "%v", err)
		}
	}
	text, err = executableText()
	if err != nil {
		log.Warn("the executable's mappings (its code stays resident)", "err", err)
	}
	// Everything the VM uses is open: confine the process before anyone
	// can talk to it and before the guest runs.
	if err := confine(); err != nil {
		return fail(exitSetup, "%v", err)
	}
	if srv != nil {
		srv.Serve()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		log.Info("signal: stopping the VM", "signal", s.String())
		m.Stop()
	}()
	if !*waitStart {
		if err := m.Start(); err != nil {
			return fail(exitSetup, "%v", err)
		}
	} else if srv == nil {
		return fail(exitUsage, "-wait-start needs -control")
	}
	dropText(text)
	r := m.Wait()
	if srv != nil {
		// Let Wait callers get their answer before the socket goes away.
		if err := srv.Shutdown(2 * time.Second); err != nil {
			log.Warn("control socket shutdown", "err", err)
		}
	}
	if r.Reason != vcpu.ReasonStopped {
		log.Info("guest ended", "reason", r.Reason.String(), "exit_code", r.Reason.ExitCode())
	}
	return r.Reason.ExitCode()
}

// runProbe confines the process as for a VM and makes one system call:
// exit 0 if the filters let it through; a forbidden call kills the process
// with SIGSYS before it can answer.
func runProbe(spec string, needs jail.Needs, mode jail.Mode, filtered bool, confine func() error) int {
	if spec == "help" {
		fmt.Printf("-seccomp-probe KIND:NAME, KIND vmm or vcpu, NAME one of:\n  %s\n", strings.Join(jail.ProbeNames(), "\n  "))
		return 0
	}
	if err := confine(); err != nil {
		fmt.Fprintf(os.Stderr, "vmctl-vmm: %v\n", err)
		return exitSetup
	}
	errno, err := jail.Probe(spec, needs, mode, filtered)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmctl-vmm: %v\n", err)
		return exitUsage
	}
	fmt.Printf("%s: allowed (%v)\n", spec, errno)
	return 0
}

// Files of a saved VM in its directory.
const (
	stateFile  = "vm.state"
	memoryFile = "vm.mem"
)

// createSaveFiles makes the empty files Save writes into.
func createSaveFiles(dir string) (*control.SaveFiles, error) {
	st, err := os.OpenFile(filepath.Join(dir, stateFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	mem, err := os.OpenFile(filepath.Join(dir, memoryFile), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &control.SaveFiles{State: st, Memory: mem}, nil
}

// openSnapshot reads a saved VM's state and opens its RAM file.
func openSnapshot(dir string) (*machine.Snapshot, error) {
	state, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	mem, err := os.Open(filepath.Join(dir, memoryFile))
	if err != nil {
		return nil, err
	}
	return &machine.Snapshot{State: state, Memory: mem}, nil
}

// openConsole returns the serial console's destination.
func openConsole(path string) (io.Writer, func(), error) {
	switch path {
	case "-":
		return os.Stdout, func() {}, nil
	case "":
		return io.Discard, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	return f, func() { f.Close() }, nil
}
