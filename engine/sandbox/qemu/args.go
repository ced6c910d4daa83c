package qemu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/virtiofsd"
)

// Defaults for a Config that leaves sizes at zero.
const (
	defaultVCPUs     = 1
	defaultMemoryMiB = 512
)

// baseCmdline is the start of every guest command line:
//   - console=ttyS0: the microvm ISA serial port is the only console.
//   - reboot=t panic=-1: a guest reboot (or panic) triple-faults, which
//     -no-reboot turns into a QEMU exit; an ACPI-less kernel cannot power off.
//   - quiet: each console byte is an emulated UART write, which is slow under
//     TCG; errors still print.
//   - rcupdate.rcu_expedited=1: synchronize_rcu waits for an expedited
//     grace period (an IPI round, nothing to wait for on one vCPU) rather
//     than for ticks; a guest started from a saved state unbinds and binds
//     its disk and NIC drivers, which waits for several: a restored
//     `vmctl run` to first output went from 0.92 s to 0.78 s (median of 9
//     under TCG), boots are unchanged.
//
// Boot-time options, measured under TCG (median boot to the agent's first
// byte, see the package doc):
//   - tsc=reliable: skips the TSC stability watchdog and its checks; the
//     guest's TSC is QEMU's monotonic host clock (TCG) or stable (KVM).
//   - nolapic_timer (TCG, one vCPU): skips the local APIC timer
//     calibration, which waits 10 jiffies of emulated time (~0.3 s under
//     TCG); the PIT then drives the tick. With several vCPUs every CPU
//     needs its own timer, so the calibration stays.
const (
	baseCmdline  = "console=ttyS0 reboot=t panic=-1 quiet rcupdate.rcu_expedited=1"
	tuneCmdline  = "tsc=reliable"
	tcgUPCmdline = "nolapic_timer"
)

// maxCmdline is x86's COMMAND_LINE_SIZE. QEMU appends one
// "virtio_mmio.device=512@0xfeb00000:12" (about 40 bytes) per device.
const (
	maxCmdline         = 2048
	mmioCmdlineReserve = 48
)

// maxMMIODevices is the number of virtio-mmio transports of QEMU's microvm
// machine; the agent's virtio-serial device takes one, each disk and each
// NIC one more.
const maxMMIODevices = 24

// maxSerial is VIRTIO_BLK_ID_BYTES.
const maxSerial = 20

// maxUnixPath is sizeof(sockaddr_un.sun_path) minus the NUL.
const maxUnixPath = 107

// qmpFD and agentFD are the descriptor numbers of the inherited QMP and
// agent listening sockets (ExtraFiles[0] and [1]).
const (
	qmpFD   = 3
	agentFD = 4
	// stateFD is, for a restored VM, the read end of the pipe its saved
	// state comes through ("-incoming fd:5"); for a Template VM, the
	// listening socket of a second QMP monitor, which Save uses to pass
	// QEMU the pipe its state goes out through (save.go).
	stateFD = 5
)

// agentPortID is the agent's virtio-serial port device: QEMU reports the
// guest opening and closing it (VSERPORT_CHANGE) only for a device with an
// ID.
const agentPortID = "agentport"

// State directory entries created by the driver.
const (
	qmpSocketName   = "qmp.sock"
	agentSocketName = "agent.sock"
	stderrLogName   = "qemu.log"
	pidFileName     = "qemu.pid"
	// saveSocketName is a Template VM's second QMP monitor (save.go).
	saveSocketName = "save.sock"
	// jailDirName is the empty directory a jailed QEMU chroots into.
	jailDirName = "jail"
)

// privDrop is how QEMU is told to give up root once its VM is built:
// QEMU 7.2 has -chroot and -runas, later versions -run-with (which
// replaced them). Chosen by probing QEMU's -help in New.
type privDrop int

const (
	dropNone    privDrop = iota // this QEMU cannot drop privileges
	dropRunas                   // -chroot DIR -runas UID:GID
	dropRunWith                 // -run-with chroot=DIR,user=UID:GID
)

// jailSpec confines one QEMU: after opening everything its VM needs and
// before the guest runs, QEMU chroots into an empty directory and becomes
// uid:gid, losing every capability.
type jailSpec struct {
	how      privDrop
	root     string
	uid, gid int
}

