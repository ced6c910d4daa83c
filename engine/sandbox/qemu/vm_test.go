package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/internal/initramfs"
)

// These tests boot real VMs: the project's guest kernel with an initramfs
// whose /init is testdata/echoinit (built here), under QEMU with the
// accelerator the host supports. They skip only when QEMU or the kernel is
// missing.

// guestKernel is the kernel built by `make kernel`; VMCTL_GUEST_KERNEL
// overrides it.
func guestKernel() string {
	if k := os.Getenv("VMCTL_GUEST_KERNEL"); k != "" {
		return k
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "bin", "guest", "vmlinuz")
}

// testEnv is shared by the real-VM tests of one test binary.
var testEnv struct {
	dir    string // removed by TestMain
	initrd string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testEnv.dir != "" {
		os.RemoveAll(testEnv.dir)
	}
	os.Exit(code)
}

// needVM skips unless QEMU and the guest kernel exist, and returns a driver
// and a config with the echo initramfs and a fresh StateDir.
func needVM(t testing.TB) (*Driver, sandbox.Config) {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Skipf("%s not installed (apt-get install qemu-system-x86)", Binary)
	}
	kernel, err := filepath.Abs(guestKernel())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kernel); err != nil {
		t.Skipf("guest kernel %s not built (make kernel)", kernel)
	}
	if testEnv.dir == "" && testEnv.err == nil {
		testEnv.initrd, testEnv.err = buildEchoInitrd()
	}
	if testEnv.err != nil {
		t.Fatalf("build test initramfs: %v", testEnv.err)
	}
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir paths are long; unix socket paths must stay under 108 bytes.
	state, err := os.MkdirTemp("", "vmq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	cfg := sandbox.Config{
		ID:       strings.ReplaceAll(t.Name(), "/", "-"),
		Kernel:   kernel,
		Initrd:   testEnv.initrd,
		StateDir: filepath.Join(state, "vm"),
	}
	return d, cfg
}

func buildEchoInitrd() (string, error) {
	dir, err := os.MkdirTemp("", "vmctl-qemu-test")
	if err != nil {
		return "", err
	}
	testEnv.dir = dir
	bin := filepath.Join(dir, "echoinit")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/echoinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build echoinit: %v: %s", err, out)
	}
	initrd := filepath.Join(dir, "initramfs.img")
	return initrd, initramfs.WriteFile(initrd, bin)
}

// echo sends line and expects it back.
func echo(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write to agent port: %v", err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read from agent port: %v", err)
	}
	if got != line+"\n" {
		t.Fatalf("echo = %q, want %q", got, line+"\n")
	}
}

// assertGone checks that QEMU's process no longer exists (not even as a
// zombie) and that no QEMU process refers to stateDir.
func assertGone(t *testing.T, pid int, stateDir string) {
	t.Helper()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		t.Errorf("QEMU pid %d still exists: %s", pid, stat)
	}
	assertNoQEMUFor(t, stateDir)
}

