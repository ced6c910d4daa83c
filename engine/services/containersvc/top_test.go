package containersvc

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
)

func TestParsePsArgs(t *testing.T) {
	titles := func(cols []psColumn) string {
		var h []string
		for _, c := range cols {
			h = append(h, c.header)
		}
		return strings.Join(h, " ")
	}
	const (
		full    = "UID PID PPID C STIME TTY TIME CMD"
		user    = "USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND"
		bsd     = "PID TTY STAT TIME COMMAND"
		plain   = "PID TTY TIME CMD"
		pidComm = "PID COMMAND"
	)
	good := map[string]string{
		"": full, "-ef": full, "-e -f": full, "-f": full, "-Af": full, "-efw": full,
		"aux": user, "-aux": user, "au": user, "ux": user, "u": user,
		"ax": bsd, "-ax": bsd, "x": bsd, "axw": bsd,
		"-e": plain, "-A": plain,
		"-o pid,comm": pidComm, "-opid,comm": pidComm, "-eo pid,comm": pidComm, "o pid,comm": pidComm, "axo pid,comm": pidComm,
		"--format pid,comm": pidComm, "--format=pid,comm": pidComm, "-ef -o pid,comm": pidComm, "-o pid -o comm": pidComm,
		"-o PID,%cpu,%mem": "PID %CPU %MEM",
		"-o pid=P,comm":    "P,comm",
		"-o pid= -o args=": " ",
		"-o pid=,args=":    ",args=", // the rest of the list is the header, as in procps
		"-o user,uid,gid,etime,etimes,time,stime,start,tty,stat,s,vsz,rss,nlwp,c,ppid,args": "USER UID GID ELAPSED ELAPSED TIME STIME STARTED TT STAT S VSZ RSS NLWP C PPID COMMAND",
	}
	for args, want := range good {
		cols, err := parsePsArgs(args)
		if err != nil || titles(cols) != want {
			t.Errorf("parsePsArgs(%q) = %q, %v; want %q", args, titles(cols), err, want)
		}
	}
	for _, bad := range []string{"-l", "-eL", "-ef --forest", "f", "axf", "-o", "-o pid,nosuch", "-o ,", "--sort=pid", "-", "-p 1", "e"} {
		_, err := parsePsArgs(bad)
		if !errdefs.IsInvalidArgument(err) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "-o FORMAT") {
			t.Errorf("parsePsArgs(%q) = %v, want a one-line invalid argument naming what is supported", bad, err)
		}
	}
}

// topProcs are a container's processes at topNow: its init, a child, and
// an exec that became a zombie.
var (
	topNow   = time.Date(2024, 5, 6, 12, 0, 0, 0, time.Local)
	topProcs = []agent.ProcessInfo{
		// Listed out of the container's pid order.
		{Pid: 301, PPid: 300, ContainerPid: 7, ContainerPPid: 1, UID: 1000, GID: 100, State: 'S',
			StartTime: topNow.Add(-30 * time.Hour), CPUTime: 3*time.Hour + 25*time.Minute + 45*time.Second,
			Command: "busy", Args: []string{"busy", "--loop"}, Threads: 4, VSZ: 10 << 20, RSS: 2 << 20},
		{Pid: 300, PPid: 12, ContainerPid: 1, User: "root", State: 'S', StartTime: topNow.Add(-2 * time.Hour), CPUTime: 1200 * time.Millisecond,
			TTY: "pts/0", Command: "sh", Args: []string{"sh", "-c", "sleep 1000 & wait"}, Threads: 1, VSZ: 4 << 20, RSS: 1 << 20},
		{Pid: 320, PPid: 12, ContainerPid: 9, State: 'Z', StartTime: topNow.Add(-400 * 24 * time.Hour), Command: "true"},
	}
)