// launch is everything buildArgs needs, already validated.
type launch struct {
	id         string
	accel      string
	cfg        sandbox.Config
	pidFile    string
	consoleLog string
	// shareFS is how shares reach the guest: sandbox.ShareVirtioFS or
	// sandbox.Share9P.
	shareFS string
	// vhostNet moves the NICs' data path into the host kernel
	// (/dev/vhost-net); without it QEMU's own thread copies every frame.
	vhostNet bool
	// jail, if set, confines QEMU once the VM is built.
	jail *jailSpec
	// template attaches placeholders for the disks and NICs (save.go);
	// incoming loads the VM's state from stateFD instead of booting.
	template, incoming bool
	// diskFDs, if set, are the inherited descriptors of each disk, which
	// QEMU then opens through an fd set rather than by path.
	diskFDs [][]int
	// memFD, if not 0, is the inherited descriptor of the guest's RAM
	// (Config.Memory): shared by a template, mapped copy-on-write by a
	// restored VM, left out of the migration stream by both.
	memFD int
}

// placeholderDiskBytes is the size of a Template VM's empty disks: any
// size works, the restored guest reads its disks' sizes again.
const placeholderDiskBytes = 1 << 20

// vhostNetDevice is the host kernel's virtio-net backend.
const vhostNetDevice = "/dev/vhost-net"

