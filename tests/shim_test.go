package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// The containerd shim (io.containerd.vmctl.v1) driven by Debian's
// containerd and its ctr, as orchestrators drive it. The tests start one
// containerd of their own (its own root, state and sockets, never the
// machine's) with bin/ first on its PATH, where containerd finds
// containerd-shim-vmctl-v1.

const shimRuntime = "io.containerd.vmctl.v1"

// ctrd is the tests' containerd.
type ctrd struct {
	dir       string // root, state, sockets, the shim's state
	sock      string
	shimState string // the shim's VM state root (VMCTL_SHIM_STATE)
	cmd       *exec.Cmd
	log       *bytes.Buffer
	image     string // the imported busybox reference
	env       []string
}

var (
	ctrdOnce   sync.Once
	ctrdShared *ctrd
	ctrdErr    error
)

// containerd returns the tests' containerd, started on first use with the
// busybox image imported; it stops when the tests end.
func containerd(t *testing.T) *ctrd {
	t.Helper()
	e := e2e(t)
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: `make deps` installs containerd", bin)
		}
	}
	if _, err := os.Stat(filepath.Join(e.root, "bin", "containerd-shim-vmctl-v1")); err != nil {
		t.Fatalf("bin/containerd-shim-vmctl-v1 is missing: `make build` builds it")
	}
	ctrdOnce.Do(func() { ctrdShared, ctrdErr = startContainerd(e) })
	if ctrdErr != nil {
		t.Fatal(ctrdErr)
	}
	return ctrdShared
}

func startContainerd(e *env) (*ctrd, error) {
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		return nil, err
	}
	tempDirs = append(tempDirs, dir)
	c := &ctrd{dir: dir, sock: filepath.Join(dir, "c.sock"), shimState: filepath.Join(dir, "shim"), log: &bytes.Buffer{}}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		return nil, err
	}
	c.env = append(os.Environ(), "PATH="+filepath.Join(e.root, "bin")+":"+os.Getenv("PATH"),
		"VMCTL_SHIM_STATE="+c.shimState, "VMCTL_KERNEL=", "VMCTL_INITRD=", "VMCTL_HYPERVISOR=")
	if err := c.start(); err != nil {
		return nil, err
	}
	atExit = append(atExit, c.stop)
	out, err := c.ctr(context.Background(), nil, "images", "import", filepath.Join(e.root, "build/busybox.tar"))
	if err != nil {
		return nil, fmt.Errorf("ctr images import: %v: %s", err, out)
	}
	list, err := c.ctr(context.Background(), nil, "images", "ls", "-q")
	if err != nil || strings.TrimSpace(list) == "" {
		return nil, fmt.Errorf("ctr images ls: %v: %q", err, list)
	}
	c.image = strings.Fields(list)[0]
	return c, nil
}

// start runs containerd and waits until it answers.
func (c *ctrd) start() error {
	c.cmd = exec.Command("containerd", "--config", filepath.Join(c.dir, "config.toml"))
	c.cmd.Env = c.env
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := c.ctr(context.Background(), nil, "version"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("containerd did not answer within 20 s: %s", c.log)
}

// stop ends containerd (its shims end with their tasks).
func (c *ctrd) stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
	}
}

// ctrArgs is ctr's command line against the tests' containerd, with the
// FIFOs of what it runs in the tests' directory (ctr's default is the
// machine's /run/containerd/fifo, and a detached task leaves them there).
func (c *ctrd) ctrArgs(args ...string) []string {
	out := append([]string{"-a", c.sock}, args...)
	switch {
	case len(args) > 0 && args[0] == "run":
		out = append([]string{"-a", c.sock, "run", "--fifo-dir", filepath.Join(c.dir, "fifo")}, args[1:]...)
	case len(args) > 1 && args[0] == "task" && args[1] == "exec":
		out = append([]string{"-a", c.sock, "task", "exec", "--fifo-dir", filepath.Join(c.dir, "fifo")}, args[2:]...)
	}
	return out
}

