package containersvc

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

func TestCheckRestartPolicy(t *testing.T) {
	for _, p := range []RestartPolicy{{}, {Name: "no"}, {Name: "always"}, {Name: "unless-stopped"}, {Name: "on-failure"}, {Name: "on-failure", MaximumRetryCount: 3}} {
		if err := checkRestartPolicy(p, false); err != nil {
			t.Errorf("checkRestartPolicy(%+v) = %v", p, err)
		}
	}
	for _, p := range []RestartPolicy{{Name: "sometimes"}, {Name: "always", MaximumRetryCount: 2}, {Name: "on-failure", MaximumRetryCount: -1}} {
		if err := checkRestartPolicy(p, false); !errdefs.IsInvalidArgument(err) {
			t.Errorf("checkRestartPolicy(%+v) = %v, want invalid argument", p, err)
		}
	}
	if err := checkRestartPolicy(RestartPolicy{Name: "always"}, true); err == nil {
		t.Error("a restart policy with AutoRemove was accepted")
	}
	if err := checkRestartPolicy(RestartPolicy{Name: "no"}, true); err != nil {
		t.Errorf("no policy with AutoRemove: %v", err)
	}
}

// waitState polls the record until cond holds.
func waitState(t *testing.T, f *bootFixture, ref string, what string, cond func(status string, restarts int, restarting bool) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := f.svc.Get(ref)
		if err != nil {
			t.Fatal(err)
		}
		if cond(string(c.State.Status), c.State.RestartCount, f.svc.Restarting(c.ID)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v, restarting %v", what, c.State, f.svc.Restarting(c.ID))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// on-failure:2 restarts a failing container twice, with the back-off
// between, then leaves it exited; a start by a user starts the count over;
// a container that exits 0 is not restarted by on-failure.
func TestRestartOnFailure(t *testing.T) {
	f := newBootFixture(t)
	f.svc.cfg.RestartPolicies = true
	f.exitCode = 3
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "onfail", RestartPolicy: RestartPolicy{Name: "on-failure", MaximumRetryCount: 2}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := f.svc.Start(context.Background(), c.ID, Stdio{}); err != nil {
		t.Fatal(err)
	}
	done := func(status string, n int, restarting bool) bool { return status == "exited" && n == 2 && !restarting }
	waitState(t, f, "onfail", "two restarts", done)
	// 100 ms, then 200 ms of back-off.
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("two restarts took %v: no back-off", took)
	}
	time.Sleep(time.Second)
	if n := f.counts().starts; n != 3 {
		t.Errorf("%d runs, want 3 (the first and two restarts)", n)
	}
	f.mu.Lock()
	f.exitCode = 0
	f.mu.Unlock()
	if err := f.svc.Start(context.Background(), c.ID, Stdio{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, f, "onfail", "the user's start", func(status string, n int, restarting bool) bool { return status == "exited" && n == 0 })
	time.Sleep(300 * time.Millisecond)
	if n := f.counts().starts; n != 4 {
		t.Errorf("%d runs after an exit 0, want 4: on-failure does not restart it", n)
	}
}

// always restarts whatever the exit; a stop by a user, even between two
// runs, ends that; a policy without a daemon is refused.
func TestRestartAlwaysUntilStopped(t *testing.T) {
	f := newBootFixture(t)
	if _, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", RestartPolicy: RestartPolicy{Name: "always"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a restart policy without a daemon: %v, want refused", err)
	}
	f.svc.cfg.RestartPolicies = true
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "al", RestartPolicy: RestartPolicy{Name: "always"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Start(context.Background(), c.ID, Stdio{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, f, "al", "a restart pending after the second run", func(_ string, n int, restarting bool) bool { return n >= 1 && restarting })
	if err := f.svc.Stop(context.Background(), c.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	before := f.counts().starts
	time.Sleep(time.Second)
	if n := f.counts().starts; n != before {
		t.Errorf("%d runs after the stop, want %d: a stopped container stays stopped", n, before)
	}
	got, _ := f.svc.Get("al")
	if !got.State.ManuallyStopped || f.svc.Restarting(c.ID) {
		t.Errorf("after the stop: %+v, restarting %v", got.State, f.svc.Restarting(c.ID))
	}
	// The daemon's start brings an always container back all the same.
	ids, err := f.svc.RestartOnBoot()
	if err != nil || len(ids) != 1 || ids[0] != c.ID {
		t.Fatalf("RestartOnBoot = %v, %v", ids, err)
	}
	waitState(t, f, "al", "the start at the daemon's start", func(string, int, bool) bool { return f.counts().starts > before })
	f.svc.Remove(context.Background(), c.ID, RemoveOptions{Force: true})
}

// Rename: a free valid name only; the record and the network's endpoints
// take it.
func TestRename(t *testing.T) {
	f := newBootFixture(t)
	net := &fakeNetwork{}
	f.svc.cfg.Network = net
	ctx := context.Background()
	a, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Name: "cache"}); err != nil {
		t.Fatal(err)
	}
	for name, class := range map[string]func(error) bool{"cache": errdefs.IsConflict, "bad/name": errdefs.IsInvalidArgument, "web": errdefs.IsInvalidArgument} {
		if err := f.svc.Rename(ctx, "web", name); !class(err) {
			t.Errorf("Rename(web, %s) = %v", name, err)
		}
	}
	if err := f.svc.Rename(ctx, "web", "/site"); err != nil {
		t.Fatal(err)
	}
	if c, err := f.svc.Get("site"); err != nil || c.ID != a.ID {
		t.Errorf("Get(site) = %v, %v", c, err)
	}
	// (Names with letters beyond f: a name of hex digits could also be
	// the prefix of a container's ID.)
	if _, err := f.svc.Get("web"); !errdefs.IsNotFound(err) {
		t.Errorf("Get(web) after the rename = %v", err)
	}
	if len(net.renamed) != 1 || net.renamed[0] != a.ID+" site" {
		t.Errorf("network renames %v", net.renamed)
	}
	if err := f.svc.Rename(ctx, "nope", "other"); !errdefs.IsNotFound(err) {
		t.Errorf("Rename of a missing container = %v", err)
	}
}

// Update: the restart policy, and the memory and CPUs of a stopped
// container (into its spec); bad values refused.
func TestUpdate(t *testing.T) {
	f := newBootFixture(t)
	f.svc.cfg.RestartPolicies = true
	ctx := context.Background()
	if _, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", Name: "u"}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Update(ctx, "u", UpdateOptions{MemoryBytes: 64 << 20, NanoCPUs: 2e9, RestartPolicy: &RestartPolicy{Name: "on-failure", MaximumRetryCount: 1}}); err != nil {
		t.Fatal(err)
	}
	got, _ := f.svc.Get("u")
	if got.Config.MemoryBytes != 64<<20 || got.Config.NanoCPUs != 2e9 || got.Config.RestartPolicy.Name != "on-failure" ||
		got.Config.Spec.Linux.Resources.Memory == nil || *got.Config.Spec.Linux.Resources.Memory.Limit != 64<<20 {
		t.Errorf("after the update: %+v", got.Config)
	}
	for _, o := range []UpdateOptions{{MemoryBytes: 1}, {NanoCPUs: 100e9}, {RestartPolicy: &RestartPolicy{Name: "sometimes"}}} {
		if err := f.svc.Update(ctx, "u", o); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Update(%+v) = %v", o, err)
		}
	}
}

