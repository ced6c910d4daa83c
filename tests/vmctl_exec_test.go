package tests

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// vmctl's own exec, restart, wait, create and attach against vmctld, with
// docker's output and exit statuses. Four guests boot in all (x, its
// restart, the attached one, the created one).
func TestVmctlExecAndLifecycle(t *testing.T) {
	e := e2e(t)
	d := startDaemon(t)
	// The trailing echo keeps sh as pid 1 (busybox sh execs a last simple
	// command in place of itself), so that stop's SIGTERM needs the kill.
	d.mustVmctl(t, 0, "", "run", "-d", "--name", "x", "busybox", "sh", "-c", "echo hello > /f; sleep 300; echo done")
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "x", "a", "c") })
	waitFor(t, func() bool { return d.vmctl(t, "", "exec", "x", "cat", "/f").stdout == "hello\n" }, "vmctl exec x cat /f to print hello")

	t.Run("exec output and status", func(t *testing.T) {
		r := d.mustVmctl(t, 0, "", "exec", "x", "sh", "-c", "echo out; echo err >&2")
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("stdout %q stderr %q, want out and err on their own streams", r.stdout, r.stderr)
		}
		d.mustVmctl(t, 3, "", "exec", "x", "sh", "-c", "exit 3")
		r = d.mustVmctl(t, 127, "", "exec", "x", "no-such-command")
		oneLine(t, r, "no-such-command")
		r = d.mustVmctl(t, 126, "", "exec", "x", "/f")
		oneLine(t, r, "/f")
		// docker exec's status for -it without a terminal is 1.
		r = d.mustVmctl(t, 1, "", "exec", "-i", "-t", "x", "true")
		oneLine(t, r, "not a TTY")
	})
	t.Run("exec options", func(t *testing.T) {
		r := d.mustVmctl(t, 0, "", "exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000", "x", "sh", "-c", `echo "$FOO $(pwd) $(id -u):$(id -g)"`)
		if want := "bar /tmp 1000:1000\n"; r.stdout != want {
			t.Errorf("stdout = %q, want %q", r.stdout, want)
		}
	})
	t.Run("exec -i", func(t *testing.T) {
		// The input's EOF closes the command's stdin, so cat ends.
		if r := d.mustVmctl(t, 0, "line one\nline two\n", "exec", "-i", "x", "cat"); r.stdout != "line one\nline two\n" {
			t.Errorf("stdout = %q, want the input back", r.stdout)
		}
		// Without -i the command reads EOF at once.
		if r := d.mustVmctl(t, 0, "ignored\n", "exec", "x", "cat"); r.stdout != "" {
			t.Errorf("stdout = %q without -i, want nothing", r.stdout)
		}
	})
	t.Run("exec -d", func(t *testing.T) {
		r := d.mustVmctl(t, 0, "", "exec", "-d", "x", "sh", "-c", "sleep 1; echo bg > /g")
		if r.stdout != "" || r.stderr != "" {
			t.Errorf("exec -d printed stdout %q stderr %q, want nothing", r.stdout, r.stderr)
		}
		waitFor(t, func() bool { return d.vmctl(t, "", "exec", "x", "cat", "/g").stdout == "bg\n" }, "the detached exec to write /g")
	})
	t.Run("exec does not forward signals", func(t *testing.T) {
		// As docker exec: SIGINT ends vmctl, and the command never gets it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := clientCmd(ctx, e, nil, "-H", d.host(), "exec", "x", "sh", "-c", `trap "echo got > /int" INT; echo ready; sleep 1; echo end`)
		out, err := c.StdoutPipe()
		must(t, err)
		must(t, c.Start())
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			t.Errorf("first line %q, %v; want ready", line, err)
		}
		must(t, c.Process.Signal(syscall.SIGINT))
		c.Wait()
		if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("vmctl exec after SIGINT: %v, want ended by SIGINT", c.ProcessState)
		}
		time.Sleep(1500 * time.Millisecond) // past the command's sleep, when a trap would run
		d.mustVmctl(t, 1, "", "exec", "x", "test", "-e", "/int")
	})
	t.Run("exec -it", func(t *testing.T) {
		// A real pty: raw terminal, the size at start and after SIGWINCH,
		// the shell's exit status as vmctl's.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		driveTerminal(t, clientCmd(ctx, e, nil, "-H", d.host(), "exec", "-i", "-t", "x", "sh"))
	})
	t.Run("exec -it restores the terminal on SIGTERM", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		signalRawSession(t, clientCmd(ctx, e, nil, "-H", d.host(), "exec", "-i", "-t", "x", "sh"))
	})
	t.Run("restart keeps the writable layer", func(t *testing.T) {
		d.mustVmctl(t, 0, "", "exec", "x", "sh", "-c", "echo kept > /kept")
		if r := d.mustVmctl(t, 0, "", "restart", "-t", "1", "x"); r.stdout != "x\n" {
			t.Errorf("restart printed %q, want x", r.stdout)
		}
		r := d.mustVmctl(t, 0, "", "exec", "x", "cat", "/kept")
		if r.stdout != "kept\n" {
			t.Errorf("cat /kept after restart = %q, want kept", r.stdout)
		}
		r = d.mustVmctl(t, 1, "", "restart", "no-such")
		oneLine(t, r, "no-such")
	})
	t.Run("wait", func(t *testing.T) {
		done := make(chan result, 1)
		go func() { done <- d.vmctl(t, "", "wait", "x") }()
		time.Sleep(500 * time.Millisecond) // let wait block on the running x
		d.mustVmctl(t, 0, "", "kill", "x")
		if r := <-done; r.code != 0 || r.stdout != "137\n" {
			t.Errorf("wait x: exit %d stdout %q, want 0 and 137", r.code, r.stdout)
		}
		// Not running: the last exit code, at once.
		if r := d.mustVmctl(t, 0, "", "wait", "x"); r.stdout != "137\n" {
			t.Errorf("second wait x = %q, want 137", r.stdout)
		}
		r := d.mustVmctl(t, 1, "", "exec", "x", "true")
		oneLine(t, r, "not running")
	})
	t.Run("attach", func(t *testing.T) {
		d.mustVmctl(t, 0, "", "run", "-d", "--name", "a", "busybox", "sh", "-c",
			"trap 'echo bye; exit 4' TERM; echo before; while true; do echo tick; sleep 0.2; done")
		waitFor(t, func() bool { return strings.Contains(d.vmctl(t, "", "logs", "a").stdout, "tick") }, "a to run")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := clientCmd(ctx, e, nil, "-H", d.host(), "attach", "a")
		out, err := c.StdoutPipe()
		must(t, err)
		must(t, c.Start())
		br := bufio.NewReader(out)
		if line, err := br.ReadString('\n'); err != nil || line != "tick\n" {
			t.Errorf("first attached line %q, %v; want tick (output from the attach on)", line, err)
		}
		// --sig-proxy (the default) sends the container the signal.
		must(t, c.Process.Signal(syscall.SIGTERM))
		rest, _ := io.ReadAll(br)
		err = c.Wait()
		if !strings.HasSuffix(string(rest), "bye\n") || strings.Contains(string(rest), "before") {
			t.Errorf("attached output %q, want the ticks then bye, not what came before the attach", rest)
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
			t.Errorf("attach exit: %v, want status 4", err)
		}
		r := d.mustVmctl(t, 1, "", "attach", "a")
		oneLine(t, r, "cannot attach to a stopped container")
	})
	t.Run("attach to a tty restores the terminal on SIGTERM", func(t *testing.T) {
		// run -d -it needs no terminal of its own (this test has none).
		d.mustVmctl(t, 0, "", "run", "-d", "-i", "-t", "--name", "tt", "busybox", "sh")
		defer d.vmctl(t, "", "rm", "-f", "tt")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		signalRawSession(t, clientCmd(ctx, e, nil, "-H", d.host(), "attach", "tt"))
	})
	t.Run("create and start -a", func(t *testing.T) {
		r := d.mustVmctl(t, 0, "", "create", "--name", "c", "-e", "WHO=created", "busybox", "sh", "-c", `echo "$WHO"; exit 2`)
		if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(r.stdout) {
			t.Errorf("create printed %q, want the container ID", r.stdout)
		}
		if st := d.mustVmctl(t, 0, "", "inspect", "-f", "{{.State.Status}}", "c").stdout; st != "created\n" {
			t.Errorf("state after create = %q, want created", st)
		}
		if r := d.mustVmctl(t, 2, "", "start", "-a", "c"); r.stdout != "created\n" {
			t.Errorf("start -a c printed %q, want created", r.stdout)
		}
		r = d.mustVmctl(t, 1, "", "create", "--name", "c", "busybox")
		oneLine(t, r, "already in use")
		// A refused start exits 1, as docker start does, whatever the
		// reason (run's 127 is run's own).
		d.mustVmctl(t, 0, "", "create", "--name", "bad", "busybox", "no-such-command")
		defer d.vmctl(t, "", "rm", "-f", "bad")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"start", "bad"}, "no-such-command"},
			{[]string{"start", "-a", "bad"}, "no-such-command"},
			{[]string{"start", "no-such"}, "no such container"},
			{[]string{"start", "-a", "no-such"}, "no such container"},
		} {
			oneLine(t, d.mustVmctl(t, 1, "", tc.args...), tc.want)
		}
	})
	t.Run("start -a -i", func(t *testing.T) {
		d.mustVmctl(t, 0, "", "create", "-i", "--name", "cat", "busybox", "sh", "-c", "cat; echo done")
		if r := d.mustVmctl(t, 0, "first\nsecond\n", "start", "-a", "-i", "cat"); r.stdout != "first\nsecond\ndone\n" {
			t.Errorf("start -a -i cat printed %q", r.stdout)
		}
		// A second run of the same container takes its own input.
		if r := d.mustVmctl(t, 0, "third\n", "start", "-i", "cat"); r.stdout != "third\ndone\n" {
			t.Errorf("second start -i cat printed %q", r.stdout)
		}
	})
	t.Run("without a daemon", func(t *testing.T) {
		for _, args := range [][]string{{"exec", "x", "true"}, {"restart", "x"}, {"wait", "x"}, {"create", "busybox"}, {"attach", "x"}} {
			r := runClient(t, "", nil, args...)
			if r.code != 125 {
				t.Errorf("vmctl %s without -H: exit %d, want 125", strings.Join(args, " "), r.code)
			}
			oneLine(t, r, args[0]+" needs a daemon")
		}
	})
	d.mustVmctl(t, 0, "", "rm", "x", "a", "c", "cat")
	if r := d.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
		t.Errorf("containers left after rm: %q", r.stdout)
	}
}

