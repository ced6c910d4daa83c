package tests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// subsequence reports whether want appears in got in order, other lines
// allowed in between.
func subsequence(got []string, want ...string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// vmctld reports container events to the real docker CLI (replayed with
// --since/--until, filtered, and live), docker ps --filter selects what
// dockerd would, vmctl ps --format prints docker's fields, and the records
// survive a kill -9 of the daemon.
func TestDaemonEventsAndFilters(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	t.Cleanup(func() {
		if t.Failed() {
			d.docker(t, "", "rm", "-f", "evexit")
		}
	})
	since := time.Now().Add(-time.Second).Unix()
	d.mustDocker(t, 0, "", "run", "--rm", "--name", "evrm", "busybox", "true")
	d.mustDocker(t, 3, "", "run", "--name", "evexit", "--label", "suite=events", "busybox", "sh", "-c", "exit 3")
	until := time.Now().Add(time.Second).Unix()

	// Replay: the whole life of the --rm container, in order.
	r := d.mustDocker(t, 0, "", "events", "--since", fmt.Sprint(since), "--until", fmt.Sprint(until),
		"--filter", "container=evrm", "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if !subsequence(lines, "container create evrm", "container start evrm", "container die evrm", "container destroy evrm") {
		t.Errorf("docker events for evrm:\n%s\nwant create, start, die, destroy in that order", r.stdout)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " evrm") {
			t.Errorf("event %q passed the filter container=evrm", l)
		}
	}
	// --until alone replays the history up to it, as with dockerd.
	r = d.mustDocker(t, 0, "", "events", "--until", fmt.Sprint(until), "--filter", "container=evrm", "--format", "{{.Action}}")
	if got := strings.Fields(r.stdout); !subsequence(got, "create", "start", "die", "destroy") {
		t.Errorf("docker events --until without --since: %q, want the evrm events", r.stdout)
	}
	r = d.mustDocker(t, 0, "", "events", "--since", fmt.Sprint(since), "--until", fmt.Sprint(until),
		"--filter", "event=die", "--format", "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}} {{.Actor.Attributes.image}}")
	if got := strings.TrimSpace(r.stdout); got != "evrm 0 busybox\nevexit 3 busybox" {
		t.Errorf("die events:\n%s\nwant evrm 0 then evexit 3, from busybox", got)
	}
	r = d.mustVmctl(t, 0, "", "events", "--since", fmt.Sprint(since), "--until", fmt.Sprint(until),
		"--filter", "event=die", "--filter", "container=evexit", "--format", "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}")
	if got := strings.TrimSpace(r.stdout); got != "evexit 3" {
		t.Errorf("vmctl -H events --filter event=die --filter container=evexit: %q, want evexit 3", got)
	}
	r = runClient(t, "", nil, "events")
	if r.code != 125 {
		t.Errorf("vmctl events without a daemon: exit %d, want 125", r.code)
	}
	oneLine(t, r, "events needs a daemon")
	r = d.docker(t, "", "events", "--filter", "colour=red", "--until", fmt.Sprint(until))
	if r.code == 0 || !strings.Contains(r.stderr, "invalid filter 'colour'") {
		t.Errorf("docker events --filter colour=red: exit %d, stderr %q; want an invalid filter error", r.code, r.stderr)
	}

	// docker ps --filter: name and status together, label, and a bad key.
	r = d.mustDocker(t, 0, "", "ps", "--filter", "name=evexit", "--filter", "status=exited", "--format", "{{.Names}} {{.Status}}")
	if !strings.HasPrefix(strings.TrimSpace(r.stdout), "evexit Exited (3) ") {
		t.Errorf("docker ps --filter name=evexit --filter status=exited: %q, want evexit Exited (3)", r.stdout)
	}
	if r = d.mustDocker(t, 0, "", "ps", "-a", "--filter", "label=suite=events", "-q"); len(strings.Fields(r.stdout)) != 1 {
		t.Errorf("docker ps -a --filter label=suite=events: %q, want one container", r.stdout)
	}
	if r = d.mustDocker(t, 0, "", "ps", "--filter", "status=running", "-q"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("docker ps --filter status=running: %q, want nothing", r.stdout)
	}
	r = d.docker(t, "", "ps", "--filter", "colour=red")
	if r.code == 0 || !strings.Contains(r.stderr, "invalid filter 'colour'") {
		t.Errorf("docker ps --filter colour=red: exit %d, stderr %q; want an invalid filter error", r.code, r.stderr)
	}
	r = d.mustVmctl(t, 0, "", "ps", "-a", "--format", "{{.Names}} {{.Status}}")
	if !strings.HasPrefix(strings.TrimSpace(r.stdout), "evexit Exited (3) ") {
		t.Errorf("vmctl -H ps -a --format: %q, want evexit Exited (3)", r.stdout)
	}

	// kill -9: the record is intact in the new daemon.
	d.crash(t)
	d.launch(t, d.bin)
	r = d.mustDocker(t, 0, "", "inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.Config.Image}}", "evexit")
	if got := strings.TrimSpace(r.stdout); got != "/evexit exited 3 busybox" {
		t.Errorf("after kill -9 and restart: inspect = %q, want /evexit exited 3 busybox", got)
	}

	// Live: a running docker events sees the removal as it happens.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := exec.CommandContext(ctx, "docker", "events", "--filter", "container=evexit", "--format", "{{.Action}}")
	live.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
	out, err := live.StdoutPipe()
	must(t, err)
	must(t, live.Start())
	defer live.Wait()
	defer cancel()
	seen := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "destroy" {
				seen <- sc.Text()
				return
			}
		}
		close(seen)
	}()
	// The stream is open once the daemon answered; removing too early
	// would only make the test wait for an event already gone by.
	waitFor(t, func() bool { return strings.Contains(d.docker(t, "", "info").stdout, "Server") }, "the daemon")
	time.Sleep(300 * time.Millisecond)
	d.mustDocker(t, 0, "", "rm", "evexit")
	select {
	case a, ok := <-seen:
		if !ok || a != "destroy" {
			t.Errorf("live docker events ended without the destroy of evexit")
		}
	case <-time.After(30 * time.Second):
		t.Errorf("live docker events did not report the destroy of evexit")
	}
}