// A --rm container whose start fails is removed, so a client waiting for
// its removal (docker run --rm) is not left waiting.
func TestAutoRemoveAfterFailedStart(t *testing.T) {
	f := newBootFixture(t)
	ctx := context.Background()
	c, err := f.svc.Create(ctx, CreateOptions{Image: "busybox", AutoRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	wait, err := f.svc.PrepareWait(c.ID, WaitRemoved)
	if err != nil {
		t.Fatal(err)
	}
	f.openErr = errs.New(errdefs.ErrFailedPrecondition, "hypervisor qemu cannot run here now")
	if err := f.svc.Start(ctx, c.ID, Stdio{}); err == nil {
		t.Fatal("Start succeeded")
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := wait(wctx); err != nil {
		t.Errorf("waiting for the removal: %v", err)
	}
	if _, err := f.svc.Get(c.ID); !errdefs.IsNotFound(err) {
		t.Errorf("the --rm container is still there: %v", err)
	}
}

// A process that died and was not reaped is not alive: a daemon killed a
// moment ago owns none of its containers any more.
func TestProcessAliveZombie(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if !processAlive(pid) {
		t.Fatal("a running child is not alive")
	}
	cmd.Process.Kill()
	// Not reaped yet: a zombie until Wait.
	deadline := time.Now().Add(5 * time.Second)
	for !isZombie(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !isZombie(pid) {
		t.Fatal("the killed child did not become a zombie")
	}
	if processAlive(pid) {
		t.Error("a zombie counts as alive")
	}
	cmd.Wait()
	if processAlive(pid) {
		t.Error("a reaped process counts as alive")
	}
}

// Limits a VM cannot have are client errors at create and update: below
// docker's minimum, above the host's memory, more CPUs than allowed.
func TestCheckLimits(t *testing.T) {
	old := hostMemory
	hostMemory = func() int64 { return 8 << 30 }
	t.Cleanup(func() { hostMemory = old })
	for _, tc := range []struct {
		mem, cpus int64
		want      string
	}{
		{0, 0, ""},
		{1 << 30, 2e9, ""},
		{8 << 30, 0, ""},
		{1 << 20, 0, "minimum memory limit allowed is 6MB"},
		{1 << 50, 0, "memory limit 1PiB is more than this host's memory (8GiB)"},
		{0, 100e9, "range of CPUs is from 0.01 to"},
	} {
		err := checkLimits(tc.mem, tc.cpus)
		if tc.want == "" && err != nil || tc.want != "" && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkLimits(%d, %d) = %v, want %q", tc.mem, tc.cpus, err, tc.want)
		}
	}
}

// A stop that names no timeout takes the container's --stop-timeout.
func TestStopTimeoutOf(t *testing.T) {
	five, forever := 5, -1
	for _, tc := range []struct {
		own  *int
		ask  time.Duration
		want time.Duration
	}{
		{nil, ContainerStopTimeout, DefaultStopTimeout},
		{&five, ContainerStopTimeout, 5 * time.Second},
		{&forever, ContainerStopTimeout, -1},
		{&five, 2 * time.Second, 2 * time.Second},
		{nil, -1, -1},
	} {
		c := &containers.Container{Config: containers.Config{StopTimeout: tc.own}}
		if got := stopTimeoutOf(c, tc.ask); got != tc.want {
			t.Errorf("stopTimeoutOf(%v, %v) = %v, want %v", tc.own, tc.ask, got, tc.want)
		}
	}
}
