package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode"

	clog "github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent/agenttest"
)

// hangSlack is how long past its deadline a call may take before the test
// calls it hung: far more than any scheduling delay, far less than never.
const hangSlack = 5 * time.Second

// testStall is the write stall limit of the tests' clients: a guest that
// does not read fails a call in a test as it does in a daemon, sooner.
const testStall = 200 * time.Millisecond

// hostileLimit is the limit the tests give exports and copies out.
const hostileLimit = 8 << 20

// hostileCall is one Client method with the arguments a run gives it. It
// returns the method's error, or a description of what reached the
// caller that the API does not allow.
type hostileCall struct {
	name string
	call func(ctx context.Context, c *Client) (violation string, err error)
}

var hostileProc = Process{ContainerID: "c1", ExecID: "e1"}

func checkText(what, s string) string {
	if len(s) > maxMessage+len("...") {
		return fmt.Sprintf("%s of %d bytes", what, len(s))
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return fmt.Sprintf("%s %.40q has control characters", what, s)
	}
	return ""
}

func checkStat(st PathStat) string {
	switch {
	case st.Name == "" || len(st.Name) > maxNameLen || strings.ContainsRune(st.Name, 0) || (st.Name != "/" && strings.Contains(st.Name, "/")):
		return fmt.Sprintf("a path stat named %.40q (%d bytes)", st.Name, len(st.Name))
	case len(st.LinkTarget) > maxPathLen || strings.ContainsRune(st.LinkTarget, 0):
		return fmt.Sprintf("a link target %.40q (%d bytes)", st.LinkTarget, len(st.LinkTarget))
	case st.Size < 0:
		return fmt.Sprintf("a size of %d", st.Size)
	}
	return ""
}

// checkProcesses describes what of a process list the contract does not
// allow.
func checkProcesses(procs []ProcessInfo) string {
	if len(procs) > contract.MaxListedProcesses {
		return fmt.Sprintf("%d processes", len(procs))
	}
	for _, p := range procs {
		n := 0
		for _, a := range p.Args {
			n += len(a)
			if v := checkText("an argument", a); v != "" {
				return v
			}
		}
		switch {
		case p.Pid <= 0:
			return fmt.Sprintf("a process with pid %d", p.Pid)
		case len(p.Args) > contract.MaxProcessArgs || n > contract.MaxProcessArgsBytes:
			return fmt.Sprintf("process %d with %d arguments of %d bytes", p.Pid, len(p.Args), n)
		case !strings.ContainsRune(processStates, rune(p.State)):
			return fmt.Sprintf("process %d in state %q", p.Pid, p.State)
		case p.CPUTime < 0:
			return fmt.Sprintf("process %d with %s of CPU time", p.Pid, p.CPUTime)
		}
		for _, s := range []string{p.Command, p.User, p.TTY} {
			if len(s) > contract.MaxProcessNameLen {
				return fmt.Sprintf("process %d with a name of %d bytes", p.Pid, len(s))
			}
			if v := checkText("a name", s); v != "" {
				return v
			}
		}
	}
	return ""
}

// checkStats describes what of a sample the contract does not allow.
func checkStats(st Stats) string {
	switch {
	case len(st.Memory.Stat) > contract.MaxMemoryStatKeys || len(st.Memory.Events) > contract.MaxMemoryStatKeys:
		return fmt.Sprintf("a memory.stat of %d keys and events of %d", len(st.Memory.Stat), len(st.Memory.Events))
	case len(st.IO) > contract.MaxIODevices || len(st.Networks) > contract.MaxNetworkInterfaces:
		return fmt.Sprintf("%d devices and %d interfaces", len(st.IO), len(st.Networks))
	case st.OnlineCPUs < 0 || st.OnlineCPUs > maxOnlineCPUs || st.SystemCPU < 0:
		return fmt.Sprintf("%d CPUs, %s of CPU time", st.OnlineCPUs, st.SystemCPU)
	}
	for k := range st.Memory.Stat {
		if !validKeys(map[string]uint64{k: 0}) {
			return fmt.Sprintf("a memory.stat key %.40q", k)
		}
	}
	for _, n := range st.Networks {
		if n.Name == "" || len(n.Name) > maxInterfaceName || checkText("an interface name", n.Name) != "" {
			return fmt.Sprintf("an interface named %.40q", n.Name)
		}
	}
	return ""
}