func TestRenderPs(t *testing.T) {
	render := func(args string) TopResult {
		cols, err := parsePsArgs(args)
		if err != nil {
			t.Fatal(err)
		}
		return renderPs(cols, topProcs, topNow, 100<<20)
	}
	yesterday := topNow.Add(-30 * time.Hour).Format("Jan02")
	lastYear := topNow.Add(-400 * 24 * time.Hour).Format("2006")
	want := TopResult{
		Titles: []string{"UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"},
		Processes: [][]string{
			{"root", "1", "0", "0", "10:00", "pts/0", "00:00:01", "sh -c sleep 1000 & wait"},
			// 12325 s of CPU in 30 h: 11 %.
			{"1000", "7", "1", "11", yesterday, "?", "03:25:45", "busy --loop"},
			{"0", "9", "0", "0", lastYear, "?", "00:00:00", "[true] <defunct>"},
		},
	}
	if got := render("-ef"); !reflect.DeepEqual(got, want) {
		t.Errorf("ps -ef =\n%q\nwant\n%q", got, want)
	}
	want = TopResult{
		Titles: []string{"USER", "PID", "%CPU", "%MEM", "VSZ", "RSS", "TTY", "STAT", "START", "TIME", "COMMAND"},
		Processes: [][]string{
			{"root", "1", "0.0", "1.0", "4096", "1024", "pts/0", "S", "10:00", "00:00:01", "sh -c sleep 1000 & wait"},
			{"1000", "7", "11.4", "2.0", "10240", "2048", "?", "Sl", yesterday, "03:25:45", "busy --loop"},
			{"0", "9", "0.0", "0.0", "0", "0", "?", "Z", lastYear, "00:00:00", "[true] <defunct>"},
		},
	}
	if got := render("aux"); !reflect.DeepEqual(got, want) {
		t.Errorf("ps aux =\n%q\nwant\n%q", got, want)
	}
	want = TopResult{Titles: []string{"PID", "COMMAND", "ELAPSED", "TT", "NLWP"}, Processes: [][]string{
		{"1", "sh", "02:00:00", "pts/0", "1"}, {"7", "busy", "1-06:00:00", "?", "4"}, {"9", "true <defunct>", "400-00:00:00", "?", "0"},
	}}
	if got := render("-o pid,comm,etime,tty,nlwp"); !reflect.DeepEqual(got, want) {
		t.Errorf("ps -o pid,comm,etime,tty,nlwp =\n%q\nwant\n%q", got, want)
	}
	if got := renderPs(psFullFormat, nil, topNow, 0); got.Processes == nil || len(got.Titles) != 8 {
		t.Errorf("ps of no processes = %#v, want the titles and an empty list", got)
	}
}

// topAgent answers ListProcesses and Stats for a running container.
type topAgent struct {
	guestAgent // nil: other calls are not expected
	procs      []agent.ProcessInfo
	stats      agent.Stats
	err        error
	calls      []string
}

func (a *topAgent) ListProcesses(_ context.Context, id string) ([]agent.ProcessInfo, error) {
	a.calls = append(a.calls, "ListProcesses "+id)
	return a.procs, a.err
}

func (a *topAgent) Stats(_ context.Context, id string) (agent.Stats, error) {
	a.calls = append(a.calls, "Stats "+id)
	return a.stats, a.err
}

func (a *topAgent) Close() error { return nil }

// topFixture is a service with a running container "run", whose agent is
// a topAgent, and a stopped one, "stopped".
func topFixture(t *testing.T) (*Service, *topAgent, *task) {
	t.Helper()
	store, err := containers.OpenStore(filepath.Join(t.TempDir(), "containers"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: store})
	run := &containers.Container{ID: containers.NewID(), Name: "run", State: containers.State{Status: containers.StatusRunning}}
	stopped := &containers.Container{ID: containers.NewID(), Name: "stopped", State: containers.State{Status: containers.StatusExited}}
	for _, c := range []*containers.Container{run, stopped} {
		if err := store.Create(c); err != nil {
			t.Fatal(err)
		}
	}
	fake := &topAgent{procs: topProcs, stats: agent.Stats{CPU: agent.CPUStats{UsageUsec: 5}, GuestMemory: 100 << 20}}
	tk := &task{svc: s, c: run, agent: fake, ready: make(chan struct{}), done: make(chan struct{})}
	tk.ctx, tk.cancel = context.WithCancel(context.Background())
	close(tk.ready)
	s.tasks[run.ID] = tk
	t.Cleanup(tk.cancel)
	return s, fake, tk
}

