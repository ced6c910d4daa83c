package tests

import (
	"regexp"
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

	// docker system df and ps -s: what takes space, as dockerd reports it.
	r := d.mustDocker(t, 0, "", "system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}")
	for _, want := range []string{"Images 1 1\n", "Containers 3 1\n", "Local Volumes 0 0\n", "Build Cache 0 0\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("docker system df lacks %q:\n%s", want, r.stdout)
		}
	}
	r = d.mustDocker(t, 0, "", "ps", "-s", "--format", "{{.Names}} {{.Size}}")
	if !regexp.MustCompile(`(?m)^up \d.*B \(virtual \d.*B\)$`).MatchString(r.stdout) {
		t.Errorf("docker ps -s: %q", r.stdout)
	}

	r = d.mustDocker(t, 0, "", "container", "prune", "-f", "--filter", "label!=keep")
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
	// docker system prune calls each prune endpoint.
	if r := d.mustDocker(t, 0, "", "system", "prune", "-f"); !strings.Contains(r.stdout, "Total reclaimed space") {
		t.Errorf("docker system prune -f: %q", r.stdout)
	}
}