// ctr runs ctr against the tests' containerd.
func (c *ctrd) ctr(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", c.ctrArgs(args...)...)
	cmd.Env = c.env
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// run runs ctr and returns its stdout, stderr and exit status.
func (c *ctrd) run(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", c.ctrArgs(args...)...)
	cmd.Env = c.env
	return capture(ctx, t, cmd, stdin)
}

func (c *ctrd) mustCtr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.ctr(context.Background(), nil, args...)
	if err != nil {
		t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// taskStatus is the STATUS column of `ctr task ls` for id ("" if absent).
func (c *ctrd) taskStatus(t *testing.T, id string) string {
	t.Helper()
	for _, line := range strings.Split(c.mustCtr(t, "task", "ls"), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// waitStatus waits until id's task shows want.
func (c *ctrd) waitStatus(t *testing.T, id, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = c.taskStatus(t, id); got == want {
			return
		}
	}
	t.Fatalf("task %s: status %q, want %q", id, got, want)
}

// remove deletes id's task (killed if it runs) and container.
func (c *ctrd) remove(t *testing.T, id string) {
	t.Helper()
	if st := c.taskStatus(t, id); st != "" {
		if st != "STOPPED" {
			c.ctr(context.Background(), nil, "task", "kill", "-s", "KILL", id)
			c.waitStatus(t, id, "STOPPED")
		}
		c.mustCtr(t, "task", "delete", id)
	}
	c.ctr(context.Background(), nil, "containers", "rm", id)
}

// leftovers lists what finished tasks must not leave: VM processes, VM
// state, shim sockets, mounts of bundles.
func (c *ctrd) leftovers() []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, c.shimState+"/") || strings.Contains(cmdline, "containerd-shim-vmctl-v1") && strings.Contains(cmdline, c.sock) {
			found = append(found, "process: "+cmdline)
		}
	}
	entries, _ := os.ReadDir(c.shimState)
	for _, en := range entries {
		if en.Name() == "s" {
			socks, _ := os.ReadDir(filepath.Join(c.shimState, "s"))
			for _, s := range socks {
				found = append(found, "shim socket: "+s.Name())
			}
			continue
		}
		found = append(found, "VM state: "+en.Name())
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, c.dir+"/") {
				found = append(found, "mount: "+line)
			}
		}
	}
	return found
}

func (c *ctrd) checkClean(t *testing.T) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if left = c.leftovers(); len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(left, "\n  "))
	}
}

