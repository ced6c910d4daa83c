package tests

import "testing"

// A container over its --memory limit is OOM-killed and reports 137.
func TestMemoryLimitOOMKills(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	// The shell keeps the whole command substitution in memory: ~100 MB.
	r := e.run(t, "run", "--rm", "--memory", "64m", "busybox", "sh", "-c", `x=$(yes abcdefghijklmnopqrstuvwxyz | head -c 100000000); echo survived`)
	if r.code != 137 {
		t.Errorf("exit %d, want 137 (OOM kill); stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("the process survived its memory limit: %q", r.stdout)
	}
	// The same work fits without the limit: the limit, not the VM, killed it.
	r = e.run(t, "run", "--rm", "--memory", "512m", "busybox", "sh", "-c", `x=$(yes abcdefghijklmnopqrstuvwxyz | head -c 100000000); echo survived`)
	if r.code != 0 || r.stdout != "survived\n" {
		t.Errorf("with 512m: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	e.checkClean(t, before)
}
