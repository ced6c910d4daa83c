package containersvc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/agent/agenttest"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// hostileSlack is how long past the engine's own bounds (the caller's
// deadline, killGrace, the boot timeout) an operation may take before the
// test calls it hung.
const hostileSlack = 5 * time.Second

// hostileFixture is a service whose VMs' agents are hostile
// (agenttest.Agent), reached through the engine's own agent client over a
// unix socket, as a sandbox driver hands it the channel.
type hostileFixture struct {
	*bootFixture
	mode agenttest.Mode
	per  map[string]agenttest.Mode

	mu     sync.Mutex
	seed   uint64
	agents []*agenttest.Agent // guarded by mu
}

// bootValid lets a VM boot and its container start: the calls before the
// run answer as an agent should.
var bootValid = map[string]agenttest.Mode{
	"Health": agenttest.Valid, "ConfigureNetwork": agenttest.Valid,
	"CreateContainer": agenttest.Valid, "StartContainer": agenttest.Valid,
}

// with is bootValid (or nothing) and more.
func with(base map[string]agenttest.Mode, more map[string]agenttest.Mode) map[string]agenttest.Mode {
	m := map[string]agenttest.Mode{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range more {
		m[k] = v
	}
	return m
}

func newHostileFixture(t *testing.T, mode agenttest.Mode, per map[string]agenttest.Mode) *hostileFixture {
	t.Helper()
	f := &hostileFixture{bootFixture: newBootFixture(t), mode: mode, per: per}
	f.svc.newAgent = func(conn net.Conn) guestAgent { return agent.New(conn) }
	f.svc.cfg.OpenDriver = func(sandbox.Choice) (sandbox.Driver, error) { return hostileDriver{f}, nil }
	f.svc.cfg.BootTimeout = 100 * time.Millisecond
	old := killGrace
	killGrace = 100 * time.Millisecond
	t.Cleanup(func() {
		killGrace = old
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, a := range f.agents {
			a.Close()
		}
	})
	return f
}

type hostileDriver struct{ f *hostileFixture }

func (hostileDriver) Name() string { return "qemu" }

func (d hostileDriver) Start(context.Context, sandbox.Config) (sandbox.Sandbox, error) {
	return &hostileSandbox{bootSandbox: &bootSandbox{ended: make(chan struct{})}, f: d.f}, nil
}

// hostileSandbox is a VM whose agent is a hostile one; the agent goes
// with the VM.
type hostileSandbox struct {
	*bootSandbox
	f *hostileFixture

	mu    sync.Mutex
	agent *agenttest.Agent // guarded by mu
}

func (s *hostileSandbox) DialAgent(context.Context) (net.Conn, error) {
	f := s.f
	f.mu.Lock()
	f.seed++
	seed := f.seed
	f.mu.Unlock()
	a, err := agenttest.Start(f.mode, f.per, seed)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.agents = append(f.agents, a)
	f.mu.Unlock()
	s.mu.Lock()
	s.agent = a
	s.mu.Unlock()
	return a.Conn(), nil
}

func (s *hostileSandbox) Destroy() error {
	s.bootSandbox.Destroy()
	s.mu.Lock()
	a := s.agent
	s.mu.Unlock()
	if a != nil {
		a.Close()
	}
	return nil
}

func (s *hostileSandbox) Stop(context.Context) error { return s.Destroy() }

// within runs op and fails the test if it has not returned bound plus
// hostileSlack later.
func within(t *testing.T, what string, bound time.Duration, op func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		if err != nil && (strings.Contains(err.Error(), "\n") || len(err.Error()) > 4096) {
			t.Errorf("%s failed with %d bytes over %d lines, want one short line: %.200q",
				what, len(err.Error()), strings.Count(err.Error(), "\n")+1, err.Error())
		}
		return err
	case <-time.After(bound + hostileSlack):
		t.Fatalf("%s did not return %s after its bound of %s", what, hostileSlack, bound)
		return nil
	}
}

// checkRecord fails the test unless the container's record is what the
// engine may show: an exit code a process can have, a one-line error.
func checkRecord(t *testing.T, f *hostileFixture, id string) {
	t.Helper()
	c, err := f.svc.Get(id)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	st := c.State
	if st.ExitCode < 0 || st.ExitCode > 255 || strings.Contains(st.Error, "\n") || len(st.Error) > 4096 {
		t.Errorf("record after a hostile guest: exit code %d, error of %d bytes %.200q", st.ExitCode, len(st.Error), st.Error)
	}
}

// hostGoroutines counts the goroutines that are not a hostile agent's
// (none of their frames is agenttest's).
func hostGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "/engine/agent/agenttest.") {
			count++
		}
	}
	return count
}