// ctr run --rm prints the guest kernel's release, passes stdin, keeps
// stdout and stderr apart and exits with the container's status.
func TestShimRun(t *testing.T) {
	c := containerd(t)
	e := e2e(t)
	r := c.run(t, nil, "run", "--rm", "--runtime", shimRuntime, c.image, "shim-uname", "uname", "-r")
	if r.code != 0 || strings.TrimSpace(r.stdout) != e.release {
		t.Fatalf("uname -r: exit %d, stdout %q (want %q), stderr %q", r.code, r.stdout, e.release, r.stderr)
	}
	r = c.run(t, nil, "run", "--rm", "--runtime", shimRuntime, c.image, "shim-status", "sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 || r.stdout != "out\n" || !strings.Contains(r.stderr, "err\n") {
		t.Errorf("exit 7: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = c.run(t, strings.NewReader("line one\nline two\n"), "run", "--rm", "--runtime", shimRuntime, c.image, "shim-stdin", "cat")
	if r.code != 0 || r.stdout != "line one\nline two\n" {
		t.Errorf("cat: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// The container's writes land in containerd's snapshot, its own.
	r = c.run(t, nil, "run", "--rm", "--runtime", shimRuntime, c.image, "shim-write", "sh", "-c", "echo x > /tmp/f && cat /tmp/f && ls /")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "x\n") || !strings.Contains(r.stdout, "bin") {
		t.Errorf("write to the rootfs: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	c.checkClean(t)
}

// A host directory bound into the task is shared with its VM: writable,
// or read-only with ro; a file is refused in one line.
func TestShimBindMount(t *testing.T) {
	c := containerd(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "from-host"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.run(t, nil, "run", "--rm", "--runtime", shimRuntime, "--mount", "type=bind,src="+dir+",dst=/data,options=rbind:rw",
		c.image, "shim-bind", "sh", "-c", "cat /data/from-host && echo written > /data/from-guest")
	if r.code != 0 || r.stdout != "hello from the host\n" {
		t.Fatalf("bind rw: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "from-guest")); err != nil || string(b) != "written\n" {
		t.Errorf("the guest's file on the host: %q, %v", b, err)
	}
	r = c.run(t, nil, "run", "--rm", "--runtime", shimRuntime, "--mount", "type=bind,src="+dir+",dst=/data,options=rbind:ro",
		c.image, "shim-bind-ro", "sh", "-c", "cat /data/from-host; echo x > /data/denied")
	if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("bind ro: exit %d, stdout %q, stderr %q; want the write refused", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "denied")); err == nil {
		t.Error("a read-only bind let the guest write to the host")
	}
	r = c.run(t, nil, "run", "--rm", "--runtime", shimRuntime, "--mount", "type=bind,src="+filepath.Join(dir, "from-host")+",dst=/f,options=rbind:ro",
		c.image, "shim-bind-file", "true")
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code == 0 || len(lines) != 1 || !strings.Contains(lines[0], "is not a directory") {
		t.Errorf("bind of a file: exit %d, stderr %q; want one line refusing it", r.code, r.stderr)
	}
	c.ctr(context.Background(), nil, "containers", "rm", "shim-bind-file")
	c.checkClean(t)
}

// ctr run -t gives the container a terminal.
func TestShimTerminal(t *testing.T) {
	c := containerd(t)
	cmd := exec.Command("ctr", c.ctrArgs("run", "--rm", "-t", "--runtime", shimRuntime, c.image, "shim-tty", "sh")...)
	cmd.Env = c.env
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, f); close(copied) }()
	time.Sleep(500 * time.Millisecond)
	io.WriteString(f, "tty -s && echo is-a-tty; stty size; exit 3\r")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("ctr run -t did not end; output %q", out.String())
	}
	f.Close()
	<-copied
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Errorf("exit %d, want 3 (%v); output %q", code, err, out.String())
	}
	if !strings.Contains(out.String(), "is-a-tty") || !strings.Contains(out.String(), "30 100") {
		t.Errorf("output %q: want is-a-tty and the terminal's size 30 100", out.String())
	}
	c.checkClean(t)
}

// A detached task: ps, exec, pause and resume, attach, kill, delete, and
// the events containerd sees.
func TestShimTaskLifecycle(t *testing.T) {
	c := containerd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := exec.CommandContext(ctx, "ctr", "-a", c.sock, "events")
	events.Env = c.env
	evOut, err := events.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); events.Wait() }()
	var evMu sync.Mutex
	var evLines []string
	go func() {
		sc := bufio.NewScanner(evOut)
		for sc.Scan() {
			evMu.Lock()
			evLines = append(evLines, sc.Text())
			evMu.Unlock()
		}
	}()

	id := "shim-life"
	defer c.remove(t, id)
	c.mustCtr(t, "run", "-d", "--runtime", shimRuntime, "--memory-limit", "67108864", c.image, id, "sh", "-c", "echo started; while true; do sleep 1; done")
	c.waitStatus(t, id, "RUNNING")

	r := c.run(t, nil, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "echo from-exec; exit 5")
	if r.code != 5 || r.stdout != "from-exec\n" {
		t.Errorf("exec: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = c.run(t, strings.NewReader("piped\n"), "task", "exec", "--exec-id", "e2", id, "cat")
	if r.code != 0 || r.stdout != "piped\n" {
		t.Errorf("exec with stdin: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	c.mustCtr(t, "task", "exec", "--exec-id", "bg", "--detach", id, "sleep", "999")
	// Pids by the container's own numbering: its init is 1; the exec's
	// sleep is there too.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ps := c.mustCtr(t, "task", "ps", id)
		if regexp.MustCompile(`(?m)^1\s`).MatchString(ps) && len(regexp.MustCompile(`(?m)^\d+\s`).FindAllString(ps, -1)) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task ps: %q, want pid 1 and the exec's sleep", ps)
		}
	}
	// The container's cgroup statistics in the guest: the spec's memory
	// limit, usage, pids.
	metrics := c.mustCtr(t, "task", "metrics", id)
	for _, re := range []string{`(?m)^pids\.current\s+[1-9]`, `(?m)^memory\.usage\s+[1-9]`, `(?m)^memory\.usage_limit\s+67108864\s*$`, `(?m)^cpu\.usage_usec\s+[1-9]`} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("task metrics: no %s in\n%s", re, metrics)
		}
	}

	c.mustCtr(t, "task", "pause", id)
	c.waitStatus(t, id, "PAUSED")
	c.mustCtr(t, "task", "resume", id)
	c.waitStatus(t, id, "RUNNING")

	// attach shows output written from now on; SIGKILL ends only ctr.
	attach := exec.Command("ctr", "-a", c.sock, "task", "attach", id)
	attach.Env = c.env
	var aout bytes.Buffer
	attach.Stdout = &aout
	if err := attach.Start(); err != nil {
		t.Fatal(err)
	}
	c.mustCtr(t, "task", "exec", "--exec-id", "e3", id, "sh", "-c", "echo via-attach > /proc/1/fd/1")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(aout.String(), "via-attach") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	attach.Process.Kill()
	attach.Wait()
	if !strings.Contains(aout.String(), "via-attach") {
		t.Errorf("attach saw %q, want via-attach", aout.String())
	}

	c.mustCtr(t, "task", "kill", "-s", "KILL", id)
	c.waitStatus(t, id, "STOPPED")
	c.mustCtr(t, "task", "delete", id)
	c.mustCtr(t, "containers", "rm", id)

	want := []string{"/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/delete"}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		evMu.Lock()
		all := strings.Join(evLines, "\n")
		evMu.Unlock()
		var missing []string
		for _, topic := range want {
			if !regexp.MustCompile(regexp.QuoteMeta(topic) + ` .*"` + id + `"`).MatchString(all) {
				missing = append(missing, topic)
			}
		}
		if len(missing) == 0 {
			if !regexp.MustCompile(`/tasks/exit \{"container_id":"` + id + `","id":"` + id + `".*"exit_status":137`).MatchString(all) {
				t.Errorf("no /tasks/exit with status 137 for the init: %s", all)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events missing %v; saw:\n%s", missing, all)
		}
	}
	c.checkClean(t)
}

