package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// docker rmi against vmctld, as dockerd answers it: an image a container
// uses is not deleted (refused; with -f only untagged), and a deleted
// image's cached disk goes with it.
func TestDockerRmiInUse(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	id := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.Id}}", "busybox").stdout)
	// busybox has one layer: its chain ID, which keys its disk, is that
	// layer's diff ID.
	layer := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{index .RootFS.Layers 0}}", "busybox").stdout)
	disk := filepath.Join(d.dataRoot, "disks", "flat-"+strings.TrimPrefix(layer, "sha256:")+".ext4")
	d.mustDocker(t, 0, "", "run", "--name", "user", "busybox", "true")
	if _, err := os.Stat(disk); err != nil {
		t.Fatalf("the image's disk was not built where expected: %v", err)
	}

	r := d.mustDocker(t, 1, "", "rmi", "busybox")
	if !strings.Contains(r.stderr, "container user is using it") {
		t.Errorf("docker rmi of an image a stopped container uses: %q", r.stderr)
	}
	r = d.mustDocker(t, 0, "", "rmi", "-f", "busybox")
	if r.stdout != "Untagged: busybox:latest\n" {
		t.Errorf("docker rmi -f printed %q, want only the untag", r.stdout)
	}
	// The container still has its image, untagged.
	if got := strings.TrimSpace(d.mustDocker(t, 0, "", "images", "-q", "--no-trunc").stdout); got != id {
		t.Errorf("images after rmi -f = %q, want the untagged %s", got, id)
	}
	d.mustDocker(t, 0, "", "start", "-a", "user")

	d.mustDocker(t, 0, "", "rm", "user")
	r = d.mustDocker(t, 0, "", "rmi", id)
	if r.stdout != "Deleted: "+id+"\n" {
		t.Errorf("docker rmi %s printed %q", id, r.stdout)
	}
	if _, err := os.Stat(disk); !os.IsNotExist(err) {
		t.Errorf("the removed image's disk is still there (stat: %v)", err)
	}
}
