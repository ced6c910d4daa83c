package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// host is the -H value that selects d.
func (d *daemon) host() string { return "unix://" + d.sock }

// clientCmd builds a vmctl command with the given environment additions; the
// caller's VMCTL_HOST never leaks in, and no daemon of the machine's on the
// default socket is found (see noDefaultDaemon).
func clientCmd(ctx context.Context, e *env, extraEnv []string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, e.vmctl, args...)
	c.Env = append(os.Environ(), "VMCTL_HOST=", e.noDefaultDaemon())
	c.Env = append(c.Env, extraEnv...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

// vmctl runs vmctl -H d.host() args..., with stdin if given.
func (d *daemon) vmctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runClient(t, stdin, nil, append([]string{"-H", d.host()}, args...)...)
}

func runClient(t *testing.T, stdin string, extraEnv []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := clientCmd(ctx, e2e(t), extraEnv, args...)
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	return capture(ctx, t, c, in)
}

func (d *daemon) mustVmctl(t *testing.T, want int, stdin string, args ...string) result {
	t.Helper()
	r := d.vmctl(t, stdin, args...)
	if r.code != want {
		t.Fatalf("vmctl -H %s %s: exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon: %s", d.host(), strings.Join(args, " "), r.code, want, r.stdout, r.stderr, d.stderr)
	}
	return r
}