// containerd restarting leaves the task running, listed, exec-able and
// killable.
func TestShimContainerdRestart(t *testing.T) {
	c := containerd(t)
	id := "shim-restart"
	defer c.remove(t, id)
	c.mustCtr(t, "run", "-d", "--runtime", shimRuntime, c.image, id, "sleep", "1000")
	c.waitStatus(t, id, "RUNNING")
	c.stop()
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(t, id, "RUNNING")
	if r := c.run(t, nil, "task", "exec", "--exec-id", "after", id, "echo", "after-restart"); r.code != 0 || r.stdout != "after-restart\n" {
		t.Errorf("exec after the restart: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	c.mustCtr(t, "task", "kill", "-s", "KILL", id)
	c.waitStatus(t, id, "STOPPED")
	c.remove(t, id)
	c.checkClean(t)
}

// A shim killed with SIGKILL: containerd's cleanup (the shim's delete
// command) ends the VM it left and unmounts the rootfs.
func TestShimKilled(t *testing.T) {
	c := containerd(t)
	id := "shim-killed"
	defer c.remove(t, id)
	c.mustCtr(t, "run", "-d", "--runtime", shimRuntime, c.image, id, "sleep", "1000")
	c.waitStatus(t, id, "RUNNING")
	shimPid := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("containerd-shim-vmctl-v1")) && bytes.Contains(b, []byte("\x00"+id+"\x00")) && bytes.Contains(b, []byte(c.sock)) {
			shimPid, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
		}
	}
	if shimPid == 0 {
		t.Fatal("no shim process for the task")
	}
	syscall.Kill(shimPid, syscall.SIGKILL)
	// containerd notices the shim's end, runs its delete command and
	// forgets the task.
	c.waitStatus(t, id, "")
	c.remove(t, id)
	c.checkClean(t)
}

// Bad input reaches ctr as one line, and leaves nothing behind.
func TestShimBadInput(t *testing.T) {
	c := containerd(t)
	bad := filepath.Join(c.dir, "bad-options.json")
	if err := os.WriteFile(bad, []byte(`{"hypervisor":"qemu","turbo":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown runtime option", []string{"run", "--rm", "--runtime", shimRuntime, "--runtime-config-path", bad, c.image, "shim-bad1", "true"}, `unknown field "turbo"`},
		{"missing rootfs", []string{"run", "--rm", "--runtime", shimRuntime, "--rootfs", filepath.Join(c.dir, "no-such-rootfs"), "shim-bad2", "true"}, "has no rootfs"},
		{"host namespace", []string{"run", "--rm", "--runtime", shimRuntime, "--with-ns", "network:/proc/1/ns/net", c.image, "shim-bad3", "true"}, "cannot join it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := c.run(t, nil, tt.args...)
			if r.code == 0 {
				t.Fatalf("exit 0, want a failure; stdout %q", r.stdout)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr %q: want one line containing %q", r.stderr, tt.want)
			}
			id := tt.args[len(tt.args)-2]
			c.ctr(context.Background(), nil, "containers", "rm", id)
		})
	}
	c.checkClean(t)
}
