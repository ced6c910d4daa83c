package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Writes go to the container's own writable layer: never to the shared
// image disk, never visible to another container, kept across the
// container's life until it is removed.
func TestWritesStayInTheContainer(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	r := e.mustRun(t, 0, "run", "--name", "writer", "busybox", "sh", "-c", "echo data > /written && cat /written && rm /bin/ls")
	if r.stdout != "data\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	// The image disk does not have the file, and still has ls.
	// (Flattened disks, which hold whole images based on busybox; layer
	// disks of built images hold only their layers.)
	disks, _ := filepath.Glob(filepath.Join(e.dataRoot, "disks", "flat-*.ext4"))
	if len(disks) == 0 {
		t.Fatalf("no image disk under %s/disks", e.dataRoot)
	}
	layers, _ := filepath.Glob(filepath.Join(e.dataRoot, "disks", "layer-*.ext4"))
	for _, d := range append(disks, layers...) {
		out, _ := exec.Command("debugfs", "-R", "stat /written", d).CombinedOutput()
		if !strings.Contains(string(out), "File not found") {
			t.Errorf("image disk %s has /written: %s", d, out)
		}
	}
	for _, d := range disks {
		out, _ := exec.Command("debugfs", "-R", "stat /bin/ls", d).CombinedOutput()
		if strings.Contains(string(out), "File not found") {
			t.Errorf("image disk %s lost /bin/ls", d)
		}
	}
	// A new container sees the image, not the other container's changes.
	r = e.mustRun(t, 0, "run", "--rm", "busybox", "sh", "-c", "test ! -e /written && test -e /bin/ls && echo pristine")
	if r.stdout != "pristine\n" {
		t.Errorf("second container: %q", r.stdout)
	}
	// The exited container is listed, then removed with its writable disk.
	r = e.mustRun(t, 0, "ps", "-a")
	if !strings.Contains(r.stdout, "writer") || !strings.Contains(r.stdout, "Exited (0)") {
		t.Errorf("ps -a does not list the exited container: %q", r.stdout)
	}
	if r := e.mustRun(t, 0, "ps"); strings.Contains(r.stdout, "writer") {
		t.Errorf("ps lists an exited container: %q", r.stdout)
	}
	r = e.run(t, "run", "--name", "writer", "busybox", "true")
	if r.code != 125 {
		t.Errorf("reusing a name: exit %d, want 125", r.code)
	}
	oneLine(t, r, `name "writer" is already in use`)
	e.mustRun(t, 0, "rm", "writer")
	if n := e.containerCount(t); n != before {
		t.Errorf("after rm: %d containers, want %d", n, before)
	}
	if _, err := os.Stat(filepath.Join(e.dataRoot, "containers")); err != nil {
		t.Fatal(err)
	}
	e.checkClean(t, before)
}
