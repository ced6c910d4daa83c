package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
)

func TestRunInNamespaces(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	id := run(t, rt, testSpec("sh", "-c", `echo $$; hostname; echo err >&2; test -e /dev/null && test -L /dev/ptmx && echo dev; exit 7`))
	p, err := rt.Process(id, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, p, Stdout), "1\nbox\ndev\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got := readAll(t, p, Stderr); got != "err\n" {
		t.Errorf("stderr = %q, want %q", got, "err\n")
	}
	if e := wait(t, p); e.Status != 7 || e.OOMKilled {
		t.Errorf("exit = %+v, want status 7", e)
	}
}

func TestStdinToCat(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	id := run(t, rt, testSpec("cat"))
	p, _ := rt.Process(id, "")
	if n, err := p.Write([]byte("hello\n")); err != nil || n != 6 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, p, Stdout); got != "hello\n" {
		t.Errorf("stdout = %q, want hello", got)
	}
	if e := wait(t, p); e.Status != 0 {
		t.Errorf("exit = %+v, want 0", e)
	}
	if _, err := p.Write([]byte("x")); !errors.Is(err, ErrState) {
		t.Errorf("Write after CloseStdin = %v, want ErrState", err)
	}
}

func TestTerminal(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	spec := testSpec("sh", "-c", "tty; stty size 2>/dev/null || true")
	spec.Process.Terminal = true
	spec.Process.ConsoleSize = &specs.Box{Height: 40, Width: 100}
	id := run(t, rt, spec)
	p, _ := rt.Process(id, "")
	out := readAll(t, p, Stdout)
	if !regexp.MustCompile(`^/dev/pts/[0-9]+\r\n`).MatchString(out) {
		t.Errorf("tty printed %q, want /dev/pts/N", out)
	}
	if got := readAll(t, p, Stderr); got != "" {
		t.Errorf("stderr on a terminal = %q, want nothing", got)
	}
	if e := wait(t, p); e.Status != 0 {
		t.Errorf("exit = %+v, want 0", e)
	}
	if err := p.Resize(10, 20); err != nil && !errors.Is(err, ErrState) {
		t.Errorf("Resize after exit: %v", err)
	}
}

