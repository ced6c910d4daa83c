package tests

import (
	"strings"
	"testing"
)

// docker container prune against vmctld: stopped containers go, with
// dockerd's filters and report; running ones stay.
func TestContainerPrune(t *testing.T) {
	d := startDaemon(t)
	keep := strings.TrimSpace(d.mustDocker(t, 0, "", "create", "--label", "keep=1", "busybox", "true").stdout)
	gone := strings.TrimSpace(d.mustDocker(t, 0, "", "create", "busybox", "true").stdout)
	d.mustDocker(t, 0, "", "run", "-d", "--name", "up", "busybox", "sleep", "600")
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "up", keep) })

	r := d.mustDocker(t, 0, "", "container", "prune", "-f", "--filter", "label!=keep")
	if !strings.Contains(r.stdout, "Deleted Containers:\n"+gone+"\n") || !strings.Contains(r.stdout, "Total reclaimed space:") || strings.Contains(r.stdout, keep) {
		t.Errorf("docker container prune --filter label!=keep printed:\n%s", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "ps", "-a", "-q", "--no-trunc"); strings.Contains(r.stdout, gone) || !strings.Contains(r.stdout, keep) {
		t.Errorf("after the prune, ps -a: %q", r.stdout)
	}
	r = d.mustVmctl(t, 0, "", "container", "prune", "-f")
	if !strings.Contains(r.stdout, keep) {
		t.Errorf("vmctl container prune printed %q, want %s", r.stdout, keep)
	}
	if r := d.mustDocker(t, 0, "", "ps", "-a", "--format", "{{.Names}} {{.State}}"); r.stdout != "up running\n" {
		t.Errorf("after the second prune: %q, want the running container alone", r.stdout)
	}
	if r := d.mustDocker(t, 1, "", "container", "prune", "-f", "--filter", "status=exited"); !strings.Contains(r.stderr, "invalid filter 'status'") {
		t.Errorf("an unknown filter: %q", r.stderr)
	}
}
