package nested

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// testKernel returns the prepared L1 kernel, or skips (fails under
// VMCTL_E2E=1, where `make test` has prepared everything).
func testKernel(t *testing.T) Kernel {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("VMCTL_E2E") != "" {
			t.Fatalf("%s (VMCTL_E2E=1: `make test` prepares it)", what)
		}
		t.Skip(what)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing("qemu-system-x86_64 is not installed")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing("/bin/busybox is missing: install busybox-static")
	}
	k, err := FindKernel("")
	if err != nil {
		missing(err.Error())
	}
	return k
}

// TestRunScenarios boots L1 once with a passing, a failing and a hanging
// scenario, and checks that each is reported as such and the run ends.
func TestRunScenarios(t *testing.T) {
	k := testKernel(t)
	var console strings.Builder
	cfg := Config{
		Kernel: k,
		Files:  []File{{Path: "nested/data/greeting", Data: []byte("hello from the host\n")}},
		Scenarios: []Scenario{
			{Name: "pass", Script: "cat data/greeting; test -c /dev/kvm"},
			{Name: "fail", Script: "echo about to fail; exit 3"},
			// The background sleep holds the output pipe open: the time
			// limit must kill the whole session, not only the shell.
			{Name: "hang", Script: "sleep 1000 & echo hanging; sleep 1000", Timeout: 2 * time.Second},
			{Name: "after", Script: "echo still running"},
		},
		Console: &console,
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\nconsole:\n%s", err, console.String())
	}
	t.Logf("boot %v (L1 uptime %v), kvm ready %v, wall %v", rep.Boot, rep.L1Uptime, rep.KVMReady, rep.Wall)
	want := []struct {
		name   string
		pass   bool
		detail string
	}{
		{KVMCheck, true, "/dev/kvm ready: kvm_amd npt=Y nested=1"},
		{"pass", true, "hello from the host"},
		{"fail", false, "exit status 3: about to fail"},
		{"hang", false, "timed out after 2s; last output: hanging"},
		{"after", true, "still running"},
	}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results %v, want %d\nconsole:\n%s", len(rep.Results), rep.Results, len(want), rep.Console)
	}
	for i, w := range want {
		got := rep.Results[i]
		if got.Name != w.name || got.Pass != w.pass || got.Detail != w.detail {
			t.Errorf("result %d = %v, want name=%s pass=%v detail=%q", i, got, w.name, w.pass, w.detail)
		}
	}
	if r, _ := rep.Result("pass"); !strings.Contains(r.Output, "hello from the host") {
		t.Errorf("pass output = %q, want the greeting", r.Output)
	}
	if r, _ := rep.Result("hang"); r.Duration < 2*time.Second || r.Duration > 10*time.Second {
		t.Errorf("hang took %v in L1, want about 2s", r.Duration)
	}
	if !rep.Done || len(rep.Failed()) != 2 {
		t.Errorf("Done = %v, Failed = %v", rep.Done, rep.Failed())
	}
}

// TestRunDeadline checks that the host deadline kills a machine that never
// reports, and says where it stopped.
func TestRunDeadline(t *testing.T) {
	k := testKernel(t)
	cfg := Config{
		Kernel:    k,
		Scenarios: []Scenario{{Name: "forever", Script: "sleep 1000", Timeout: time.Hour}},
		Timeout:   8 * time.Second,
	}
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 8s") {
		t.Fatalf("Run err = %v, want a deadline error\nconsole:\n%s", err, rep.Console)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("Run returned after %v, want about 8s", el)
	}
	t.Logf("error: %v", err)
}

// TestRunWedged: when L1's kernel reports a stuck CPU, Run ends at once with
// ErrWedged instead of waiting for the deadline. The report is faked through
// /dev/kmsg; a real one comes from the kernel's watchdog.
func TestRunWedged(t *testing.T) {
	k := testKernel(t)
	cfg := Config{
		Kernel: k,
		Scenarios: []Scenario{{Name: "stuck", Timeout: time.Hour,
			Script: `echo "<3>watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [qemu-system-x86:114]" >/dev/kmsg; sleep 1000`}},
	}
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrWedged) || !strings.Contains(err.Error(), "during scenario stuck") || !strings.Contains(err.Error(), "CPU#1 stuck for 22s") {
		t.Fatalf("Run err = %v, want ErrWedged during scenario stuck\nconsole:\n%s", err, rep.Console)
	}
	if el := time.Since(start); el > time.Minute {
		t.Errorf("Run returned after %v: a wedged L1 must end the run at once", el)
	}
}

func TestIsWedgeReport(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"[   28.387961] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [qemu-system-x86:114]", true},
		{"[   61.1] rcu: INFO: rcu_preempt self-detected stall on CPU", true},
		{"[   61.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", true},
		{"[  103.495846] Kernel panic - not syncing: corrupted stack end detected inside scheduler", true},
		{"[    4.8] kvm [114]: vcpu0, guest rIP: 0xffffffff81002f8d Unhandled WRMSR(0xc0010007) = 0xffff", false},
		{"NESTED-RESULT name=x status=pass start=1 end=2 detail=soft lockup test", false},
	} {
		if got := isWedgeReport(tc.line); got != tc.want {
			t.Errorf("isWedgeReport(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

// TestRunSilent: an L1 that prints nothing any more, not even its
// heartbeat (here stopped by the scenario; in the wild, an L1 that never
// runs again), ends the run with ErrWedged once the silence limit passes.
func TestRunSilent(t *testing.T) {
	k := testKernel(t)
	cfg := Config{
		Kernel:       k,
		SilenceLimit: 15 * time.Second,
		Scenarios: []Scenario{{Name: "mute", Timeout: time.Hour,
			Script: `kill -STOP "$(cat /run/nested-heartbeat.pid)"; sleep 1000`}},
	}
	start := time.Now()
	rep, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrWedged) || !strings.Contains(err.Error(), "printed nothing for 15s") || !strings.Contains(err.Error(), "during scenario mute") {
		t.Fatalf("Run err = %v, want ErrWedged for silence during scenario mute\nconsole:\n%s", err, rep.Console)
	}
	if el := time.Since(start); el > 2*time.Minute {
		t.Errorf("Run returned after %v: the silence limit must end the run", el)
	}
}

// TestRunReset: an L1 that resets itself (here by sysrq; in the wild, a
// triple fault of its emulated CPU, which prints nothing) ends the run with
// ErrWedged, so that callers boot it once more.
func TestRunReset(t *testing.T) {
	k := testKernel(t)
	cfg := Config{
		Kernel: k,
		Scenarios: []Scenario{{Name: "reboot", Timeout: time.Hour,
			Script: `echo b >/proc/sysrq-trigger; sleep 1000`}},
	}
	rep, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrWedged) || !strings.Contains(err.Error(), "reset itself") || !strings.Contains(err.Error(), "during scenario reboot") {
		t.Fatalf("Run err = %v, want ErrWedged for a reset during scenario reboot\nconsole:\n%s", err, rep.Console)
	}
}
