package vmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmctl/vmctl/api/agent/contract"
	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

const (
	qemuBinary   = "qemu-system-x86_64"
	agentVersion = "vmtest"
	// bootTimeout is generous: TCG emulation on a loaded 2-core machine.
	bootTimeout = 90 * time.Second
)

// guestKernel is the kernel the kernel build puts in the repository's bin/.
var guestKernel = filepath.Join("..", "..", "bin", "guest", "vmlinuz")

var (
	buildOnce sync.Once
	initrd    string
	buildErr  error
)

// requireVM skips unless QEMU and the guest kernel exist, and builds the
// agent and its initramfs once per test binary.
func requireVM(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath(qemuBinary); err != nil {
		t.Skipf("needs %s (qemu-system-x86): %v", qemuBinary, err)
	}
	if _, err := os.Stat(guestKernel); err != nil {
		t.Skipf("needs the guest kernel at bin/guest/vmlinuz (make kernel): %v", err)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmctl-vmtest-")
		if err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(dir, "vmctl-agent")
		cmd := exec.Command("go", "build", "-trimpath",
			"-ldflags", "-s -w -X github.com/vmctl/vmctl/guest-agent/service.Version="+agentVersion,
			"-o", bin, "github.com/vmctl/vmctl/cmd/vmctl-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build agent: %v: %s", err, out)
			return
		}
		initrd = filepath.Join(dir, "initramfs.cpio")
		buildErr = writeInitramfs(initrd, bin)
		os.Remove(bin)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return initrd
}

func TestMain(m *testing.M) {
	code := m.Run()
	if initrd != "" {
		os.RemoveAll(filepath.Dir(initrd))
	}
	os.Exit(code)
}

type disk struct {
	path, serial string
	readonly     bool
}

// guest is a running VM and the agent client connected to it.
type guest struct {
	cmd     *exec.Cmd
	exited  chan error
	console string
	l       net.Listener
	conn    net.Conn
	client  *ttrpc.Client
	agent   agent.TTRPCAgentService
}

// bootOpts vary a boot.
type bootOpts struct {
	cmdline string // appended to the kernel command line
	disks   []disk
	// connect waits for the agent's channel and its answer to Health.
	connect bool
	// noAgentPort leaves the virtio-serial port out.
	noAgentPort bool
	// netns runs QEMU in this named network namespace (ip netns), where
	// the taps of nics are.
	netns string
	nics  []nic
}

// nic is a virtio-net device on a tap, as the engine's QEMU driver gives it.
type nic struct {
	tap, mac string
	mtu      int
}

// boot starts QEMU with the agent as init.
func boot(t *testing.T, o bootOpts) *guest {
	t.Helper()
	initrd := requireVM(t)
	// A short directory: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "vmt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	g := &guest{console: filepath.Join(dir, "console.log"), exited: make(chan error, 1), l: l}
	args := []string{
		"-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", guestKernel, "-initrd", initrd,
		"-append", "console=ttyS0 reboot=t panic=-1 quiet tsc=reliable nolapic_timer " + o.cmdline,
		"-global", "virtio-mmio.force-legacy=false",
		"-chardev", "file,id=console,path=" + g.console, "-serial", "chardev:console",
	}
	if !o.noAgentPort {
		args = append(args,
			"-device", "virtio-serial-device",
			// reconnect=1: QEMU dials again a second after the host side
			// closed, as with the engine's QEMU driver.
			"-chardev", "socket,id=agent,reconnect=1,path="+sock,
			"-device", "virtserialport,chardev=agent,name="+contract.SerialPortName)
	}
	for i, d := range o.disks {
		drive := fmt.Sprintf("id=d%d,file=%s,format=raw,if=none", i, d.path)
		if d.readonly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=d%d,serial=%s", i, d.serial))
	}
	for i, n := range o.nics {
		dev := fmt.Sprintf("virtio-net-device,netdev=net%d,mac=%s", i, n.mac)
		if n.mtu != 0 {
			dev += fmt.Sprintf(",host_mtu=%d", n.mtu)
		}
		args = append(args, "-netdev", fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.tap), "-device", dev)
	}
	g.cmd = exec.Command(qemuBinary, args...)
	if o.netns != "" {
		// ip netns exec execs QEMU in the namespace: the pid stays QEMU's.
		g.cmd = exec.Command("ip", append([]string{"netns", "exec", o.netns, qemuBinary}, args...)...)
	}
	var stderr bytes.Buffer
	g.cmd.Stderr = &stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	go func() {
		err := g.cmd.Wait()
		if err != nil && stderr.Len() > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		g.exited <- err
	}()
	t.Cleanup(func() {
		if g.client != nil {
			g.client.Close()
		}
		select {
		case <-g.exited:
		default:
			g.cmd.Process.Kill()
			<-g.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(g.console)
			t.Logf("guest console:\n%s", b)
		}
	})
	if !o.connect {
		return g
	}

	g.connect(t, bootTimeout)
	return g
}

