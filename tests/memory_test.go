package tests

import (
	"strings"
	"testing"
)

// A container over its --memory limit is OOM-killed, reports 137, and its
// record says it was the OOM killer.
func TestMemoryLimitOOMKills(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	// dd's 100 MiB buffer is anonymous memory, filled at once: nothing
	// the kernel could reclaim instead of killing.
	r := e.run(t, "run", "--name", "oom", "--memory", "64m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	if r.code != 137 {
		t.Errorf("exit %d, want 137 (OOM kill); stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// The record, as inspect reads it from the container store.
	rec := e.mustRun(t, 0, "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "oom")
	if got := strings.TrimSpace(rec.stdout); got != "true 137" {
		t.Errorf("record state = %q, want oomKilled with exit 137 (true 137)", got)
	}
	e.mustRun(t, 0, "rm", "oom")
	// The same work fits under a larger limit: the limit, not the VM, killed it.
	r = e.run(t, "run", "--rm", "--memory", "256m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	if r.code != 0 {
		t.Errorf("with 256m: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	e.checkClean(t, before)
}
