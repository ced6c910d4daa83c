package qemu

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

// A driver run as root jails QEMU: once the VM is built QEMU is the VM's
// own user and group with no capabilities, chrooted into the empty jail
// directory; the agent channel still works, and Destroy removes the jail.
func TestJailedQEMU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the driver jails QEMU only when run as root")
	}
	d, cfg := needVM(t)
	if !d.Jailed() {
		t.Fatal("driver run as root does not jail QEMU")
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
	// The guest answering proves QEMU runs it after dropping privileges.
	echo(t, conn, bufio.NewReader(conn), "jailed")

	st := procStatus(t, sb.Pid())
	id := strconv.Itoa(sandbox.UnprivilegedID(cfg.ID))
	want := map[string]string{
		"Uid":    strings.Join([]string{id, id, id, id}, " "),
		"Gid":    strings.Join([]string{id, id, id, id}, " "),
		"CapEff": "0000000000000000",
		"CapPrm": "0000000000000000",
		"CapAmb": "0000000000000000",
		"Groups": id, // -runas sets the group list to the one group
		// QEMU's own seccomp filter (-sandbox on).
		"Seccomp": "2",
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("QEMU's %s = %q, want %q", k, st[k], v)
		}
	}
	jail := filepath.Join(cfg.StateDir, jailDirName)
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", sb.Pid())); err != nil || root != jail {
		t.Errorf("QEMU's root = %q (%v), want the jail %s", root, err, jail)
	}
	if entries, err := os.ReadDir(jail); err != nil || len(entries) != 0 {
		t.Errorf("jail dir: %d entries, %v; want empty", len(entries), err)
	}
	pid := sb.Pid()
	if err := sb.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	assertGone(t, pid, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
}

// Unjailed keeps QEMU root, for hosts that want it.
func TestUnjailedQEMU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to tell a jailed QEMU from an unjailed one")
	}
	_, cfg := needVM(t)
	d, err := New(Options{Unjailed: true})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	if st := procStatus(t, sb.Pid()); !strings.HasPrefix(st["Uid"], "0 ") {
		t.Errorf("unjailed QEMU's Uid = %q, want root", st["Uid"])
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, jailDirName)); !os.IsNotExist(err) {
		t.Errorf("unjailed VM has a jail dir (%v)", err)
	}
}

// A QEMU started by an engine from before QEMU served the agent socket
// connects to it as a client (reconnect=1): Reattach listens again for it,
// so running VMs survive an upgrade of the daemon.
func TestReattachClientModeQEMU(t *testing.T) {
	d, cfg := needVM(t)
	d.detach = true
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	qmpPath := filepath.Join(cfg.StateDir, qmpSocketName)
	agentPath := filepath.Join(cfg.StateDir, agentSocketName)
	pidPath := filepath.Join(cfg.StateDir, pidFileName)
	logPath := filepath.Join(cfg.StateDir, stderrLogName)
	qmpLn, err := listenUnix(qmpPath)
	if err != nil {
		t.Fatal(err)
	}
	qmpLn.SetUnlinkOnClose(false)
	qmpFile, err := qmpLn.File()
	qmpLn.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The old engine's agent listener, gone with it below.
	oldAgent, err := listenUnix(agentPath)
	if err != nil {
		t.Fatal(err)
	}
	args := buildArgs(launch{id: cfg.ID, accel: d.accel, cfg: cfg, pidFile: pidPath})
	for i, a := range args {
		if strings.HasPrefix(a, "socket,id=agent,") {
			args[i] = "socket,id=agent,path=" + escape(agentPath) + ",reconnect=1"
		}
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{qmpFile}
	cmd.SysProcAttr = procAttr(true)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	qmpFile.Close()
	logFile.Close()
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-waited })
	// The old engine resumed the guest; here QMP does it, as Start would.
	start := &vm{id: cfg.ID, qmpPath: qmpPath, exited: make(chan struct{}), done: make(chan struct{})}
	if err := start.connectMonitor(ctxTimeout(t, 30*time.Second), true); err != nil {
		t.Fatalf("QMP: %v", err)
	}
	if err := start.run(ctxTimeout(t, 10*time.Second), "cont"); err != nil {
		t.Fatalf("cont: %v", err)
	}
	start.closeMonitor()
	oldAgent.Close() // the old engine dies: QEMU reconnects in a loop

	sb, err := d.Reattach(ctxTimeout(t, 30*time.Second), cfg, cmd.Process.Pid)
	if err != nil {
		t.Fatalf("Reattach: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	echo(t, conn, bufio.NewReader(conn), "adopted")
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	<-waited
	assertNoStateDir(t, cfg.StateDir)
}