// vhostNetAvailable reports whether QEMU can use vhost-net: QEMU fails to
// start with vhost=on when it cannot open the device, so it is only asked
// for where opening works. Replaced in tests.
var vhostNetAvailable = func() bool {
	f, err := os.OpenFile(vhostNetDevice, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// buildArgs returns QEMU's argument list (without argv[0]).
func buildArgs(l launch) []string {
	cfg := l.cfg
	vcpus, mem := cfg.VCPUs, cfg.MemoryMiB
	if vcpus <= 0 {
		vcpus = defaultVCPUs
	}
	if mem <= 0 {
		mem = defaultMemoryMiB
	}
	var r ram = ramDefault
	switch {
	case len(cfg.Shares) > 0 && l.shareFS != sandbox.Share9P:
		r = ramSharedMemfd
	case l.memFD != 0:
		r = ramFile{fd: l.memFD, shared: l.template}
	}
	args := append([]string{"-name", "guest=" + escape(l.id)}, machineArgs(l.accel, vcpus, mem, r)...)

	// The guest is untrusted: QEMU's seccomp filter drops what it never
	// needs (spawning processes, raising privileges, obsolete syscalls).
	// A jailed QEMU must keep set*id, or its own change of user would be
	// killed; once it has changed user they only ever lower privileges.
	elevate := "deny"
	if l.jail != nil {
		elevate = "allow"
	}
	args = append(args,
		"-sandbox", "on,obsolete=deny,elevateprivileges="+elevate+",spawn=deny,resourcecontrol=deny",
		"-msg", "timestamp=off",
		// Start paused: the driver subscribes to QMP events and then sends
		// "cont", so no SHUTDOWN event can be missed.
		"-S",
		"-pidfile", l.pidFile,
		"-kernel", cfg.Kernel,
		"-append", kernelCmdline(l.accel, vcpus, cfg.KernelArgs),
		// Modern (virtio 1.0) MMIO transport instead of QEMU's legacy default.
		"-global", "virtio-mmio.force-legacy=false",
	)
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	if l.consoleLog != "" {
		args = append(args,
			"-chardev", "file,id=console,path="+escape(l.consoleLog),
			"-serial", "chardev:console")
	} else {
		args = append(args, "-serial", "null")
	}
	args = append(args,
		// QMP listens on a socket the driver bound before QEMU started and
		// passed as a descriptor, so the driver can connect without polling.
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", qmpFD),
		"-mon", "chardev=qmp,mode=control",
		// The agent channel: QEMU serves the socket the driver bound, as
		// for QMP, and takes one client at a time: the driver connects,
		// and so does a restarted daemon once the old connection is gone.
		// QEMU never opens a path for it, so it works from a jail.
		"-device", "virtio-serial-device,max_ports=2",
		"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", agentFD),
		"-device", "virtserialport,id="+agentPortID+",chardev=agent,name="+contract.SerialPortName,
	)
	if j := l.jail; j != nil {
		// QEMU applies these after opening every file, device and socket
		// of the command line and before the guest's first instruction.
		ids := fmt.Sprintf("%d:%d", j.uid, j.gid)
		switch j.how {
		case dropRunas:
			args = append(args, "-chroot", j.root, "-runas", ids)
		case dropRunWith:
			args = append(args, "-run-with", "chroot="+escape(j.root)+",user="+ids)
		}
	}
	switch {
	case l.incoming && l.memFD != 0:
		// The stream leaves the RAM out (x-ignore-shared), a capability
		// only QMP sets: the driver starts the load (save.go).
		args = append(args, "-incoming", "defer")
	case l.incoming:
		args = append(args, "-incoming", fmt.Sprintf("fd:%d", stateFD))
	}
	if l.template {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=save,fd=%d,server=on,wait=off", stateFD),
			"-mon", "chardev=save,mode=control")
	}
	for i, d := range cfg.Disks {
		id := fmt.Sprintf("disk%d", i)
		if l.template {
			// Writable and empty: a restored disk may be read-only, as
			// VIRTIO_BLK_F_RO is a feature the guest re-reads; the other
			// way round would not load.
			args = append(args,
				"-drive", fmt.Sprintf("driver=null-co,if=none,id=%s,size=%d,read-zeroes=on", id, placeholderDiskBytes),
				"-device", "virtio-blk-device,drive="+id)
			continue
		}
		// I/O errors (a full host disk) are reported to the guest, whose
		// processes then fail their writes, not stopped at: QEMU's default
		// pauses the VM and the container looks up while nothing it
		// writes goes anywhere.
		file := escape(d.Path)
		if i < len(l.diskFDs) {
			set := i + 1
			for _, fd := range l.diskFDs[i] {
				args = append(args, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
			}
			file = fmt.Sprintf("/dev/fdset/%d", set)
		}
		drive := fmt.Sprintf("file=%s,if=none,id=%s,format=raw,cache=writeback,werror=report,rerror=report", file, id)
		if d.ReadOnly {
			drive += ",readonly=on"
		} else {
			// Let the guest's discards punch holes in sparse images.
			drive += ",readonly=off,discard=unmap"
		}
		dev := "virtio-blk-device,drive=" + id
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		args = append(args, "-drive", drive, "-device", dev)
	}
	for i, sh := range cfg.Shares {
		if l.shareFS == sandbox.Share9P {
			// QEMU's 9p server, kept to measure against (Options.ShareFS):
			// passthrough keeps the guest's owners, remap keeps inode
			// numbers of file systems under the share apart.
			fsdev := fmt.Sprintf("local,id=fs%d,path=%s,security_model=passthrough,multidevs=remap", i, escape(sh.Path))
			if sh.ReadOnly {
				fsdev += ",readonly=on"
			}
			args = append(args, "-fsdev", fsdev,
				"-device", fmt.Sprintf("virtio-9p-device,fsdev=fs%d,mount_tag=%s", i, sh.Tag))
			continue
		}
		// virtio-fs: the device's queues are served by a virtiofsd the
		// driver started on this socket (package virtiofsd), straight from
		// guest memory, which is therefore a shared memfd (machineArgs).
		// Tags need no escaping (Share.Validate).
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=fs%d,path=%s", i, escape(virtiofsd.SocketName(cfg.StateDir, i))),
			"-device", fmt.Sprintf("vhost-user-fs-device,chardev=fs%d,tag=%s", i, sh.Tag))
	}
	for i, n := range cfg.NICs {
		if l.template {
			// No host side: the device offers no offloads, a subset of
			// what the restored VM's tap offers, so the state loads there.
			args = append(args, "-device", fmt.Sprintf("virtio-net-device,mac=%s", sandbox.TemplateMAC(i)))
			continue
		}
		// The engine created the tap and attached it to its network; QEMU
		// only opens it (script=no: QEMU runs no helper, which -sandbox
		// would refuse anyway). Tap names and MACs need no escaping
		// (validateConfig).
		netdev := fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.Tap)
		if l.vhostNet {
			netdev += ",vhost=on"
		}
		dev := fmt.Sprintf("virtio-net-device,netdev=net%d,mac=%s", i, n.MAC)
		if n.MTU > 0 {
			// VIRTIO_NET_F_MTU: the guest takes it as its MTU.
			dev += ",host_mtu=" + strconv.Itoa(n.MTU)
		}
		args = append(args, "-netdev", netdev, "-device", dev)
	}
	return args
}

// ram is where guest RAM lives: QEMU's own anonymous memory
// (ramDefault), a memfd shared with vhost-user backends (ramSharedMemfd),
// or an inherited file (ramFile).
type ram interface{ backend(memMiB int) string }

type ramKind int

const (
	ramDefault ramKind = iota
	ramSharedMemfd
)

func (k ramKind) backend(memMiB int) string {
	if k == ramSharedMemfd {
		return fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", memMiB)
	}
	return ""
}

// ramFile is the guest RAM in descriptor fd: mapped shared (a template,
// whose RAM a restore maps) or private (copy-on-write).
type ramFile struct {
	fd     int
	shared bool
}