// countingWriter counts what a copy out wrote.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

var hostileCalls = []hostileCall{
	{"Health", func(ctx context.Context, c *Client) (string, error) {
		h, err := c.Health(ctx)
		for _, s := range []string{checkText("agent version", h.AgentVersion), checkText("kernel release", h.KernelRelease), checkText("transport", h.Transport)} {
			if s != "" {
				return s, err
			}
		}
		return "", err
	}},
	{"ConfigureNetwork", func(ctx context.Context, c *Client) (string, error) {
		return "", c.ConfigureNetwork(ctx, []Interface{{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Name: "eth0",
			Addresses: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/16")}}}, []Route{{Gateway: netip.MustParseAddr("172.30.0.1")}})
	}},
	{"Restored", func(ctx context.Context, c *Client) (string, error) {
		return "", c.Restored(ctx, map[string]net.HardwareAddr{"02:76:6d:74:00:00": {2, 0, 0, 0, 0, 1}})
	}},
	{"CreateContainer", func(ctx context.Context, c *Client) (string, error) {
		return "", c.CreateContainer(ctx, "c1", &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}}, []Storage{{Serial: "img", Role: "image"}}, ContainerNetwork{})
	}},
	{"StartContainer", func(ctx context.Context, c *Client) (string, error) { return "", c.StartContainer(ctx, "c1") }},
	{"PauseContainer", func(ctx context.Context, c *Client) (string, error) { return "", c.PauseContainer(ctx, "c1") }},
	{"ResumeContainer", func(ctx context.Context, c *Client) (string, error) { return "", c.ResumeContainer(ctx, "c1") }},
	{"ExecProcess", func(ctx context.Context, c *Client) (string, error) {
		return "", c.ExecProcess(ctx, hostileProc, &specs.Process{Args: []string{"ls"}, Cwd: "/"})
	}},
	{"WaitProcess", func(ctx context.Context, c *Client) (string, error) {
		e, err := c.WaitProcess(ctx, hostileProc)
		if e.Status < 0 || e.Status > maxExitStatus {
			return fmt.Sprintf("exit status %d", e.Status), err
		}
		return "", err
	}},
	{"SignalProcess", func(ctx context.Context, c *Client) (string, error) {
		return "", c.SignalProcess(ctx, hostileProc, syscall.SIGTERM)
	}},
	{"WriteStdin", func(ctx context.Context, c *Client) (string, error) {
		n, err := c.WriteStdin(ctx, hostileProc, []byte("hello"))
		if n < 0 || n > 5 {
			return fmt.Sprintf("%d bytes written of 5", n), err
		}
		return "", err
	}},
	{"CloseStdin", func(ctx context.Context, c *Client) (string, error) { return "", c.CloseStdin(ctx, hostileProc) }},
	{"ReadStdout", func(ctx context.Context, c *Client) (string, error) {
		o, err := c.ReadStdout(ctx, hostileProc, 32<<10, 100)
		if len(o.Data) > 32<<10 {
			return fmt.Sprintf("%d bytes read of at most %d", len(o.Data), 32<<10), err
		}
		return "", err
	}},
	{"ReadStderr", func(ctx context.Context, c *Client) (string, error) {
		o, err := c.ReadStderr(ctx, hostileProc, 1, 0)
		if len(o.Data) > 1 {
			return fmt.Sprintf("%d bytes read of at most 1", len(o.Data)), err
		}
		return "", err
	}},
	{"ResizeTty", func(ctx context.Context, c *Client) (string, error) { return "", c.ResizeTty(ctx, hostileProc, 24, 80) }},
	{"ExportChanges", func(ctx context.Context, c *Client) (string, error) {
		var w countingWriter
		n, err := c.ExportChanges(ctx, "c1", true, &w, hostileLimit)
		if w.n > hostileLimit || n < 0 {
			return fmt.Sprintf("an export of %d bytes, %d entries (limit %d)", w.n, n, hostileLimit), err
		}
		return "", err
	}},
	{"StatPath", func(ctx context.Context, c *Client) (string, error) {
		st, err := c.StatPath(ctx, "c1", "/etc/passwd")
		if err != nil {
			return "", err
		}
		return checkStat(st), nil
	}},
	{"ArchivePath", func(ctx context.Context, c *Client) (string, error) {
		var w countingWriter
		st, err := c.ArchivePath(ctx, "c1", "/etc", &w, hostileLimit)
		if w.n > hostileLimit {
			return fmt.Sprintf("an archive of %d bytes (limit %d)", w.n, hostileLimit), err
		}
		if err != nil {
			return "", err
		}
		return checkStat(st), nil
	}},
	{"CopyIn", func(ctx context.Context, c *Client) (string, error) {
		return "", c.CopyIn(ctx, "c1", "/tmp", bytes.NewReader(make([]byte, 5<<19)), false, false)
	}},
	{"ListProcesses", func(ctx context.Context, c *Client) (string, error) {
		procs, err := c.ListProcesses(ctx, "c1")
		return checkProcesses(procs), err
	}},
	{"Stats", func(ctx context.Context, c *Client) (string, error) {
		st, err := c.Stats(ctx, "c1")
		return checkStats(st), err
	}},
	{"RemoveContainer", func(ctx context.Context, c *Client) (string, error) { return "", c.RemoveContainer(ctx, "c1") }},
	{"Shutdown", func(ctx context.Context, c *Client) (string, error) { return "", c.Shutdown(ctx) }},
}

// callHostile runs every call rounds times, each with deadline, and fails
// the test for a call that hangs past it, a value the API does not allow,
// or an error that is not one short line. It returns how many calls
// failed.
func callHostile(t *testing.T, c *Client, deadline time.Duration, rounds int) (failed int) {
	t.Helper()
	type result struct {
		violation string
		err       error
	}
	for round := range rounds {
		for _, hc := range hostileCalls {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			done := make(chan result, 1)
			start := time.Now()
			go func() {
				v, err := hc.call(ctx, c)
				done <- result{v, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(deadline + hangSlack):
				cancel()
				t.Fatalf("round %d: %s did not return %s after its deadline of %s", round, hc.name, hangSlack, deadline)
			}
			cancel()
			if took := time.Since(start); took > deadline+hangSlack/2 {
				t.Errorf("round %d: %s took %s with a deadline of %s", round, hc.name, took, deadline)
			}
			if res.violation != "" {
				t.Errorf("round %d: %s gave the caller %s", round, hc.name, res.violation)
			}
			if err := res.err; err != nil {
				failed++
				if msg := err.Error(); strings.Contains(msg, "\n") || len(msg) > 4096 {
					t.Errorf("round %d: %s failed with %d bytes of text over %d lines, want one short line: %.200q",
						round, hc.name, len(msg), strings.Count(msg, "\n")+1, msg)
				}
			}
		}
	}
	return failed
}

// TestHostileAgent drives every client method against an agent that
// answers each call with garbage, with the largest answers ttrpc carries,
// never, or after the caller's deadline: every call returns by its
// deadline, nothing the API forbids reaches the caller, and nothing stays
// behind once the connection is closed.
func TestHostileAgent(t *testing.T) {
	tests := []struct {
		mode     agenttest.Mode
		deadline time.Duration
		rounds   int
	}{
		{agenttest.Garbage, 5 * time.Second, 30},
		{agenttest.Huge, 5 * time.Second, 1},
		{agenttest.Silent, 50 * time.Millisecond, 1},
		{agenttest.Late, 50 * time.Millisecond, 1},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			base := runtime.NumGoroutine()
			a, err := agenttest.Start(tt.mode, nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			c := New(a.Conn())
			failed := callHostile(t, c, tt.deadline, tt.rounds)
			if tt.mode == agenttest.Silent && failed != tt.rounds*len(hostileCalls) {
				t.Errorf("%d of %d calls failed; every one should", failed, tt.rounds*len(hostileCalls))
			}
			c.Close()
			a.Close()
			agenttest.SettleGoroutines(t, base, 5*time.Second)
		})
	}
}

// TestHostilePeer drives every client method against a peer that breaks
// ttrpc's framing, or never reads: calls fail by their deadline, and the
// connection's goroutines end with it.
func TestHostilePeer(t *testing.T) {
	for _, kind := range agenttest.RawKinds {
		t.Run(kind.String(), func(t *testing.T) {
			base := runtime.NumGoroutine()
			r, err := agenttest.StartRaw(kind, 1)
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(r.Conn(), testStall)
			callHostile(t, c, 50*time.Millisecond, 2)
			c.Close()
			r.Close()
			agenttest.SettleGoroutines(t, base, 5*time.Second)
		})
	}
}

// A guest that answers an export but never its drop must not hold the
// caller past its deadline: the drop is bounded too.
func TestSilentDropExport(t *testing.T) {
	for _, call := range []string{"ExportChanges", "ArchivePath"} {
		t.Run(call, func(t *testing.T) {
			a, err := agenttest.Start(agenttest.Valid, map[string]agenttest.Mode{"DropExport": agenttest.Silent}, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			c := New(a.Conn())
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				var err error
				if call == "ExportChanges" {
					_, err = c.ExportChanges(ctx, "c1", false, io.Discard, hostileLimit)
				} else {
					_, err = c.ArchivePath(ctx, "c1", "/etc", io.Discard, hostileLimit)
				}
				done <- err
			}()
			select {
			case <-done:
			case <-time.After(hangSlack):
				t.Fatalf("%s with a silent DropExport did not return %s after its deadline", call, hangSlack)
			}
			if a.Calls("DropExport") != 1 {
				t.Errorf("DropExport called %d times, want 1", a.Calls("DropExport"))
			}
		})
	}
}

// A guest that stops reading must not hold a call past its deadline, even
// one whose request does not fit in the socket's buffer.
func TestDeafPeer(t *testing.T) {
	r, err := agenttest.StartRaw(agenttest.Deaf, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := newClient(r.Conn(), testStall)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.CopyIn(ctx, "c1", "/tmp", bytes.NewReader(make([]byte, 4<<20)), false, false) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("CopyIn to a guest that does not read succeeded")
		}
	case <-time.After(hangSlack):
		t.Fatalf("CopyIn to a guest that does not read did not return %s after its deadline", hangSlack)
	}
	// The connection is unusable (a request may be cut short in it): the
	// calls after fail at once.
	start := time.Now()
	if err := c.StartContainer(context.Background(), "c1"); err == nil || time.Since(start) > hangSlack/2 {
		t.Errorf("StartContainer after a stalled write = %v after %s, want a failure at once", err, time.Since(start))
	}
}