// One vmctl binary drives two daemons, selected by -H or VMCTL_HOST, and
// each daemon keeps its own containers.
func TestClientDrivesTwoDaemons(t *testing.T) {
	e := e2e(t)
	bin := filepath.Join(t.TempDir(), "vmctld")
	build := exec.Command("go", "build", "-o", bin, "./cmd/vmctld")
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vmctld: %v\n%s", err, out)
	}
	a := startDaemonWith(t, bin)
	b := startDaemonWith(t, bin)

	t.Run("run rm on each", func(t *testing.T) {
		for _, d := range []*daemon{a, b} {
			r := d.mustVmctl(t, 0, "", "run", "--rm", "busybox", "echo", "hi")
			if r.stdout != "hi\n" {
				t.Errorf("%s: stdout = %q, want \"hi\\n\"", d.host(), r.stdout)
			}
			if r := d.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
				t.Errorf("%s: ps -a -q = %q after run --rm, want nothing", d.host(), r.stdout)
			}
		}
	})
	t.Run("streams and exit status", func(t *testing.T) {
		r := a.mustVmctl(t, 3, "", "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("stdout %q stderr %q, want out and err on their own streams", r.stdout, r.stderr)
		}
	})
	t.Run("options", func(t *testing.T) {
		r := b.mustVmctl(t, 0, "", "run", "--rm", "-e", "GREETING=hello", "-w", "/tmp", "-u", "1000:1000",
			"--hostname", "boxb", "--memory", "96m", "--cpus", "1", "--entrypoint", "sh",
			"busybox", "-c", `echo "$GREETING $(pwd) $(id -u):$(id -g) $(hostname)"`)
		if want := "hello /tmp 1000:1000 boxb\n"; r.stdout != want {
			t.Errorf("stdout = %q, want %q", r.stdout, want)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		r := b.mustVmctl(t, 0, "line one\nline two\n", "run", "--rm", "-i", "busybox", "cat")
		if r.stdout != "line one\nline two\n" {
			t.Errorf("stdout = %q, want the input back", r.stdout)
		}
	})
	t.Run("command not found", func(t *testing.T) {
		r := a.mustVmctl(t, 127, "", "run", "--rm", "busybox", "no-such-command")
		oneLine(t, r, "vmctl: ")
		oneLine(t, r, "no-such-command")
		if r := a.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("ps -a -q = %q, want nothing", r.stdout)
		}
	})
	t.Run("a container stays on its daemon", func(t *testing.T) {
		id := strings.TrimSpace(a.mustVmctl(t, 0, "", "run", "-d", "--name", "only-on-a", "--label", "side=a", "busybox", "sleep", "60").stdout)
		if len(id) != 64 {
			t.Fatalf("run -d printed %q, want a container ID", id)
		}
		if r := a.mustVmctl(t, 0, "", "ps", "-q", "--filter", "label=side=a"); r.stdout != id[:12]+"\n" {
			t.Errorf("ps --filter label=side=a on A = %q, want %s", r.stdout, id[:12])
		}
		if r := a.mustVmctl(t, 0, "", "ps"); !regexp.MustCompile(`(?m)^` + id[:12] + `\s.*\sonly-on-a$`).MatchString(r.stdout) {
			t.Errorf("ps on A = %q, want only-on-a with ID %s", r.stdout, id[:12])
		}
		if r := b.mustVmctl(t, 0, "", "ps", "-a"); strings.Contains(r.stdout, "only-on-a") {
			t.Errorf("ps -a on B = %q, shows A's container", r.stdout)
		}
		r := b.mustVmctl(t, 1, "", "rm", "-f", "only-on-a")
		oneLine(t, r, "only-on-a")
		r = a.mustVmctl(t, 1, "", "rm", "only-on-a")
		oneLine(t, r, `cannot remove container "/only-on-a": container is running: stop the container before removing or force remove`)
		a.mustVmctl(t, 0, "", "rm", "-f", "only-on-a")
		if r := a.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("ps -a -q on A = %q after rm -f, want nothing", r.stdout)
		}
	})
	t.Run("lifecycle", func(t *testing.T) {
		script := "cat /data 2>/dev/null; echo started > /data; echo started; echo to-stderr >&2; sleep 30"
		b.mustVmctl(t, 0, "", "run", "-d", "--name", "life", "busybox", "sh", "-c", script)
		waitFor(t, func() bool { return b.vmctl(t, "", "logs", "life").stdout == "started\n" }, "vmctl logs life to show started")
		if r := b.mustVmctl(t, 0, "", "logs", "life"); r.stderr != "to-stderr\n" {
			t.Errorf("logs stderr = %q, want the container's stderr", r.stderr)
		}
		r := b.mustVmctl(t, 0, "", "inspect", "life")
		var recs []struct {
			Name  string
			State struct{ Running bool }
		}
		if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) != 1 || recs[0].Name != "/life" || !recs[0].State.Running {
			t.Errorf("inspect life = %q (%v), want one running record named /life", r.stdout, err)
		}
		b.mustVmctl(t, 0, "", "stop", "-t", "1", "life")
		if r := b.mustVmctl(t, 0, "", "ps", "-a"); !regexp.MustCompile(`Exited \(137\).*\slife\n`).MatchString(r.stdout) {
			t.Errorf("ps -a = %q, want life Exited (137)", r.stdout)
		}
		// start -a reattaches: the file written by the first run survived,
		// and the output stops with the run that kill ends.
		done := make(chan result, 1)
		go func() { done <- b.vmctl(t, "", "start", "-a", "life") }()
		waitFor(t, func() bool { return strings.Count(b.vmctl(t, "", "logs", "life").stdout, "started") == 3 }, "the second run's output")
		b.mustVmctl(t, 0, "", "kill", "-s", "TERM", "life")
		b.mustVmctl(t, 0, "", "kill", "life")
		// kill returns once the container is down, as dockerd's does.
		if r := b.mustVmctl(t, 0, "", "inspect", "-f", "{{.State.Status}}", "life"); r.stdout != "exited\n" {
			t.Errorf("right after kill, the container is %q", r.stdout)
		}
		r = <-done
		if r.stdout != "started\nstarted\n" || r.code != 137 {
			t.Errorf("start -a: exit %d, stdout %q; want 137 and the file's content then the echo", r.code, r.stdout)
		}
		// The last two entries are the second run's echo and its stderr line.
		if r := b.mustVmctl(t, 0, "", "logs", "--tail", "2", "life"); r.stdout != "started\n" || r.stderr != "to-stderr\n" {
			t.Errorf("logs --tail 2: stdout %q stderr %q, want started and to-stderr", r.stdout, r.stderr)
		}
		r = b.mustVmctl(t, 1, "", "kill", "life")
		oneLine(t, r, "vmctl: ")
		b.mustVmctl(t, 0, "", "rm", "life")
		r = b.mustVmctl(t, 1, "", "inspect", "life")
		oneLine(t, r, "no such container or image: life")
		if r := runClient(t, "", nil, "kill", "life"); r.code != 125 || !strings.Contains(r.stderr, "kill needs a daemon") {
			t.Errorf("kill without a daemon: exit %d stderr %q, want 125 and needs a daemon", r.code, r.stderr)
		}
	})
	t.Run("logs follow", func(t *testing.T) {
		a.mustVmctl(t, 0, "", "run", "-d", "--name", "chatty", "busybox", "sh", "-c", "echo one; sleep 1; echo two")
		// -f prints what comes later and returns when the run ends.
		if r := a.mustVmctl(t, 0, "", "logs", "-f", "chatty"); r.stdout != "one\ntwo\n" {
			t.Errorf("logs -f = %q, want both lines", r.stdout)
		}
		// The record turns to exited just after the output ends.
		waitFor(t, func() bool { return strings.Contains(a.vmctl(t, "", "ps", "-a").stdout, "Exited (0)") }, "chatty to exit with 0")
		a.mustVmctl(t, 0, "", "rm", "chatty")
	})
	t.Run("VMCTL_HOST", func(t *testing.T) {
		r := runClient(t, "", []string{"VMCTL_HOST=" + a.host()}, "run", "--rm", "busybox", "echo", "via env")
		if r.code != 0 || r.stdout != "via env\n" {
			t.Errorf("VMCTL_HOST run: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runClient(t, "", []string{"VMCTL_HOST=" + b.host()}, "info")
		if r.code != 0 || !strings.Contains(r.stdout, b.dataRoot) || strings.Contains(r.stdout, a.dataRoot) {
			t.Errorf("VMCTL_HOST=B info: exit %d, stdout %q, want B's data root %s", r.code, r.stdout, b.dataRoot)
		}
		// -H wins over the environment.
		r = runClient(t, "", []string{"VMCTL_HOST=" + b.host()}, "-H", a.host(), "info")
		if r.code != 0 || !strings.Contains(r.stdout, a.dataRoot) {
			t.Errorf("-H A with VMCTL_HOST=B: info = %q, want A's data root %s", r.stdout, a.dataRoot)
		}
		r = runClient(t, "", []string{"VMCTL_HOST=" + b.host()}, "images")
		if r.code != 0 || !regexp.MustCompile(`(?m)^busybox\s+latest\s`).MatchString(r.stdout) {
			t.Errorf("images: exit %d stdout %q", r.code, r.stdout)
		}
		r = runClient(t, "", []string{"VMCTL_HOST=" + b.host()}, "version")
		if r.code != 0 || !strings.Contains(r.stdout, "API 1.41") {
			t.Errorf("version: exit %d stdout %q, want the daemon's API 1.41", r.code, r.stdout)
		}
	})
	t.Run("unknown image", func(t *testing.T) {
		r := a.vmctl(t, "", "run", "--rm", "127.0.0.1:9/no-such-image", "true")
		if r.code != 125 {
			t.Errorf("exit %d, want 125; stderr %q", r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "Unable to find image") ||
			!strings.HasPrefix(lines[1], "vmctl: ") || !strings.Contains(lines[1], "127.0.0.1:9") {
			t.Errorf("stderr = %q, want the pull notice then one error line naming the registry", r.stderr)
		}
	})
	t.Run("pull never", func(t *testing.T) {
		r := a.mustVmctl(t, 125, "", "run", "--pull", "never", "--rm", "no-such-image:1", "true")
		oneLine(t, r, "No such image")
	})
	t.Run("hypervisor", func(t *testing.T) {
		// --hypervisor (--runtime) travels as HostConfig.Runtime: the
		// daemon runs the container on the one asked for.
		a.mustVmctl(t, 0, "", "create", "--name", "onqemu", "--hypervisor", "qemu", "busybox", "true")
		if r := a.mustVmctl(t, 0, "", "inspect", "-f", "{{.HostConfig.Runtime}}", "onqemu"); r.stdout != "qemu\n" {
			t.Errorf("inspect HostConfig.Runtime = %q, want qemu", r.stdout)
		}
		if r := a.mustVmctl(t, 0, "", "start", "-a", "onqemu"); r.code != 0 {
			t.Errorf("start -a of a qemu container: exit %d", r.code)
		}
		a.mustVmctl(t, 0, "", "rm", "onqemu")
		if ok, _ := sandbox.KVMCapability(); !ok {
			r := a.mustVmctl(t, 125, "", "run", "--runtime", "kvm", "--rm", "busybox", "true")
			oneLine(t, r, "hypervisor kvm: ")
		}
	})
	t.Run("rmi", func(t *testing.T) {
		r := b.mustVmctl(t, 1, "", "rmi", "no-such-image")
		oneLine(t, r, "vmctl: ")
		b.mustVmctl(t, 0, "", "rmi", "busybox")
		if r := b.mustVmctl(t, 0, "", "images", "-q"); r.stdout != "" {
			t.Errorf("images -q on B after rmi = %q, want nothing", r.stdout)
		}
		if r := a.mustVmctl(t, 0, "", "images", "-q"); strings.TrimSpace(r.stdout) == "" {
			t.Errorf("images -q on A is empty: rmi on B removed A's image")
		}
	})
	t.Run("pull with the client's credentials", func(t *testing.T) {
		reg := startRegistry(t, "tester", "s3cret")
		dc := withDockerConfig(t)
		ref := reg.host + "/client/busybox:1"
		t.Cleanup(func() { e.run(t, "rmi", ref) })
		e.mustRunEnv(t, dc, 0, "tag", "busybox", ref)
		if r := e.runWith(t, []byte("s3cret\n"), dc, "login", "-u", "tester", "--password-stdin", reg.host); r.code != 0 {
			t.Fatalf("login: exit %d: %s", r.code, r.stderr)
		}
		e.mustRunEnv(t, dc, 0, "push", ref)

		// Without this machine's login the daemon is refused: one line.
		r := runClient(t, "", withDockerConfig(t), "-H", a.host(), "pull", ref)
		if r.code != 125 {
			t.Errorf("pull without credentials: exit %d, want 125", r.code)
		}
		oneLine(t, r, "vmctl login "+reg.host)
		r = runClient(t, "", dc, "-H", a.host(), "pull", ref)
		if r.code != 0 {
			t.Fatalf("pull: exit %d\nstdout: %s\nstderr: %s\ndaemon: %s", r.code, r.stdout, r.stderr, a.stderr)
		}
		tagged := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(reg.host+"/client/busybox") + `\s+1\s`)
		if r := a.mustVmctl(t, 0, "", "images"); !tagged.MatchString(r.stdout) {
			t.Errorf("images on A after pull = %q, want %s", r.stdout, ref)
		}
		if r := b.mustVmctl(t, 0, "", "images"); tagged.MatchString(r.stdout) {
			t.Errorf("images on B = %q: A's pull reached B", r.stdout)
		}
		// run on B pulls the image it does not have, with progress on stderr.
		r = runClient(t, "", dc, "-H", b.host(), "run", "--rm", ref, "echo", "pulled")
		if r.code != 0 || r.stdout != "pulled\n" || !strings.HasPrefix(r.stderr, "Unable to find image") {
			t.Errorf("run of a missing image: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("signals", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := clientCmd(ctx, e, nil, "-H", a.host(), "run", "--rm", "busybox", "sh", "-c",
			`trap 'echo got-int; exit 3' INT; echo ready; while true; do sleep 0.1; done`)
		stdout, err := c.StdoutPipe()
		must(t, err)
		must(t, c.Start())
		lines := bufio.NewScanner(stdout)
		if !lines.Scan() || lines.Text() != "ready" {
			c.Process.Kill()
			c.Wait()
			t.Fatalf("first line %q, want ready", lines.Text())
		}
		must(t, c.Process.Signal(syscall.SIGINT))
		if !lines.Scan() || lines.Text() != "got-int" {
			t.Errorf("after SIGINT: %q, want got-int", lines.Text())
		}
		err = c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("exit: %v, want status 3", err)
		}
	})
	t.Run("interrupt during boot", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := clientCmd(ctx, e, nil, "-H", a.host(), "run", "--rm", "busybox", "sleep", "30")
		var stderr strings.Builder
		c.Stderr = &stderr
		must(t, c.Start())
		time.Sleep(500 * time.Millisecond) // the daemon is starting the VM
		must(t, c.Process.Signal(syscall.SIGINT))
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Errorf("exit: %v, want status 130; stderr %q", err, stderr.String())
		}
		waitFor(t, func() bool { return a.vmctl(t, "", "ps", "-a", "-q").stdout == "" }, "the interrupted container to be removed")
	})
	t.Run("terminal", func(t *testing.T) { remoteTerminal(t, e, a) })
	t.Run("unknown host", func(t *testing.T) {
		for _, tc := range []struct {
			host, want string
		}{
			{"unix://" + filepath.Join(a.execRoot, "no-such.sock"), "cannot connect to vmctld at unix://"},
			{"ftp://example", `invalid host "ftp://example"`},
			{"tcp://127.0.0.1", "needs a port"},
		} {
			r := runClient(t, "", nil, "-H", tc.host, "ps")
			if r.code != 125 {
				t.Errorf("-H %s: exit %d, want 125", tc.host, r.code)
			}
			oneLine(t, r, tc.want)
		}
	})
}

// remoteTerminal drives `vmctl -H ... run -it` through a real pty (see
// driveTerminal).
func remoteTerminal(t *testing.T, e *env, d *daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	driveTerminal(t, clientCmd(ctx, e, nil, "-H", d.host(), "run", "-i", "-t", "--rm", "busybox", "sh"))
}
