package tests

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// With a vmctld on the default socket, vmctl uses it with no flag at all,
// as docker finds its daemon; the test moves the default socket to its own
// daemon's with VMCTL_DEFAULT_HOST.
func TestDefaultDaemon(t *testing.T) {
	d := startDaemon(t)
	def := []string{"VMCTL_DEFAULT_HOST=" + d.host()}
	vmctl := func(t *testing.T, want int, args ...string) result {
		t.Helper()
		r := runClient(t, "", def, args...)
		if r.code != want {
			t.Fatalf("vmctl %s: exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr, d.stderr)
		}
		return r
	}
	t.Cleanup(func() { runClient(t, "", def, "rm", "-f", "dflt", "dflt2") })

	if r := vmctl(t, 0, "info"); !strings.Contains(r.stdout, "Daemon:         "+d.host()) || !strings.Contains(r.stdout, d.dataRoot) {
		t.Errorf("info = %q, want it to name the daemon at %s and its data root", r.stdout, d.host())
	}
	id := strings.TrimSpace(vmctl(t, 0, "run", "-d", "--name", "dflt", "busybox", "sh", "-c", "echo up; sleep 600").stdout)
	if len(id) != 64 {
		t.Fatalf("run -d printed %q, want the container ID", id)
	}
	if r := vmctl(t, 0, "exec", "dflt", "echo", "inside"); r.stdout != "inside\n" {
		t.Errorf("exec = %q, want inside", r.stdout)
	}
	if r := vmctl(t, 0, "restart", "-t", "1", "dflt"); r.stdout != "dflt\n" {
		t.Errorf("restart printed %q", r.stdout)
	}
	// PID 1 is sh until it execs the sleep, its last command; while it
	// execs, /proc/1/cmdline reads empty, so that is looked at again.
	var cmdline string
	for try := 0; try < 20 && !strings.Contains(cmdline, "sleep"); try++ {
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		cmdline = vmctl(t, 0, "exec", "dflt", "cat", "/proc/1/cmdline").stdout
	}
	if !strings.Contains(cmdline, "sleep") {
		t.Errorf("after restart, exec sees PID 1 %q, want the container's command", cmdline)
	}
	if r := vmctl(t, 0, "ps", "--format", "{{.Names}} {{.State}}"); !strings.Contains(r.stdout, "dflt running") {
		t.Errorf("ps = %q, want dflt running", r.stdout)
	}

	// attach follows a running container to its end and takes its status;
	// wait then answers at once with the same code.
	vmctl(t, 0, "run", "-d", "--name", "dflt2", "busybox", "sh", "-c", "sleep 4; echo late; exit 3")
	if r := vmctl(t, 3, "attach", "dflt2"); r.stdout != "late\n" {
		t.Errorf("attach printed %q, want the output after it attached", r.stdout)
	}
	if r := vmctl(t, 0, "wait", "dflt2"); r.stdout != "3\n" {
		t.Errorf("wait printed %q, want 3", r.stdout)
	}
	vmctl(t, 0, "rm", "-f", "dflt", "dflt2")
}

// Without a daemon on the default socket, the commands that need one fail
// in one line naming vmctld, and the others run the engine in-process.
func TestNoDefaultDaemon(t *testing.T) {
	e := e2e(t)
	for _, args := range [][]string{
		{"run", "-d", "busybox", "true"},
		{"create", "busybox", "true"},
		{"start", "x"},
		{"exec", "x", "true"},
		{"attach", "x"},
		{"wait", "x"},
		{"restart", "x"},
		{"stop", "x"},
		{"kill", "x"},
		{"events"},
	} {
		r := runClient(t, "", nil, args...)
		if r.code != 125 {
			t.Errorf("vmctl %s without a daemon: exit %d, want 125", strings.Join(args, " "), r.code)
		}
		oneLine(t, r, args[0])
		if !strings.Contains(r.stderr, "needs a daemon") || !strings.Contains(r.stderr, "start vmctld") {
			t.Errorf("vmctl %s without a daemon: %q, want it to say a daemon is needed and how to start vmctld", strings.Join(args, " "), r.stderr)
		}
	}
	// An engine flag asks for the engine in this process, daemon or not.
	if r := e.mustRun(t, 0, "info"); !strings.Contains(r.stdout, "Engine:         in this process (--data-root given)") {
		t.Errorf("info with --data-root = %q, want the in-process engine named", r.stdout)
	}

	// A container run in-process is running, but only its own vmctl can
	// follow it: logs -f of it needs a daemon, plain logs does not.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runner := e.cmd(ctx, "run", "--rm", "--name", "inproc", "busybox", "sh", "-c", "trap 'exit 0' TERM; echo started; sleep 600 & wait")
	must(t, runner.Start())
	defer func() {
		// vmctl run passes the signal on; the container ends, and --rm
		// takes its record and disks.
		runner.Process.Signal(syscall.SIGTERM)
		if err := runner.Wait(); err != nil {
			t.Errorf("the in-process run ended with %v after SIGTERM", err)
		}
	}()
	waitFor(t, func() bool { return e.run(t, "logs", "inproc").stdout == "started\n" }, "the in-process container's output")
	r := e.run(t, "logs", "-f", "inproc")
	if r.code != 125 {
		t.Errorf("logs -f of a container running in another vmctl: exit %d, want 125", r.code)
	}
	oneLine(t, r, "logs -f of a running container needs a daemon")
}
