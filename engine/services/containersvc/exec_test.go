package containersvc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

func TestExecSpec(t *testing.T) {
	c := &containers.Container{Config: containers.Config{
		Env:      []string{"PATH=/bin", "HOSTNAME=box", "A=1"},
		Hostname: "box", User: "10:20", WorkingDir: "/srv",
	}}
	// An exec is confined as the container's own process is.
	caps := &specs.LinuxCapabilities{Bounding: DefaultCapabilities}
	tests := []struct {
		name    string
		o       ExecOptions
		want    specs.Process
		wantErr error
	}{
		{
			name: "container defaults",
			o:    ExecOptions{Cmd: []string{"ls", "-l"}},
			want: specs.Process{Args: []string{"ls", "-l"}, Env: []string{"PATH=/bin", "HOSTNAME=box", "A=1"}, Cwd: "/srv", User: specs.User{UID: 10, GID: 20}, Capabilities: caps},
		},
		{
			name: "exec overrides",
			o:    ExecOptions{Cmd: []string{"sh"}, Env: []string{"A=2", "B=3"}, User: "0", WorkingDir: "/tmp"},
			want: specs.Process{Args: []string{"sh"}, Env: []string{"PATH=/bin", "HOSTNAME=box", "A=2", "B=3"}, Cwd: "/tmp", Capabilities: caps},
		},
		{
			name: "tty adds TERM and the size",
			o:    ExecOptions{Cmd: []string{"sh"}, Tty: true, ConsoleRows: 40, ConsoleCols: 120},
			want: specs.Process{
				Terminal: true, Args: []string{"sh"}, Env: []string{"PATH=/bin", "HOSTNAME=box", "A=1", "TERM=xterm"},
				Cwd: "/srv", User: specs.User{UID: 10, GID: 20}, ConsoleSize: &specs.Box{Height: 40, Width: 120}, Capabilities: caps,
			},
		},
		{name: "relative workdir", o: ExecOptions{Cmd: []string{"sh"}, WorkingDir: "tmp"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "malformed user", o: ExecOptions{Cmd: []string{"sh"}, User: "a:b:c"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "bad env", o: ExecOptions{Cmd: []string{"sh"}, Env: []string{"=x"}}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		got, err := execSpec(c, tt.o)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: execSpec = %v, want error of class %v", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("%s: execSpec = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
}

// fakeProc is one process of fakeAgent. Its behaviour comes from its
// args: "echo WORDS", "exit N", "cat" (stdin to stdout), "sleep" (until a
// signal), "nosuch" and "noexec" fail to start.
type fakeProc struct {
	args   []string
	stdout chan []byte // closed at the end of output
	// sent is the stdout offset after the last chunk handed out; the fake
	// insists on acknowledged reads, as the agent does.
	sent atomic.Uint64
	exit chan int // receives the status once
	once sync.Once
}

func (p *fakeProc) end(code int) {
	p.once.Do(func() {
		close(p.stdout)
		p.exit <- code
	})
}

// fakeAgent is the exec part of the agent, in memory, with the errors the
// agent client gives.
type fakeAgent struct {
	guestAgent // nil: other calls are not expected

	mu      sync.Mutex
	procs   map[string]*fakeProc
	specs   map[string]specs.Process
	resizes []string
}

func (f *fakeAgent) proc(id string) (*fakeProc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.procs[id]; p != nil {
		return p, nil
	}
	return nil, errs.New(errdefs.ErrNotFound, "process %q not found", id)
}

func (f *fakeAgent) ExecProcess(ctx context.Context, proc agent.Process, sp *specs.Process) error {
	switch sp.Args[0] {
	case "nosuch":
		return errs.New(errdefs.ErrNotFound, "exec: %q: executable file not found in $PATH", sp.Args[0])
	case "noexec":
		return errs.New(errdefs.ErrPermissionDenied, "exec: %q: permission denied", sp.Args[0])
	}
	p := &fakeProc{args: sp.Args, stdout: make(chan []byte, 16), exit: make(chan int, 1)}
	f.mu.Lock()
	f.procs[proc.ExecID] = p
	f.specs[proc.ExecID] = *sp
	f.mu.Unlock()
	switch sp.Args[0] {
	case "echo":
		p.stdout <- []byte(strings.Join(sp.Args[1:], " ") + "\n")
		p.end(0)
	case "exit":
		code, _ := strconv.Atoi(sp.Args[1])
		p.end(code)
	}
	return nil
}

func (f *fakeAgent) WaitProcess(ctx context.Context, proc agent.Process) (agent.Exit, error) {
	p, err := f.proc(proc.ExecID)
	if err != nil {
		return agent.Exit{}, err
	}
	select {
	case code := <-p.exit:
		return agent.Exit{Status: code}, nil
	case <-ctx.Done():
		return agent.Exit{}, ctx.Err()
	}
}

func (f *fakeAgent) SignalProcess(ctx context.Context, proc agent.Process, sig syscall.Signal) error {
	p, err := f.proc(proc.ExecID)
	if err != nil {
		return err
	}
	p.end(128 + int(sig))
	return nil
}

func (f *fakeAgent) WriteStdin(ctx context.Context, proc agent.Process, data []byte) (int, error) {
	p, err := f.proc(proc.ExecID)
	if err != nil {
		return 0, err
	}
	if p.args[0] == "cat" {
		p.stdout <- append([]byte(nil), data...)
	}
	return len(data), nil
}

func (f *fakeAgent) CloseStdin(ctx context.Context, proc agent.Process) error {
	p, err := f.proc(proc.ExecID)
	if err != nil {
		return err
	}
	if p.args[0] == "cat" {
		p.end(0)
	}
	return nil
}

func (f *fakeAgent) ReadStdout(ctx context.Context, proc agent.Process, max int, offset uint64) (agent.Output, error) {
	p, err := f.proc(proc.ExecID)
	if err != nil {
		return agent.Output{}, err
	}
	at := p.sent.Load()
	if offset != at {
		return agent.Output{}, errs.New(errdefs.ErrInvalidArgument, "offset %d, stream at %d", offset, at)
	}
	select {
	case b, ok := <-p.stdout:
		p.sent.Add(uint64(len(b)))
		return agent.Output{Data: b, EOF: !ok}, nil
	case <-ctx.Done():
		return agent.Output{}, ctx.Err()
	}
}

func (f *fakeAgent) ReadStderr(ctx context.Context, proc agent.Process, max int, offset uint64) (agent.Output, error) {
	if _, err := f.proc(proc.ExecID); err != nil {
		return agent.Output{}, err
	}
	return agent.Output{EOF: true}, nil
}

func (f *fakeAgent) ResizeTty(ctx context.Context, proc agent.Process, rows, cols uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resizes = append(f.resizes, proc.ExecID+" "+strconv.Itoa(int(rows))+"x"+strconv.Itoa(int(cols)))
	return nil
}

func (f *fakeAgent) Close() error { return nil }

// execFixture is a service with one running container whose agent is a
// fakeAgent.
func execFixture(t *testing.T) (*Service, *fakeAgent, *task) {
	t.Helper()
	dir := t.TempDir()
	store, err := containers.OpenStore(filepath.Join(dir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	c := &containers.Container{
		ID: containers.NewID(), Name: "box",
		Config: containers.Config{Env: []string{"PATH=/bin"}, Hostname: "box"},
		State:  containers.State{Status: containers.StatusRunning},
	}
	if err := store.Create(c); err != nil {
		t.Fatal(err)
	}
	fake := &fakeAgent{procs: map[string]*fakeProc{}, specs: map[string]specs.Process{}}
	s := New(Config{Store: store})
	tk := &task{svc: s, c: c, agent: fake, ready: make(chan struct{}), done: make(chan struct{})}
	tk.ctx, tk.cancel = context.WithCancel(context.Background())
	close(tk.ready)
	s.tasks[c.ID] = tk
	t.Cleanup(tk.cancel)
	return s, fake, tk
}

// lockedBuffer is an io.Writer safe for the pumps' goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestExecStart(t *testing.T) {
	s, fake, _ := execFixture(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		o        ExecOptions
		stdin    string
		wantOut  string
		wantCode int
		wantErr  int // CommandError exit code; 0: no error
	}{
		{name: "output", o: ExecOptions{Cmd: []string{"echo", "hello", "world"}, AttachStdout: true}, wantOut: "hello world\n"},
		{name: "exit code", o: ExecOptions{Cmd: []string{"exit", "5"}}, wantCode: 5},
		{name: "stdin", o: ExecOptions{Cmd: []string{"cat"}, AttachStdin: true, AttachStdout: true}, stdin: "hi\n", wantOut: "hi\n"},
		{name: "stdin not attached is closed", o: ExecOptions{Cmd: []string{"cat"}, AttachStdout: true}, stdin: "ignored\n"},
		{name: "not found", o: ExecOptions{Cmd: []string{"nosuch"}}, wantCode: 127, wantErr: 127},
		{name: "not executable", o: ExecOptions{Cmd: []string{"noexec"}}, wantCode: 126, wantErr: 126},
	}
	for _, tt := range tests {
		id, err := s.ExecCreate("box", tt.o)
		if err != nil {
			t.Fatalf("%s: ExecCreate: %v", tt.name, err)
		}
		if info, err := s.ExecInspect(id); err != nil || info.Running || info.ExitCode != nil {
			t.Errorf("%s: ExecInspect before start = %+v, %v; want not running, no exit code", tt.name, info, err)
		}
		var out lockedBuffer
		stdio := Stdio{Stdin: strings.NewReader(tt.stdin), Stdout: &out, Stderr: io.Discard}
		err = s.ExecStart(ctx, id, stdio, false)
		var ce *CommandError
		switch {
		case tt.wantErr == 0 && err != nil:
			t.Errorf("%s: ExecStart: %v", tt.name, err)
		case tt.wantErr != 0 && (!errors.As(err, &ce) || ce.ExitCode != tt.wantErr || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: ExecStart = %v, want a one-line CommandError with code %d", tt.name, err, tt.wantErr)
		}
		if out.String() != tt.wantOut {
			t.Errorf("%s: output %q, want %q", tt.name, out.String(), tt.wantOut)
		}
		info, err := s.ExecInspect(id)
		if err != nil || info.Running || info.ExitCode == nil || *info.ExitCode != tt.wantCode {
			t.Errorf("%s: ExecInspect after the end = %+v, %v; want exit code %d", tt.name, info, err, tt.wantCode)
		}
		if err := s.ExecStart(ctx, id, Stdio{}, false); !errdefs.IsConflict(err) {
			t.Errorf("%s: second ExecStart = %v, want a conflict", tt.name, err)
		}
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.procs) != 4 {
		t.Errorf("the agent ran %d processes, want 4", len(fake.procs))
	}
}

func TestExecDetachResizeCancel(t *testing.T) {
	s, fake, tk := execFixture(t)
	ctx := context.Background()

	// Detach: the call returns while the process runs.
	id, err := s.ExecCreate("box", ExecOptions{Cmd: []string{"sleep"}, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	// A resize before the start becomes the initial size.
	if err := s.ExecResize(ctx, id, 30, 100); err != nil {
		t.Fatalf("ExecResize before start: %v", err)
	}
	if err := s.ExecStart(ctx, id, Stdio{}, true); err != nil {
		t.Fatalf("ExecStart detached: %v", err)
	}
	if info, _ := s.ExecInspect(id); !info.Running {
		t.Errorf("detached exec not running: %+v", info)
	}
	fake.mu.Lock()
	size := fake.specs[id].ConsoleSize
	fake.mu.Unlock()
	if size == nil || size.Height != 30 || size.Width != 100 {
		t.Errorf("initial console size = %+v, want 30x100", size)
	}
	if err := s.ExecResize(ctx, id, 50, 80); err != nil {
		t.Fatalf("ExecResize: %v", err)
	}
	fake.mu.Lock()
	resizes := append([]string(nil), fake.resizes...)
	fake.mu.Unlock()
	if want := []string{id + " 50x80"}; !reflect.DeepEqual(resizes, want) {
		t.Errorf("agent resizes = %q, want %q", resizes, want)
	}
	p, _ := s.exec(id)
	fp, err := fake.proc(id)
	if err != nil {
		t.Fatal(err)
	}
	fp.end(0)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("detached exec not recorded as ended")
	}

	// Cancelling a foreground start kills the process.
	id, err = s.ExecCreate("box", ExecOptions{Cmd: []string{"sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.ExecStart(cctx, id, Stdio{}, false) }()
	for {
		if info, _ := s.ExecInspect(id); info.Running {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("ExecStart did not return after its context was cancelled")
	}
	if info, _ := s.ExecInspect(id); info.ExitCode == nil || *info.ExitCode != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code after cancel = %v, want 137", info.ExitCode)
	}

	// Errors: unknown exec, resize without a terminal, a stopped container.
	if _, err := s.ExecInspect("nope"); !errdefs.IsNotFound(err) {
		t.Errorf("ExecInspect(unknown) = %v, want not found", err)
	}
	if err := s.ExecResize(ctx, id, 1, 1); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ExecResize without tty = %v, want invalid argument", err)
	}
	if _, err := s.ExecCreate("box", ExecOptions{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ExecCreate without a command = %v, want invalid argument", err)
	}
	s.mu.Lock()
	delete(s.tasks, tk.c.ID) // the run ended
	s.mu.Unlock()
	if _, err := s.ExecCreate("box", ExecOptions{Cmd: []string{"true"}}); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "not running") {
		t.Errorf("ExecCreate into a stopped container = %v, want a not-running conflict", err)
	}
	if _, err := s.ExecInspect(id); !errdefs.IsNotFound(err) {
		t.Errorf("ExecInspect after the run ended = %v, want not found: records go with the run", err)
	}
}

func TestExecPrune(t *testing.T) {
	s, _, tk := execFixture(t)
	ids := map[string]string{}
	for _, name := range []string{"old", "recent", "running"} {
		id, err := s.ExecCreate("box", ExecOptions{Cmd: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	now := time.Now()
	s.mu.Lock()
	tk.execs[ids["old"]].ended = now.Add(-execKeep - time.Second)
	tk.execs[ids["recent"]].ended = now.Add(-execKeep + time.Second)
	tk.pruneExecsLocked(now)
	s.mu.Unlock()
	for name, want := range map[string]bool{"old": false, "recent": true, "running": true} {
		if _, err := s.ExecInspect(ids[name]); (err == nil) != want {
			t.Errorf("%s exec after prune: ExecInspect err = %v, want kept=%v", name, err, want)
		}
	}
}

// An interactive exec without a size starts once the client's first resize
// arrives, with that size.
func TestExecWaitsForSize(t *testing.T) {
	s, fake, _ := execFixture(t)
	id, err := s.ExecCreate("box", ExecOptions{Cmd: []string{"echo"}, Tty: true, AttachStdin: true})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.ExecStart(context.Background(), id, Stdio{Stdin: strings.NewReader("")}, false) }()
	time.Sleep(50 * time.Millisecond) // the start is waiting now, or soon
	if err := s.ExecResize(context.Background(), id, 33, 91); err != nil {
		t.Fatalf("ExecResize: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("ExecStart: %v", err)
	}
	fake.mu.Lock()
	size := fake.specs[id].ConsoleSize
	fake.mu.Unlock()
	if size == nil || size.Height != 33 || size.Width != 91 {
		t.Errorf("console size at start = %+v, want 33x91", size)
	}
}

// silentAgent never answers a control call: a guest whose VM the host
// paused, or whose agent is wedged.
type silentAgent struct{ fakeAgent }

func (*silentAgent) SignalProcess(ctx context.Context, _ agent.Process, _ syscall.Signal) error {
	<-ctx.Done()
	return ctx.Err()
}

func (*silentAgent) ResumeContainer(ctx context.Context, _ string) error {
	<-ctx.Done()
	return ctx.Err()
}

// endingSandbox ends the run when the VM is destroyed.
type endingSandbox struct {
	sandbox.Sandbox
	done chan struct{}
	once sync.Once
}

func (s *endingSandbox) Destroy() error { s.once.Do(func() { close(s.done) }); return nil }

// Stop, kill and rm -f of a container whose guest does not answer return:
// every call to the guest has a deadline, and the VM is ended after it.
func TestStopKillRemoveOfASilentGuest(t *testing.T) {
	old := killGrace
	killGrace = 100 * time.Millisecond
	t.Cleanup(func() { killGrace = old })
	for _, op := range []string{"stop", "kill", "rm -f", "stop paused"} {
		s, _, tk := execFixture(t)
		tk.agent = &silentAgent{}
		tk.sb = &endingSandbox{done: tk.done}
		if op == "stop paused" {
			tk.paused.Store(true)
		}
		errc := make(chan error, 1)
		go func() {
			ctx := context.Background()
			switch op {
			case "stop", "stop paused":
				errc <- s.Stop(ctx, tk.c.ID, 0)
			case "kill":
				errc <- s.Kill(ctx, tk.c.ID, syscall.SIGKILL)
			case "rm -f":
				errc <- s.Remove(ctx, tk.c.ID, RemoveOptions{Force: true})
			}
		}()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("%s of a silent guest: %v", op, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s of a silent guest did not return", op)
		}
		select {
		case <-tk.done:
		default:
			t.Errorf("%s of a silent guest left its VM running", op)
		}
	}
}