// signalRawSession starts c (a session that puts its terminal in raw mode)
// on a pty it keeps the terminal side of, sends it SIGTERM once the
// terminal is raw, and checks that c ends with status 143 and leaves the
// terminal as it found it (canonical, echoing).
func signalRawSession(t *testing.T, c *exec.Cmd) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	must(t, err)
	defer ptmx.Close()
	defer tty.Close()
	go io.Copy(io.Discard, ptmx)
	c.Stdin, c.Stdout, c.Stderr = tty, tty, tty
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	must(t, c.Start())
	defer func() {
		if c.ProcessState == nil { // a failed check above: end it here
			c.Process.Kill()
			c.Wait()
		}
	}()
	termios := func() *unix.Termios {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		must(t, err)
		return tio
	}
	const cooked = unix.ICANON | unix.ECHO
	if termios().Lflag&cooked != cooked {
		t.Fatal("the test's pty does not start canonical and echoing")
	}
	waitFor(t, func() bool { return termios().Lflag&cooked == 0 }, "vmctl to put the terminal in raw mode")
	must(t, c.Process.Signal(syscall.SIGTERM))
	err = c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("after SIGTERM: %v, want exit status 143", err)
	}
	if termios().Lflag&cooked != cooked {
		t.Errorf("vmctl ended by SIGTERM left the terminal raw")
	}
}