// TestHostileGuestBoot starts containers whose agent answers garbage, huge
// answers, nothing, or too late from the first call: every start ends
// within the boot timeout, a container that did start is stopped, and
// the records stay readable.
func TestHostileGuestBoot(t *testing.T) {
	const boots = 5
	for _, mode := range []agenttest.Mode{agenttest.Garbage, agenttest.Huge, agenttest.Silent, agenttest.Late} {
		t.Run(mode.String(), func(t *testing.T) {
			base := runtime.NumGoroutine()
			f := newHostileFixture(t, mode, nil)
			for i := range boots {
				c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: fmt.Sprintf("boot%d", i)})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err = within(t, "start", f.svc.cfg.BootTimeout, func() error { return f.svc.Start(ctx, c.ID, Stdio{}) })
				cancel()
				if err == nil && mode == agenttest.Silent {
					t.Errorf("start succeeded with a guest that never answers")
				}
				if err == nil {
					within(t, "stop", 4*killGrace, func() error { return f.svc.Stop(context.Background(), c.ID, 0) })
				}
				checkRecord(t, f, c.ID)
				within(t, "rm -f", 4*killGrace, func() error { return f.svc.Remove(context.Background(), c.ID, RemoveOptions{Force: true}) })
			}
			f.mu.Lock()
			agents := len(f.agents)
			f.mu.Unlock()
			if agents != boots {
				t.Errorf("%d VMs had their agent called, want %d", agents, boots)
			}
			agenttest.SettleGoroutines(t, base, hostileSlack)
		})
	}
}

// TestHostileGuestRun runs a container whose agent boots it as it should,
// then answers every other call with garbage, huge answers, nothing, or
// too late: exec, pause, resize, the file calls (stat, cp out, cp in,
// export), top, stats, logs, stop and rm -f all return within their bounds, the
// container's record stays what Docker can show, and nothing of the run
// stays behind.
func TestHostileGuestRun(t *testing.T) {
	tests := []struct {
		name string
		mode agenttest.Mode
		per  map[string]agenttest.Mode
		// rounds: answers drawn at random get more; each round of
		// silence takes its deadlines.
		rounds int
	}{
		// The container's process never ends: the other calls meet a
		// running container.
		{"garbage", agenttest.Garbage, with(bootValid, map[string]agenttest.Mode{"WaitProcess": agenttest.Silent}), 5},
		{"huge", agenttest.Huge, with(bootValid, map[string]agenttest.Mode{"WaitProcess": agenttest.Silent}), 2},
		{"silent", agenttest.Silent, bootValid, 1},
		{"late", agenttest.Late, bootValid, 1},
		// An exec starts, and its end (or its kill) never comes.
		{"exec never ends", agenttest.Silent, with(bootValid, map[string]agenttest.Mode{"ExecProcess": agenttest.Valid}), 1},
		// The container's own wait is hostile too.
		{"garbage exit", agenttest.Garbage, bootValid, 5},
		{"huge exit", agenttest.Huge, bootValid, 2},
	}
	const deadline = 100 * time.Millisecond
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			f := newHostileFixture(t, tt.mode, tt.per)
			for round := range tt.rounds {
				c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: fmt.Sprintf("run%d", round), OpenStdin: true})
				if err != nil {
					t.Fatal(err)
				}
				var out lockedBuffer
				a, err := f.svc.Attach(c.ID, AttachOptions{Stdin: strings.NewReader("input\n"), Stdout: &out, Stderr: &out})
				if err != nil {
					t.Fatal(err)
				}
				if err := within(t, "start", f.svc.cfg.BootTimeout, func() error { return f.svc.Start(context.Background(), c.ID, Stdio{}) }); err != nil {
					t.Fatalf("start with a guest that boots as it should: %v", err)
				}
				call := func(what string, op func(ctx context.Context) error) {
					t.Helper()
					ctx, cancel := context.WithTimeout(context.Background(), deadline)
					defer cancel()
					within(t, what, deadline, func() error { return op(ctx) })
				}
				call("exec", func(ctx context.Context) error {
					id, err := f.svc.ExecCreate(c.ID, ExecOptions{Cmd: []string{"ls"}, AttachStdout: true, AttachStderr: true})
					if err != nil {
						return err
					}
					err = f.svc.ExecStart(ctx, id, Stdio{Stdout: &out, Stderr: &out}, false)
					if info, ierr := f.svc.ExecInspect(id); ierr == nil && info.ExitCode != nil && (*info.ExitCode < 0 || *info.ExitCode > 255) {
						t.Errorf("exec inspect: exit code %d", *info.ExitCode)
					}
					return err
				})
				call("pause", func(ctx context.Context) error {
					if err := f.svc.Pause(ctx, c.ID); err != nil {
						return err
					}
					return f.svc.Unpause(ctx, c.ID)
				})
				call("resize", func(ctx context.Context) error { return f.svc.Resize(ctx, c.ID, 24, 80) })
				call("kill -HUP", func(ctx context.Context) error { return f.svc.Kill(ctx, c.ID, syscall.SIGHUP) })
				call("stat", func(ctx context.Context) error {
					st, err := f.svc.StatPath(ctx, c.ID, "/etc")
					if err == nil && (st.Name == "" || len(st.Name) > 255 || st.Size < 0) {
						t.Errorf("stat: %+v", st)
					}
					return err
				})
				call("cp out", func(ctx context.Context) error {
					return f.svc.ArchivePath(ctx, c.ID, "/etc", func(PathStat) io.Writer { return io.Discard })
				})
				call("cp in", func(ctx context.Context) error {
					return f.svc.CopyIn(ctx, c.ID, "/tmp", bytes.NewReader(make([]byte, 3<<19)), false, false)
				})
				call("export", func(ctx context.Context) error {
					_, err := f.svc.ExportChanges(ctx, c.ID, false, io.Discard, 1<<20)
					return err
				})
				call("top", func(ctx context.Context) error {
					res, err := f.svc.Top(ctx, c.ID, "aux")
					for _, row := range res.Processes {
						if len(row) != len(res.Titles) {
							t.Errorf("top: a row of %d columns under %d titles", len(row), len(res.Titles))
						}
					}
					return err
				})
				call("stats", func(ctx context.Context) error {
					sample, err := f.svc.Stats(ctx, c.ID)
					if err == nil && sample.Running && (len(sample.Stats.Memory.Stat) > 128 || len(sample.Stats.Networks) > 64) {
						t.Errorf("stats: %d memory.stat keys, %d interfaces", len(sample.Stats.Memory.Stat), len(sample.Stats.Networks))
					}
					return err
				})
				call("logs", func(ctx context.Context) error {
					return f.svc.Logs(ctx, c.ID, LogsOptions{Stdout: true, Stderr: true, Tail: -1}, func(LogEntry) error { return nil })
				})
				within(t, "stop", 4*killGrace, func() error { return f.svc.Stop(context.Background(), c.ID, 0) })
				within(t, "wait", 0, func() error {
					_, err := f.svc.Wait(context.Background(), c.ID)
					return err
				})
				select {
				case <-a.Done():
				case <-time.After(hostileSlack):
					t.Errorf("the attached client was not released after the run ended")
				}
				checkRecord(t, f, c.ID)
				within(t, "rm -f", 4*killGrace, func() error { return f.svc.Remove(context.Background(), c.ID, RemoveOptions{Force: true}) })
			}
			agenttest.SettleGoroutines(t, base, hostileSlack)
		})
	}
}