func assertNoQEMUFor(t *testing.T, stateDir string) {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(stateDir+"/")) {
			t.Errorf("process %s still runs for %s: %q", p, stateDir, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

func assertNoStateDir(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		t.Errorf("state dir %s still exists (%d entries, err %v)", dir, len(entries), err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestBootEchoReboot(t *testing.T) {
	d, cfg := needVM(t)
	cfg.ConsoleLog = filepath.Join(filepath.Dir(cfg.StateDir), "console.log")
	start := time.Now()
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	pid := sb.Pid()
	if sb.ID() != cfg.ID || pid <= 0 {
		t.Errorf("ID, Pid = %q, %d", sb.ID(), pid)
	}
	checkProcessGroup(t, pid, false)

	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	echo(t, conn, r, "hello")
	t.Logf("boot to first agent byte: %v (accel %s)", time.Since(start), d.Accel())
	echo(t, conn, r, strings.Repeat("x", 3000))

	if _, err := sb.DialAgent(ctxTimeout(t, time.Second)); err == nil {
		t.Error("second DialAgent succeeded, want an error (one stream per VM)")
	}

	io.WriteString(conn, "reboot\n")
	exit, err := sb.Wait(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Reason != sandbox.ExitShutdown || exit.Detail != "guest rebooted" {
		t.Errorf("Wait() = %+v, want shutdown, guest rebooted", exit)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	assertGone(t, pid, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
	if b, err := os.ReadFile(cfg.ConsoleLog); err != nil || !bytes.Contains(b, []byte("echoinit: serving")) {
		t.Errorf("console log = %q, %v; want the guest's output", b, err)
	}
}

// checkProcessGroup checks QEMU leads its own process group, and its own
// session only when detached.
func checkProcessGroup(t *testing.T, pid int, detached bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read QEMU stat: %v", err)
	}
	// Fields after the ")" that ends comm: state ppid pgrp session ...
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	pgrp, session := fields[2], fields[3]
	if pgrp != fmt.Sprint(pid) {
		t.Errorf("QEMU process group = %s, want its own (%d)", pgrp, pid)
	}
	if (session == fmt.Sprint(pid)) != detached {
		t.Errorf("QEMU session = %s (pid %d), detached = %v", session, pid, detached)
	}
}

func TestDestroyWhileRunning(t *testing.T) {
	d, cfg := needVM(t)
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := sb.Pid()
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		sb.Destroy()
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	echo(t, conn, bufio.NewReader(conn), "up")

	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	exit, err := sb.Wait(ctxTimeout(t, 5*time.Second))
	if err != nil || exit.Reason != sandbox.ExitKilled {
		t.Errorf("Wait() = %+v, %v; want killed", exit, err)
	}
	assertGone(t, pid, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
	if _, err := sb.DialAgent(ctxTimeout(t, time.Second)); err == nil {
		t.Error("DialAgent after Destroy succeeded")
	}
}

func TestStopQuits(t *testing.T) {
	d, cfg := needVM(t)
	// A state dir that exists already is kept; only the driver's files go.
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	pid := sb.Pid()
	// A context that is already done means: stop now.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if d := time.Since(start); d >= quitGrace {
		t.Errorf("Stop took %v: quit did not end QEMU, the SIGKILL fallback did", d)
	}
	exit, err := sb.Wait(ctxTimeout(t, 5*time.Second))
	if err != nil || exit.Reason != sandbox.ExitKilled || !strings.Contains(exit.Detail, "QMP quit") {
		t.Errorf("Wait() = %+v, %v; want killed by QMP quit", exit, err)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	assertGone(t, pid, cfg.StateDir)
	entries, err := os.ReadDir(cfg.StateDir)
	if err != nil || len(entries) != 0 {
		t.Errorf("pre-existing state dir: entries %v, err %v; want it kept and empty", entries, err)
	}
}

func TestGuestPanicIsCrash(t *testing.T) {
	d, cfg := needVM(t)
	cfg.ConsoleLog = filepath.Join(filepath.Dir(cfg.StateDir), "console.log")
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	echo(t, conn, r, "up")
	io.WriteString(conn, "panic\n") // PID 1 exits: "Attempted to kill init"
	exit, err := sb.Wait(ctxTimeout(t, 30*time.Second))
	if err != nil || exit.Reason != sandbox.ExitCrashed || !strings.Contains(exit.Detail, "Attempted to kill init") {
		t.Errorf("Wait() = %+v, %v; want crashed with the kernel's panic line", exit, err)
	}
}

func TestStartFailuresLeaveNothing(t *testing.T) {
	d, cfg := needVM(t)
	missingDisk := filepath.Join(filepath.Dir(cfg.StateDir), "no-such-disk.img")
	tests := []struct {
		name   string
		driver func() *Driver
		modify func(c *sandbox.Config)
		want   []string
	}{
		{"missing kernel", nil, func(c *sandbox.Config) { c.Kernel = filepath.Join(filepath.Dir(c.StateDir), "vmlinuz") },
			[]string{"kernel", "does not exist"}},
		{"bad disk path", nil, func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{Path: missingDisk, Serial: "d"}} },
			[]string{"qemu failed to start (exit status 1)", "no-such-disk.img", "No such file or directory"}},
		{"qemu exits at once", func() *Driver { return &Driver{binary: "/bin/false", accel: "tcg"} }, nil,
			[]string{"qemu failed to start (exit status 1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.modify != nil {
				tt.modify(&c)
			}
			drv := d
			if tt.driver != nil {
				drv = tt.driver()
			}
			sb, err := drv.Start(ctxTimeout(t, 30*time.Second), c)
			if err == nil {
				sb.Destroy()
				t.Fatal("Start succeeded")
			}
			t.Logf("Start() error: %v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start() error = %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Start() error is not one line: %q", err)
			}
			assertNoQEMUFor(t, c.StateDir)
			assertNoStateDir(t, c.StateDir)
		})
	}
}

func TestStartCanceled(t *testing.T) {
	d, cfg := needVM(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sb, err := d.Start(ctx, cfg)
	if err == nil {
		sb.Destroy()
		t.Fatal("Start with a canceled context succeeded")
	}
	assertNoQEMUFor(t, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
}

func TestDetachedRunsInOwnSession(t *testing.T) {
	_, cfg := needVM(t)
	d, err := New(Options{Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := sb.Pid()
	checkProcessGroup(t, pid, true)
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	assertGone(t, pid, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
}

// TestStaleSocketsReplaced starts a VM in a state dir whose sockets were
// left by a process that died without cleaning up.
func TestStaleSocketsReplaced(t *testing.T) {
	d, cfg := needVM(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{qmpSocketName, agentSocketName} {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(cfg.StateDir, name), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
	}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start over stale sockets: %v", err)
	}
	// A second VM must not take over a live VM's state dir.
	if sb2, err := d.Start(ctxTimeout(t, 30*time.Second), cfg); err == nil {
		sb2.Destroy()
		t.Error("second Start on a live state dir succeeded")
	} else if !strings.Contains(err.Error(), "state dir in use") {
		t.Errorf("second Start error = %v, want state dir in use", err)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
}

func TestDisksReachGuest(t *testing.T) {
	d, cfg := needVM(t)
	dir := filepath.Dir(cfg.StateDir)
	for i, serial := range []string{"rootfs", "data-1"} {
		p := filepath.Join(dir, serial+".img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 8<<20); err != nil {
			t.Fatal(err)
		}
		cfg.Disks = append(cfg.Disks, sandbox.Disk{Path: p, Serial: serial, ReadOnly: i == 0})
	}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, "disks\n")
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := "vda:rootfs:1 vdb:data-1:0\n"; got != want {
		t.Errorf("guest disks = %q, want %q", got, want)
	}
}

// TestNoGoroutineLeak checks that Destroy ends every goroutine the driver
// and go-qemu started for the VM.
func TestNoGoroutineLeak(t *testing.T) {
	d, cfg := needVM(t)
	before := runtime.NumGoroutine()
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		sb.Destroy()
		t.Fatalf("DialAgent: %v", err)
	}
	echo(t, conn, bufio.NewReader(conn), "up")
	conn.Close()
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	after := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Errorf("goroutines: %d before Start, %d after Destroy:\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

// TestStopWaitsForGuestShutdown: the engine asks the guest to shut down,
// then Stop returns as soon as it has, and the exit is the guest's.
func TestStopWaitsForGuestShutdown(t *testing.T) {
	d, cfg := needVM(t)
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	echo(t, conn, bufio.NewReader(conn), "up")
	io.WriteString(conn, "reboot\n")
	start := time.Now()
	if err := sb.Stop(ctxTimeout(t, 60*time.Second)); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Stop took %v, want it to return when the guest is gone", d)
	}
	exit, err := sb.Wait(ctxTimeout(t, 5*time.Second))
	if err != nil || exit.Reason != sandbox.ExitShutdown {
		t.Errorf("Wait() = %+v, %v; want shutdown", exit, err)
	}
}

// TestStopKillsUnresponsiveQEMU: a QEMU that does not answer "quit" (here:
// stopped with SIGSTOP) is killed after the grace period.
func TestStopKillsUnresponsiveQEMU(t *testing.T) {
	d, cfg := needVM(t)
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	pid := sb.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if d := time.Since(start); d < quitGrace {
		t.Errorf("Stop returned after %v, before the quit grace period", d)
	}
	exit, err := sb.Wait(ctxTimeout(t, 5*time.Second))
	if err != nil || exit.Reason != sandbox.ExitKilled || !strings.Contains(exit.Detail, "SIGKILL") {
		t.Errorf("Wait() = %+v, %v; want killed by SIGKILL", exit, err)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	assertGone(t, pid, cfg.StateDir)
}
