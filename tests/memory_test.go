package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
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
	var rec struct {
		Name  string `json:"name"`
		State struct {
			OOMKilled bool `json:"oomKilled"`
			ExitCode  int  `json:"exitCode"`
		} `json:"state"`
	}
	records, _ := filepath.Glob(filepath.Join(e.dataRoot, "containers", "*", "container.json"))
	found := false
	for _, p := range records {
		b, err := os.ReadFile(p)
		must(t, err)
		must(t, json.Unmarshal(b, &rec))
		if rec.Name == "oom" {
			found = true
			if !rec.State.OOMKilled || rec.State.ExitCode != 137 {
				t.Errorf("record state = %+v, want oomKilled with exit 137", rec.State)
			}
		}
	}
	if !found {
		t.Errorf("no record for container oom")
	}
	e.mustRun(t, 0, "rm", "oom")
	// The same work fits under a larger limit: the limit, not the VM, killed it.
	r = e.run(t, "run", "--rm", "--memory", "256m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	if r.code != 0 {
		t.Errorf("with 256m: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	e.checkClean(t, before)
}