func (f ramFile) backend(memMiB int) string {
	share := "off"
	if f.shared {
		share = "on"
	}
	return fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=/proc/self/fd/%d,share=%s", memMiB, f.fd, share)
}

// machineArgs is the virtual hardware: the same for every VM of a given
// size, and for the bare boots benchmarks compare against.
func machineArgs(accel string, vcpus, memMiB int, r ram) []string {
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	machine := "microvm,acpi=off"
	var memArgs []string
	if b := r.backend(memMiB); b != "" {
		// A vhost-user backend (virtiofsd) maps guest memory itself; a
		// saved guest's RAM is a file of its own.
		machine += ",memory-backend=mem"
		memArgs = []string{"-object", b}
	}
	return append(memArgs,
		// No ACPI: QEMU then lists the virtio-mmio devices on the kernel
		// command line, which an ACPI-less kernel can read. The legacy
		// PIC/PIT/RTC stay: without the PIT the guest cannot calibrate its
		// clocks under TCG and hangs, without the RTC it boots slower.
		"-M", machine,
		"-accel", accel,
		"-cpu", cpu,
		"-smp", strconv.Itoa(vcpus),
		"-m", strconv.Itoa(memMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
	)
}

// BareArgs is the argument list of a plain QEMU boot of kernel and initrd
// on the same virtual hardware and kernel command line as the driver's
// VMs, with the serial console on stdout and no disks, monitor or agent
// channel. It is the reference point of boot benchmarks.
func BareArgs(accel string, vcpus, memMiB int, kernel, initrd string, kernelArgs []string) []string {
	args := machineArgs(accel, vcpus, memMiB, ramDefault)
	return append(args,
		"-kernel", kernel, "-initrd", initrd,
		"-append", kernelCmdline(accel, vcpus, kernelArgs),
		"-serial", "stdio")
}

// kernelCmdline joins the driver's options and the caller's; the caller's
// come last, so they win where the kernel takes the last value.
func kernelCmdline(accel string, vcpus int, extra []string) string {
	parts := []string{baseCmdline, tuneCmdline}
	if accel == "tcg" && vcpus == 1 {
		parts = append(parts, tcgUPCmdline)
	}
	if accel == "tcg" {
		if khz := hostTSC(); khz > 0 {
			// Under TCG the guest reads the host's TSC, so its rate is
			// known. Calibrating it against emulated timers fails on a busy
			// host (or across vCPUs) and leaves the guest on the 10 ms
			// jiffies clock.
			parts = append(parts, "tsc_early_khz="+strconv.FormatInt(khz, 10))
		}
	}
	return strings.Join(append(parts, extra...), " ")
}

// hostTSC is replaced in tests, whose expectations must not depend on the host.
var hostTSC = hostTSCkHz

var (
	tscOnce sync.Once
	tscKHz  int64
)

// hostTSCkHz is the host's TSC rate when the host knows it exactly (the
// tsc_known_freq flag), else 0.
func hostTSCkHz() int64 {
	tscOnce.Do(func() {
		b, err := os.ReadFile("/proc/cpuinfo")
		if err == nil {
			tscKHz = parseTSCkHz(string(b))
		}
	})
	return tscKHz
}

// parseTSCkHz reads the first CPU's "cpu MHz" from /proc/cpuinfo text if its
// flags say the TSC frequency is known.
func parseTSCkHz(cpuinfo string) int64 {
	var mhz float64
	known := false
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			if strings.TrimSpace(line) == "" && mhz > 0 {
				break // end of the first CPU
			}
			continue
		}
		switch strings.TrimSpace(k) {
		case "cpu MHz":
			mhz, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		case "flags":
			for _, f := range strings.Fields(v) {
				if f == "tsc_known_freq" {
					known = true
				}
			}
		}
	}
	if !known || mhz <= 0 || mhz > 100000 {
		return 0
	}
	return int64(mhz*1000 + 0.5)
}