// connect accepts QEMU's connection to the agent socket and waits until the
// agent answers Health on it.
func (g *guest) connect(t *testing.T, timeout time.Duration) {
	t.Helper()
	// QEMU connects as soon as it starts (and again after a disconnect).
	g.l.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := g.l.Accept()
	if err != nil {
		t.Fatalf("QEMU did not connect the agent channel: %v", err)
	}
	g.conn = conn
	g.client = ttrpc.NewClient(g.conn)
	g.agent = agent.NewTTRPCAgentClient(g.client)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := g.agent.Health(ctx, &agent.HealthRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case err := <-g.exited:
			t.Fatalf("QEMU exited before the agent answered: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not answer Health within %v: %v", bootTimeout, err)
		}
	}
}

// waitExit waits for QEMU to end by itself.
func (g *guest) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-g.exited:
		if err != nil {
			t.Errorf("QEMU exit: %v", err)
		}
		g.exited <- err // for the cleanup
	case <-time.After(timeout):
		t.Fatalf("VM still running %v after the agent was told to end it", timeout)
	}
}

// dockerSpec is roughly what Docker generates for `docker run`.
func dockerSpec(hostname string, args ...string) *specs.Spec {
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Root:     &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{Bounding: []string{
				"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
				"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
				"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=67108864"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.CgroupNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

var containerDisks = []*agent.Storage{
	{Serial: "img0", Fstype: "ext4", Readonly: true, Role: "image"},
	{Serial: "rw0", Fstype: "ext4", Role: "writable"},
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (g *guest) create(t *testing.T, id string, spec *specs.Spec) error {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.agent.CreateContainer(ctxT(t), &agent.CreateContainerRequest{ContainerId: id, OciSpec: b, Storages: containerDisks})
	return err
}

// run does what `vmctl run` does and returns stdout, stderr and the exit.
func (g *guest) run(t *testing.T, id string, spec *specs.Spec) (string, string, *agent.WaitProcessResponse) {
	t.Helper()
	stdout, stderr, wait := g.runKept(t, id, spec)
	g.remove(t, id)
	return stdout, stderr, wait
}

// runKept is run without removing the container.
func (g *guest) runKept(t *testing.T, id string, spec *specs.Spec) (string, string, *agent.WaitProcessResponse) {
	t.Helper()
	if err := g.create(t, id, spec); err != nil {
		t.Fatalf("CreateContainer %s: %v", id, err)
	}
	if _, err := g.agent.StartContainer(ctxT(t), &agent.ContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", id, err)
	}
	var stdout, stderr string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); stdout = g.readAll(t, id, "", false) }()
	go func() { defer wg.Done(); stderr = g.readAll(t, id, "", true) }()
	if _, err := g.agent.CloseStdin(ctxT(t), &agent.ProcessRequest{ContainerId: id}); err != nil {
		t.Errorf("CloseStdin: %v", err)
	}
	wait, err := g.agent.WaitProcess(ctxT(t), &agent.ProcessRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("WaitProcess %s: %v", id, err)
	}
	wg.Wait()
	return stdout, stderr, wait
}

func (g *guest) remove(t *testing.T, id string) {
	t.Helper()
	if _, err := g.agent.RemoveContainer(ctxT(t), &agent.ContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("RemoveContainer %s: %v", id, err)
	}
}

func (g *guest) readAll(t *testing.T, id, execID string, stderr bool) string {
	var out []byte
	for {
		req := &agent.ReadOutputRequest{ContainerId: id, ExecId: execID, MaxLen: 4096, Offset: uint64(len(out))}
		var resp *agent.ReadOutputResponse
		var err error
		if stderr {
			resp, err = g.agent.ReadStderr(ctxT(t), req)
		} else {
			resp, err = g.agent.ReadStdout(ctxT(t), req)
		}
		if err != nil {
			t.Errorf("read output of %s/%s: %v", id, execID, err)
			return string(out)
		}
		out = append(out, resp.Data...)
		if resp.Eof {
			return string(out)
		}
	}
}

// TestAgentInVM runs containers in a real guest through the agent API.
func TestAgentInVM(t *testing.T) {
	testenv.RequireRoot(t)
	image := testenv.Ext4Image(t, testenv.BusyboxRoot(t, ""), "16M")
	writable := testenv.Ext4Image(t, "", "64M")
	g := boot(t, bootOpts{disks: []disk{{image, "img0", true}, {writable, "rw0", false}}, connect: true})

	t.Run("health", func(t *testing.T) {
		h, err := g.agent.Health(ctxT(t), &agent.HealthRequest{})
		if err != nil {
			t.Fatal(err)
		}
		release, _ := os.ReadFile(filepath.Join(filepath.Dir(guestKernel), "kernel.release"))
		if h.AgentVersion != agentVersion || h.Transport != "virtio-serial" ||
			(len(release) > 0 && h.KernelRelease != strings.TrimSpace(string(release))) {
			t.Errorf("Health = %+v, want version %s, transport virtio-serial, release %s", h, agentVersion, release)
		}
	})

	t.Run("run", func(t *testing.T) {
		out, errOut, wait := g.run(t, "c1", dockerSpec("vmbox", "sh", "-c",
			`echo $$; hostname; echo kept > /persist; echo oops >&2; exit 7`))
		if out != "1\nvmbox\n" || errOut != "oops\n" || wait.ExitStatus != 7 || wait.OomKilled {
			t.Errorf("run = stdout %q, stderr %q, %+v; want \"1\\nvmbox\\n\", \"oops\\n\", status 7", out, errOut, wait)
		}
	})

	t.Run("writable layer persists", func(t *testing.T) {
		out, _, wait := g.run(t, "c2", dockerSpec("vmbox", "cat", "/persist"))
		if out != "kept\n" || wait.ExitStatus != 0 {
			t.Errorf("cat /persist in a new container = %q, %+v; want kept", out, wait)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		spec := dockerSpec("vmbox", "tty")
		spec.Process.Terminal = true
		out, _, wait := g.run(t, "c3", spec)
		if !regexp.MustCompile(`^/dev/pts/[0-9]+\r\n$`).MatchString(out) || wait.ExitStatus != 0 {
			t.Errorf("tty = %q, %+v; want /dev/pts/N", out, wait)
		}
	})

	t.Run("exec", func(t *testing.T) {
		if err := g.create(t, "c4", dockerSpec("vmbox", "sleep", "1000")); err != nil {
			t.Fatal(err)
		}
		defer g.remove(t, "c4")
		if _, err := g.agent.StartContainer(ctxT(t), &agent.ContainerRequest{ContainerId: "c4"}); err != nil {
			t.Fatal(err)
		}
		proc, _ := json.Marshal(specs.Process{Args: []string{"sh", "-c", "hostname; cat /proc/1/comm"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
		if _, err := g.agent.ExecProcess(ctxT(t), &agent.ExecProcessRequest{ContainerId: "c4", ExecId: "e1", OciProcess: proc}); err != nil {
			t.Fatalf("ExecProcess: %v", err)
		}
		out := g.readAll(t, "c4", "e1", false)
		wait, err := g.agent.WaitProcess(ctxT(t), &agent.ProcessRequest{ContainerId: "c4", ExecId: "e1"})
		if err != nil || out != "vmbox\nsleep\n" || wait.ExitStatus != 0 {
			t.Errorf("exec = %q, %+v, %v; want \"vmbox\\nsleep\\n\", status 0", out, wait, err)
		}
		if _, err := g.agent.SignalProcess(ctxT(t), &agent.SignalProcessRequest{ContainerId: "c4", Signal: 9}); err != nil {
			t.Fatalf("SignalProcess: %v", err)
		}
		wait, err = g.agent.WaitProcess(ctxT(t), &agent.ProcessRequest{ContainerId: "c4"})
		if err != nil || wait.ExitStatus != 137 {
			t.Errorf("init after SIGKILL = %+v, %v; want 137", wait, err)
		}
	})

	t.Run("command not found", func(t *testing.T) {
		err := g.create(t, "c5", dockerSpec("vmbox", "nonexistent"))
		st, _ := status.FromError(err)
		if st.Code() != codes.NotFound || st.Message() != `exec: "nonexistent": executable file not found in $PATH` {
			t.Errorf("CreateContainer(nonexistent) = %v, want NotFound with the exec message", err)
		}
		// The failed create left nothing mounted: the disks are usable.
		out, _, _ := g.run(t, "c6", dockerSpec("vmbox", "echo", "ok"))
		if out != "ok\n" {
			t.Errorf("container after a failed create printed %q", out)
		}
	})

	t.Run("oom", func(t *testing.T) {
		spec := dockerSpec("vmbox", "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
		limit, pids := int64(64<<20), int64(64)
		spec.Linux.Resources = &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &limit},
			Pids:   &specs.LinuxPids{Limit: &pids},
		}
		_, _, wait := g.run(t, "c7", spec)
		if wait.ExitStatus != 137 || !wait.OomKilled {
			t.Errorf("allocating 128 MiB under a 64 MiB limit = %+v; want status 137, oom_killed", wait)
		}
	})

	t.Run("host reconnects", func(t *testing.T) {
		// The host side goes away (an engine restart) and comes back: the
		// agent must serve the new connection, with its state intact.
		if err := g.create(t, "c8", dockerSpec("vmbox", "sleep", "1000")); err != nil {
			t.Fatal(err)
		}
		g.client.Close()
		g.connect(t, 30*time.Second)
		if _, err := g.agent.StartContainer(ctxT(t), &agent.ContainerRequest{ContainerId: "c8"}); err != nil {
			t.Fatalf("StartContainer after reconnect: %v", err)
		}
		g.remove(t, "c8")
	})

	t.Run("shutdown", func(t *testing.T) {
		if _, err := g.agent.Shutdown(ctxT(t), &agent.ShutdownRequest{}); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		g.waitExit(t, 30*time.Second)
		// The agent is quiet unless something failed.
		b, _ := os.ReadFile(g.console)
		if bytes.Contains(b, []byte("vmctl-agent:")) {
			t.Errorf("the agent logged on a run without errors:\n%s", b)
		}
	})
}

// TestSelftestBoot checks the bare-boot reference mode: the agent prints its
// ready line on the console and ends the VM without any host connection.
func TestSelftestBoot(t *testing.T) {
	start := time.Now()
	g := boot(t, bootOpts{cmdline: contract.SelftestFlag})
	g.waitExit(t, bootTimeout)
	b, err := os.ReadFile(g.console)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(contract.SelftestReadyLine+"\n")) && !bytes.Contains(b, []byte(contract.SelftestReadyLine+"\r\n")) {
		t.Fatalf("console has no ready line:\n%s", b)
	}
	t.Logf("boot to ready and reboot: %v", time.Since(start).Round(time.Millisecond))
}

// TestNoChannelEndsVM: with no way to reach the host the agent says why on
// the console and ends the VM instead of hanging (or exiting, which would
// panic the kernel).
func TestNoChannelEndsVM(t *testing.T) {
	g := boot(t, bootOpts{noAgentPort: true})
	g.waitExit(t, bootTimeout)
	b, _ := os.ReadFile(g.console)
	if !bytes.Contains(b, []byte(`vmctl-agent: find serial port "vmctl.agent"`)) ||
		!bytes.Contains(b, []byte("vmctl-agent: no transport left to serve; rebooting")) {
		t.Errorf("console does not explain the reboot:\n%s", b)
	}
	if bytes.Contains(b, []byte("Kernel panic")) {
		t.Errorf("kernel panicked:\n%s", b)
	}
}
