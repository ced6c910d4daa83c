package tests

import (
	"os"
	"os/exec"
	"path/filepath"
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

// docker import (POST /images/create?fromSrc=-) of what docker export
// wrote: an image of one layer, --change applied, that runs.
func TestImageImport(t *testing.T) {
	d := startDaemon(t)
	d.mustDocker(t, 0, "", "create", "--name", "src", "busybox", "true")
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "src"); d.vmctl(t, "", "rmi", "imp:1") })
	archive := filepath.Join(t.TempDir(), "fs.tar")
	d.mustDocker(t, 0, "", "export", "-o", archive, "src")
	must(t, exec.Command("gzip", archive).Run())
	r := d.mustDocker(t, 0, "", "import", "--change", `CMD ["echo", "imported"]`, "-m", "from export", archive+".gz", "imp:1")
	if !strings.HasPrefix(r.stdout, "sha256:") {
		t.Errorf("docker import printed %q, want the image ID", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "run", "--rm", "imp:1"); r.stdout != "imported\n" {
		t.Errorf("the imported image ran %q", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "history", "--format", "{{.Comment}}", "imp:1"); r.stdout != "from export\n" {
		t.Errorf("history of the imported image: %q", r.stdout)
	}
	// vmctl import, the same through its own client.
	r = d.mustVmctl(t, 0, "", "import", "-c", "ENTRYPOINT [\"echo\"]", archive+".gz", "imp:2")
	if !strings.HasPrefix(r.stdout, "sha256:") {
		t.Errorf("vmctl import printed %q", r.stdout)
	}
	if r := d.mustVmctl(t, 0, "", "run", "--rm", "imp:2", "hello"); r.stdout != "hello\n" {
		t.Errorf("the image vmctl imported ran %q", r.stdout)
	}
	d.vmctl(t, "", "rmi", "imp:2")
	bad := filepath.Join(t.TempDir(), "bad.tar")
	must(t, os.WriteFile(bad, []byte(strings.Repeat("not a tar ", 100)), 0o644))
	if r := d.mustDocker(t, 1, "", "import", bad); !strings.Contains(r.stderr, "not a tar") {
		t.Errorf("docker import of garbage: %q", r.stderr)
	}
}