// escape doubles commas, QEMU's escape inside option values.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// validateConfig checks cfg before anything is created, so that a bad
// config fails with one clear line and leaves nothing behind.
func validateConfig(cfg sandbox.Config) error {
	if cfg.ID == "" {
		return errors.New("sandbox config: ID is empty")
	}
	if strings.ContainsAny(cfg.ID, "\x00\n") {
		return fmt.Errorf("sandbox config: ID %q contains a control character", cfg.ID)
	}
	for _, p := range []struct{ what, path string }{
		{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}, {"state dir", cfg.StateDir}, {"console log", cfg.ConsoleLog},
	} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return fmt.Errorf("sandbox config: %s path %q is not absolute", p.what, p.path)
		}
	}
	if cfg.StateDir == "" {
		return errors.New("sandbox config: StateDir is empty")
	}
	if cfg.Template && cfg.Restore != nil {
		return errors.New("sandbox config: a VM is either a template or restored, not both")
	}
	if cfg.Memory != nil && !cfg.Template && cfg.Restore == nil {
		return errors.New("sandbox config: Memory is for template and restored VMs")
	}
	if (cfg.Template || cfg.Restore != nil) && len(cfg.Shares) > 0 {
		return errors.New(errSharesUnsaved)
	}
	if cfg.Kernel == "" {
		return errors.New("sandbox config: Kernel is empty")
	}
	if err := checkFile("kernel", cfg.Kernel); err != nil {
		return err
	}
	if cfg.Initrd != "" {
		if err := checkFile("initrd", cfg.Initrd); err != nil {
			return err
		}
	}
	for _, a := range cfg.KernelArgs {
		if a == "" || strings.ContainsAny(a, "\x00\n") {
			return fmt.Errorf("sandbox config: kernel argument %q is empty or contains a control character", a)
		}
	}
	devices := len(cfg.Disks) + len(cfg.NICs) + len(cfg.Shares)
	if n := len(kernelCmdline("tcg", 1, cfg.KernelArgs)) + mmioCmdlineReserve*(1+devices); n > maxCmdline {
		return fmt.Errorf("sandbox config: kernel command line too long (%d bytes with device entries, limit %d)", n, maxCmdline)
	}
	if devices > maxMMIODevices-1 {
		return fmt.Errorf("sandbox config: %d disks, %d shares and %d NICs, the microvm machine takes at most %d devices", len(cfg.Disks), len(cfg.Shares), len(cfg.NICs), maxMMIODevices-1)
	}
	taps, macs := map[string]bool{}, map[string]bool{}
	for _, n := range cfg.NICs {
		if cfg.Template {
			continue // placeholders
		}
		if err := n.Validate(); err != nil {
			return fmt.Errorf("sandbox config: %w", err)
		}
		if taps[n.Tap] || macs[n.MAC.String()] {
			return fmt.Errorf("sandbox config: two NICs share tap %s or MAC address %s", n.Tap, n.MAC)
		}
		taps[n.Tap], macs[n.MAC.String()] = true, true
	}
	tags := map[string]bool{}
	for _, sh := range cfg.Shares {
		if err := sh.Validate(); err != nil {
			return fmt.Errorf("sandbox config: %w", err)
		}
		if tags[sh.Tag] {
			return fmt.Errorf("sandbox config: share tag %q used twice", sh.Tag)
		}
		tags[sh.Tag] = true
	}
	serials := map[string]bool{}
	for _, d := range cfg.Disks {
		if cfg.Template {
			continue // placeholders
		}
		if !filepath.IsAbs(d.Path) {
			return fmt.Errorf("sandbox config: disk path %q is not absolute", d.Path)
		}
		if err := validateSerial(d.Serial); err != nil {
			return fmt.Errorf("sandbox config: disk %s: %w", d.Path, err)
		}
		if d.Serial != "" && serials[d.Serial] {
			return fmt.Errorf("sandbox config: disk serial %q used twice", d.Serial)
		}
		serials[d.Serial] = true
	}
	for i := range cfg.Shares {
		if p := virtiofsd.SocketName(cfg.StateDir, i); len(p) > maxUnixPath {
			return fmt.Errorf("sandbox config: socket path %s is %d bytes, unix sockets allow %d: use a shorter StateDir", p, len(p), maxUnixPath)
		}
	}
	for _, name := range []string{qmpSocketName, agentSocketName} {
		if p := filepath.Join(cfg.StateDir, name); len(p) > maxUnixPath {
			return fmt.Errorf("sandbox config: socket path %s is %d bytes, unix sockets allow %d: use a shorter StateDir", p, len(p), maxUnixPath)
		}
	}
	return nil
}

// validateSerial accepts at most VIRTIO_BLK_ID_BYTES of letters, digits and
// "-_.". Anything else could break QEMU's option syntax (",") or confuse the
// agent's lookup in /sys/block/*/serial.
func validateSerial(s string) error {
	if len(s) > maxSerial {
		return fmt.Errorf("serial %q is %d bytes, virtio-blk allows %d", s, len(s), maxSerial)
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("serial %q: character %q not allowed (use letters, digits, '-', '_', '.')", s, c)
		}
	}
	return nil
}

func checkFile(what, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s %s does not exist", what, path)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", what, path)
	}
	return nil
}