// A peer that breaks ttrpc's framing, or answers what nobody asked, has
// its connection closed: the calls fail with ErrBadAnswer, naming what it
// did, instead of each waiting for its deadline (a frame announcing 4 GiB
// holds ttrpc's reader for as long as the bytes come).
func TestPeerBreakingFraming(t *testing.T) {
	tests := []struct {
		kind agenttest.RawKind
		want string
	}{
		{agenttest.Endless, "a frame of 4294967295 bytes"},
		{agenttest.Oversized, "a frame of 4194305 bytes"},
		{agenttest.WrongType, "not an answer"},
		{agenttest.Unsolicited, "answers to calls not awaiting one"},
		{agenttest.Duplicates, "answers to calls not awaiting one"},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			r, err := agenttest.StartRaw(tt.kind, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			c := New(r.Conn())
			defer c.Close()
			// Duplicates answers each call a hundred times: the eleventh
			// call is past maxUnsolicited.
			for i := range maxUnsolicited/100 + 2 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err = c.StartContainer(ctx, "c1")
				cancel()
				if err != nil {
					break
				}
				if i > maxUnsolicited/100 {
					t.Fatalf("call %d succeeded, want the connection closed", i)
				}
			}
			if !errors.Is(err, ErrBadAnswer) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("StartContainer = %v, want ErrBadAnswer saying %q", err, tt.want)
			}
			// Every call after fails at once, with the reason.
			if err := c.StartContainer(context.Background(), "c1"); !errors.Is(err, ErrBadAnswer) {
				t.Errorf("StartContainer after the connection was closed = %v, want ErrBadAnswer", err)
			}
		})
	}
}