// In-process vmctl (no daemon): ps in one process lists what a vmctl run
// in another is running (the store is not held open by either), and ps
// and inspect take filters and templates.
func TestPsFormatInProcess(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := e.cmd(ctx, "run", "--name", "fmtcheck", "busybox", "sleep", "3")
	must(t, run.Start())
	waitFor(t, func() bool {
		r := e.run(t, "ps", "--filter", "name=^fmtcheck$", "--format", "{{.Names}} {{.State}}")
		return strings.TrimSpace(r.stdout) == "fmtcheck running"
	}, "vmctl ps in another process to list the running container")
	if err := run.Wait(); err != nil {
		t.Fatalf("vmctl run: %v", err)
	}
	r := e.mustRun(t, 0, "ps", "-a", "--filter", "name=^fmtcheck$", "--format", "{{.Names}} {{.Status}}")
	if !strings.HasPrefix(strings.TrimSpace(r.stdout), "fmtcheck Exited (0) ") {
		t.Errorf("vmctl ps --format: %q, want fmtcheck Exited (0)", r.stdout)
	}
	r = e.mustRun(t, 0, "ps", "-a", "--filter", "name=^fmtcheck$", "--format", "table {{.Names}}\t{{.Image}}")
	if got := strings.Fields(r.stdout); strings.Join(got, " ") != "NAMES IMAGE fmtcheck busybox" {
		t.Errorf("vmctl ps --format table: %q", r.stdout)
	}
	r = e.mustRun(t, 0, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{len .Id}}", "fmtcheck")
	if got := strings.TrimSpace(r.stdout); got != "exited 0 64" {
		t.Errorf("vmctl inspect -f: %q, want exited 0 64", got)
	}
	r = e.run(t, "ps", "--filter", "colour=red")
	if r.code != 125 || !strings.Contains(r.stderr, "invalid filter 'colour'") {
		t.Errorf("vmctl ps --filter colour=red: exit %d, stderr %q", r.code, r.stderr)
	}
	e.mustRun(t, 0, "rm", "fmtcheck")
	e.checkClean(t, before)
}