// A health check whose probe the guest starts but never reports the end
// of (nor the kill of) times out, as a probe the guest does not start
// does: the container turns unhealthy, and the probes' calls do not pile
// up for the rest of the run.
func TestHealthOfAGuestThatNeverEndsAProbe(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newHostileFixture(t, agenttest.Silent, with(bootValid, map[string]agenttest.Mode{
		"ExecProcess": agenttest.Valid, "CloseStdin": agenttest.Valid, "SignalProcess": agenttest.Valid,
	}))
	hc := &containers.Healthcheck{Test: []string{"CMD", "true"}, Interval: time.Millisecond, Timeout: 20 * time.Millisecond, Retries: 2}
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "probed", Healthcheck: hc})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Start(context.Background(), c.ID, Stdio{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hostileSlack + 10*killGrace)
	for {
		rec, err := f.svc.Get(c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if h := rec.State.Health; h != nil && h.Status == containers.HealthUnhealthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health after probes the guest never ended: %+v, want unhealthy", rec.State.Health)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Ten more probes: what each started on the host must be gone after
	// it. (The silent agent keeps a goroutine for each call it never
	// answers; those are the guest's.)
	mid := hostGoroutines()
	time.Sleep(10 * (2*killGrace + hc.Timeout))
	if n := hostGoroutines(); n > mid+10 {
		t.Errorf("%d goroutines of the host after more probes, %d before: each probe leaves some behind", n, mid)
	}
	within(t, "rm -f", 4*killGrace, func() error { return f.svc.Remove(context.Background(), c.ID, RemoveOptions{Force: true}) })
	agenttest.SettleGoroutines(t, base, hostileSlack)
}