func TestSignals(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	id := run(t, rt, testSpec("sleep", "100"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// An exec'd process is not PID 1: SIGTERM's default action kills it.
	if err := rt.Exec(ctx, id, "sleeper", &specs.Process{Args: []string{"sleep", "100"}, Env: []string{"PATH=/bin"}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	ex, _ := rt.Process(id, "sleeper")
	if err := ex.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if e := wait(t, ex); e.Status != 128+int(syscall.SIGTERM) {
		t.Errorf("exec'd sleep after SIGTERM: exit %d, want %d", e.Status, 128+int(syscall.SIGTERM))
	}
	if err := ex.Signal(syscall.SIGTERM); !errors.Is(err, ErrState) {
		t.Errorf("Signal after exit = %v, want ErrState", err)
	}

	init, _ := rt.Process(id, "")
	if err := init.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := wait(t, init); e.Status != 137 {
		t.Errorf("init after SIGKILL: exit %d, want 137", e.Status)
	}
	if err := init.Signal(syscall.Signal(99)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Signal(99) = %v, want ErrInvalid", err)
	}
}

func TestExecSeesContainer(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	id := run(t, rt, testSpec("sleep", "100"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proc := &specs.Process{
		Args: []string{"sh", "-c", `hostname; cat /proc/1/comm; echo $$; pwd; id -u`},
		Env:  []string{"PATH=/bin"},
		Cwd:  "/tmp",
		User: specs.User{UID: 1000, GID: 1000},
	}
	if err := rt.Exec(ctx, id, "e1", proc); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	p, _ := rt.Process(id, "e1")
	out := strings.Split(readAll(t, p, Stdout), "\n")
	if len(out) < 5 || out[0] != "box" || out[1] != "sleep" || out[2] == "1" || out[3] != "/tmp" || out[4] != "1000" {
		t.Errorf("exec output = %q, want hostname box, pid 1 = sleep, own pid != 1, cwd /tmp, uid 1000", out)
	}
	if e := wait(t, p); e.Status != 0 {
		t.Errorf("exec exit = %+v", e)
	}

	if err := rt.Exec(ctx, id, "e1", proc); !errors.Is(err, ErrExists) {
		t.Errorf("second exec e1 = %v, want ErrExists", err)
	}
	err := rt.Exec(ctx, id, "e2", &specs.Process{Args: []string{"nope"}, Env: []string{"PATH=/bin"}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("exec of a missing command = %v, want ErrNotFound", err)
	}
	// The agent's own view must be unchanged by the exec thread.
	if h, _ := os.Hostname(); h == "box" {
		t.Error("the agent's hostname changed to the container's")
	}
}

func TestExecUnderLoad(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	id := run(t, rt, testSpec("sleep", "100"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func(i int) {
			execID := "load-" + string(rune('a'+i))
			if err := rt.Exec(ctx, id, execID, &specs.Process{Args: []string{"hostname"}, Env: []string{"PATH=/bin"}}); err != nil {
				errs <- err
				return
			}
			p, _ := rt.Process(id, execID)
			var out []byte
			for {
				d, _, eof, err := p.Read(Stdout, 100, uint64(len(out)))
				if err != nil {
					errs <- err
					return
				}
				out = append(out, d...)
				if eof {
					break
				}
			}
			if string(out) != "box\n" {
				errs <- errors.New("exec " + execID + " printed " + string(out))
				return
			}
			errs <- nil
		}(i)
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestCreateErrors(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		args    []string
		kind    error
		message string
	}{
		{"missing", []string{"nonexistent"}, ErrNotFound, `exec: "nonexistent": executable file not found in $PATH`},
		{"missing-abs", []string{"/bin/nope"}, ErrNotFound, `exec: "/bin/nope": stat /bin/nope: no such file or directory`},
		{"not-executable", []string{"/etc/notexec"}, ErrPermission, `exec: "/etc/notexec": permission denied`},
		{"directory", []string{"/bin"}, ErrPermission, `exec: "/bin": permission denied`},
	}
	for _, tt := range tests {
		id := "err-" + tt.name
		err := rt.Create(ctx, id, mustValidate(t, testSpec(tt.args...)), busyboxRoot(t))
		if !errors.Is(err, tt.kind) || err.Error() != tt.message {
			t.Errorf("Create(%v) = %v, want %v %q", tt.args, err, tt.kind, tt.message)
		}
		if _, err := rt.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("failed container %s is still known: %v", id, err)
		}
	}
	if err := rt.Create(ctx, "bad/id", mustValidate(t, testSpec("true")), busyboxRoot(t)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create with a bad id = %v, want ErrInvalid", err)
	}
	if err := rt.Start(ctx, "unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Start(unknown) = %v, want ErrNotFound", err)
	}
}

func TestRemoveKillsAndCleansUp(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Removed while created (never started) ...
	if err := rt.Create(ctx, "rm-created", mustValidate(t, testSpec("sleep", "100")), busyboxRoot(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Remove(ctx, "rm-created"); err != nil {
		t.Fatalf("Remove created: %v", err)
	}
	// ... and while running, with an exec'd process.
	if err := rt.Create(ctx, "rm-running", mustValidate(t, testSpec("sleep", "100")), busyboxRoot(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, "rm-running"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Exec(ctx, "rm-running", "x", &specs.Process{Args: []string{"sleep", "100"}, Env: []string{"PATH=/bin"}}); err != nil {
		t.Fatal(err)
	}
	p, _ := rt.Process("rm-running", "")
	if err := rt.Remove(ctx, "rm-running"); err != nil {
		t.Fatalf("Remove running: %v", err)
	}
	if e := wait(t, p); e.Status != 137 {
		t.Errorf("init status after Remove = %d, want 137", e.Status)
	}
	for _, id := range []string{"rm-created", "rm-running"} {
		if _, err := os.Stat(filepath.Join(rt.cfg.CgroupRoot, id)); !os.IsNotExist(err) {
			t.Errorf("cgroup of %s still exists: %v", id, err)
		}
	}
	if err := rt.Remove(ctx, "rm-running"); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
}

func TestExecTerminal(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	id := run(t, rt, testSpec("sleep", "100"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proc := &specs.Process{
		Args: []string{"sh", "-c", "tty; read line; echo got $line; stty size"}, Env: []string{"PATH=/bin"},
		Terminal: true, ConsoleSize: &specs.Box{Height: 24, Width: 80},
	}
	if err := rt.Exec(ctx, id, "t", proc); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	p, _ := rt.Process(id, "t")
	if err := p.Resize(50, 132); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	if _, err := p.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	out := readAll(t, p, Stdout)
	// The terminal echoes "hi" whenever it arrives, so only the command's
	// own lines have a fixed order.
	if !regexp.MustCompile(`(?s)/dev/pts/[0-9]+\r\n.*got hi\r\n50 132\r\n$`).MatchString(out) {
		t.Errorf("terminal exec printed %q, want tty path, reply and the new size", out)
	}
	if e := wait(t, p); e.Status != 0 {
		t.Errorf("exit = %+v", e)
	}
	if err := p.Resize(0, 10); !errors.Is(err, ErrInvalid) {
		t.Errorf("Resize(0, 10) = %v, want ErrInvalid", err)
	}
	init, _ := rt.Process(id, "")
	if err := init.Resize(10, 10); !errors.Is(err, ErrState) {
		t.Errorf("Resize without a terminal = %v, want ErrState", err)
	}
}

func TestConcurrentCreateSameID(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 4
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		root, spec := busyboxRoot(t), mustValidate(t, testSpec("sleep", "100"))
		go func() { errs <- rt.Create(ctx, "same", spec, root) }()
	}
	created := 0
	for i := 0; i < n; i++ {
		err := <-errs
		switch {
		case err == nil:
			created++
		case !errors.Is(err, ErrExists):
			t.Errorf("concurrent Create = %v, want nil or ErrExists", err)
		}
		// Whatever state the creation is in, these must not crash.
		rt.Process("same", "")
		rt.Start(ctx, "unknown")
	}
	if created != 1 {
		t.Errorf("%d concurrent Creates of one ID succeeded, want 1", created)
	}
	if err := rt.Remove(ctx, "same"); err != nil {
		t.Errorf("Remove: %v", err)
	}
}

// TestEngineShapedSpec runs the spec shape the engine sends: no /dev mount
// of its own, /dev/shm and /dev/mqueue, no environment at all.
func TestEngineShapedSpec(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	spec := testSpec("sh", "-c", `test -c /dev/null && test -d /dev/pts && test -d /dev/mqueue && echo ok`)
	spec.Process.Env = nil
	spec.Hostname = ""
	spec.Mounts = []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
	}
	id := run(t, rt, spec)
	p, _ := rt.Process(id, "")
	if out := readAll(t, p, Stdout); out != "ok\n" {
		t.Errorf("stdout = %q, want ok", out)
	}
	if e := wait(t, p); e.Status != 0 {
		t.Errorf("exit = %+v, want 0", e)
	}
}

// A pausing container (contract.InitPause) runs nothing of its own, not
// even a command its image lacks, and serves execs until removed.
func TestPauseInit(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	spec := testSpec("no-such-command")
	spec.Annotations = map[string]string{contract.AnnotationInit: contract.InitPause}
	id := run(t, rt, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 2 {
		eid := fmt.Sprintf("step%d", i)
		if err := rt.Exec(ctx, id, eid, &specs.Process{Args: []string{"sh", "-c", "echo step $0", fmt.Sprint(i)}, Env: []string{"PATH=/bin"}, Cwd: "/"}); err != nil {
			t.Fatalf("exec %d: %v", i, err)
		}
		p, _ := rt.Process(id, eid)
		if got, want := readAll(t, p, Stdout), fmt.Sprintf("step %d\n", i); got != want {
			t.Errorf("exec %d printed %q, want %q", i, got, want)
		}
		if e := wait(t, p); e.Status != 0 {
			t.Errorf("exec %d exit = %+v", i, e)
		}
	}
	init, _ := rt.Process(id, "")
	if err := rt.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if e := wait(t, init); e.Status != 137 {
		t.Errorf("pausing init after Remove = %d, want 137", e.Status)
	}
}

// Pause freezes the container's processes, execs included (the cgroup
// reports frozen); Resume thaws them; a paused container can be removed.
func TestPauseFreezes(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Create(ctx, "pz", mustValidate(t, testSpec("sleep", "100")), busyboxRoot(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Exec(ctx, "pz", "x", &specs.Process{Args: []string{"sleep", "100"}, Env: []string{"PATH=/bin"}}); err != nil {
		t.Fatal(err)
	}
	frozen := func() string {
		b, _ := os.ReadFile(filepath.Join(rt.cfg.CgroupRoot, "pz", "cgroup.events"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "frozen ") {
				return l
			}
		}
		return string(b)
	}
	if err := rt.Pause(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	if f := frozen(); f != "frozen 1" {
		t.Errorf("after Pause: %q", f)
	}
	if err := rt.Resume(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for frozen() != "frozen 0" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f := frozen(); f != "frozen 0" {
		t.Errorf("after Resume: %q", f)
	}
	if err := rt.Pause(ctx, "pz"); err != nil {
		t.Fatal(err)
	}
	init, _ := rt.Process("pz", "")
	if err := rt.Remove(ctx, "pz"); err != nil {
		t.Fatalf("Remove of a paused container: %v", err)
	}
	if e := wait(t, init); e.Status != 137 {
		t.Errorf("init status after Remove of a paused container = %d, want 137", e.Status)
	}
	if err := rt.Pause(ctx, "nope"); err == nil {
		t.Error("Pause of a missing container succeeded")
	}
}