// ttrpc logs every answer to a stream it does not know, one line each: a
// guest flooding the channel with them must not flood the host's log.
func TestUnsolicitedAnswersAreNotLogged(t *testing.T) {
	var logged bytes.Buffer
	logger := clog.L.Logger
	out := logger.Out
	logger.SetOutput(&lockedWriter{w: &logged})
	defer logger.SetOutput(out)

	r, err := agenttest.StartRaw(agenttest.Unsolicited, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := New(r.Conn())
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		c.StartContainer(ctx, "c1")
		cancel()
	}
	c.Close()
	r.Close()
	if r.Sent() < agenttest.UnsolicitedPerRequest*10 {
		t.Fatalf("the peer sent %d bytes, not a flood", r.Sent())
	}
	if n := logged.Len(); n > 4096 {
		t.Errorf("a flood of %d bytes of unsolicited answers logged %d bytes, starting %.300q", r.Sent(), n, logged.String())
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// heapInUse is the heap in use after collecting everything collectable
// (twice: sync.Pool keeps its objects for one collection).
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Rounds of the largest answers ttrpc carries leave the client no larger
// than one round does: nothing of them is kept.
func TestHugeAnswersDoNotGrowTheClient(t *testing.T) {
	a, err := agenttest.Start(agenttest.Huge, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := New(a.Conn())
	defer c.Close()
	round := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), hangSlack)
		defer cancel()
		if _, err := c.ReadStdout(ctx, hostileProc, 32<<10, 0); !errors.Is(err, ErrBadAnswer) {
			t.Fatalf("ReadStdout of a 4 MiB answer = %v, want ErrBadAnswer", err)
		}
		if i%8 != 0 {
			return
		}
		// The other shapes of huge answers are slower to make and read
		// (a million fields, megabytes of text): fewer of them.
		if _, err := c.StatPath(ctx, "c1", "/"); !errors.Is(err, ErrBadAnswer) {
			t.Fatalf("StatPath of a 2 MiB name = %v, want ErrBadAnswer", err)
		}
		if h, err := c.Health(ctx); err != nil || len(h.AgentVersion) > maxMessage+3 {
			t.Fatalf("Health of 1 MiB strings = %d bytes, %v; want it cut", len(h.AgentVersion), err)
		}
		if _, err := c.WaitProcess(ctx, hostileProc); !errors.Is(err, ErrBadAnswer) {
			t.Fatalf("WaitProcess with a million fields = %v, want ErrBadAnswer", err)
		}
	}
	round(0)
	before := heapInUse()
	const rounds = 32 // 128 MiB of answers
	for i := range rounds {
		round(i + 1)
	}
	after := heapInUse()
	t.Logf("heap in use: %d KiB after one round, %d KiB after %d more", before>>10, after>>10, rounds)
	if after > before+16<<20 {
		t.Errorf("the heap grew from %d to %d KiB in %d rounds of huge answers", before>>10, after>>10, rounds)
	}
}

// Every call that does not wait by design has a deadline of its own: with
// no deadline from its caller, a silent guest still fails it.
func TestCallsHaveDeadlines(t *testing.T) {
	waitByDesign := map[string]bool{"WaitProcess": true, "ReadStdout": true, "ReadStderr": true, "WriteStdin": true}
	defer func(c, h, b, q time.Duration) { callTimeout, healthTimeout, bulkTimeout, queryTimeout = c, h, b, q }(callTimeout, healthTimeout, bulkTimeout, queryTimeout)
	callTimeout, healthTimeout, bulkTimeout, queryTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	a, err := agenttest.Start(agenttest.Silent, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := New(a.Conn())
	defer c.Close()
	for _, call := range hostileCalls {
		if waitByDesign[call.name] {
			continue
		}
		done := make(chan error, 1)
		go func() {
			_, err := call.call(context.Background(), c)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s against a silent guest succeeded", call.name)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s without a deadline of its caller still waits for a silent guest after 5 s", call.name)
		}
	}
}