func TestTop(t *testing.T) {
	s, fake, tk := topFixture(t)
	ctx := context.Background()
	res, err := s.Top(ctx, "run", "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Titles, " ") != "UID PID PPID C STIME TTY TIME CMD" || len(res.Processes) != 3 || res.Processes[0][7] != "sh -c sleep 1000 & wait" {
		t.Errorf("Top with no ps args = %q, want ps -ef's table", res)
	}
	// %MEM is of the guest's RAM, which only Stats tells.
	if res, err := s.Top(ctx, "run", "aux"); err != nil || res.Processes[0][3] != "1.0" {
		t.Errorf("Top aux = %q, %v; want a %%MEM of 1.0", res, err)
	}
	if want := []string{"ListProcesses " + tk.c.ID, "ListProcesses " + tk.c.ID, "Stats " + tk.c.ID}; !reflect.DeepEqual(fake.calls, want) {
		t.Errorf("agent calls %q, want %q", fake.calls, want)
	}

	// As dockerd: an unknown container is not found, one that does not
	// run a conflict naming it, a bad option bad input.
	if _, err := s.Top(ctx, "nosuch", ""); !errdefs.IsNotFound(err) {
		t.Errorf("Top of an unknown container = %v, want not found", err)
	}
	stopped, _ := s.Get("stopped")
	if _, err := s.Top(ctx, "stopped", ""); !errdefs.IsConflict(err) || err.Error() != "Container "+stopped.ID+" is not running" {
		t.Errorf("Top of a stopped container = %v, want dockerd's conflict", err)
	}
	if _, err := s.Top(ctx, "run", "-l"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Top -l = %v, want invalid argument", err)
	}
	// A guest that fails is the error; one whose run ended meanwhile is a
	// container that does not run.
	fake.err = errors.New("agent on fire")
	if _, err := s.Top(ctx, "run", ""); err == nil || !strings.Contains(err.Error(), "agent on fire") || !strings.Contains(err.Error(), "run") {
		t.Errorf("Top with a failing guest = %v", err)
	}
	close(tk.done)
	if _, err := s.Top(ctx, "run", ""); !errdefs.IsConflict(err) {
		t.Errorf("Top of a run that ended meanwhile = %v, want a conflict", err)
	}
}

func TestStatsSample(t *testing.T) {
	s, fake, tk := topFixture(t)
	ctx := context.Background()
	got, err := s.Stats(ctx, "run")
	if err != nil || !got.Running || got.Name != "run" || got.ID != tk.c.ID || got.Stats.CPU.UsageUsec != 5 {
		t.Errorf("Stats of a running container = %+v, %v", got, err)
	}
	// A container that does not run has a zero sample, as dockerd sends.
	stopped, _ := s.Get("stopped")
	if got, err := s.Stats(ctx, "stopped"); err != nil || got.Running || got.ID != stopped.ID || got.Name != "stopped" ||
		!reflect.DeepEqual(got.Stats, ResourceStats{}) {
		t.Errorf("Stats of a stopped container = %+v, %v; want a zero sample with its name", got, err)
	}
	if _, err := s.Stats(ctx, "nosuch"); !errdefs.IsNotFound(err) {
		t.Errorf("Stats of an unknown container = %v, want not found", err)
	}
	fake.err = errors.New("agent on fire")
	if _, err := s.Stats(ctx, "run"); err == nil || !strings.Contains(err.Error(), "agent on fire") {
		t.Errorf("Stats with a failing guest = %v", err)
	}
	close(tk.done)
	if got, err := s.Stats(ctx, "run"); err != nil || got.Running {
		t.Errorf("Stats of a run that ended meanwhile = %+v, %v; want a zero sample", got, err)
	}
}
