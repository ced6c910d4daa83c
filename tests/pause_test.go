package tests

import (
	"strings"
	"testing"
	"time"
)

// docker pause / unpause against vmctld: the container's processes are
// frozen, so its output stops; exec is refused as dockerd refuses it; unpause lets it go
// on; a paused container survives a daemon crash paused, and stops.
func TestPause(t *testing.T) {
	d := startDaemon(t)
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "p") })
	d.mustVmctl(t, 0, "", "run", "-d", "--name", "p", "busybox", "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done")
	lines := func() int { return strings.Count(d.mustDocker(t, 0, "", "logs", "p").stdout, "\n") }
	waitFor(t, func() bool { return lines() > 2 }, "the counter's first lines")

	d.mustDocker(t, 0, "", "pause", "p")
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.State.Paused}} {{.State.Running}}", "p"); r.stdout != "paused true true\n" {
		t.Errorf("inspect of a paused container: %q", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "ps", "--format", "{{.Status}}"); !strings.HasSuffix(strings.TrimSpace(r.stdout), "(Paused)") {
		t.Errorf("ps: %q, want Up ... (Paused)", r.stdout)
	}
	before := lines()
	time.Sleep(1500 * time.Millisecond)
	if after := lines(); after != before {
		t.Errorf("a paused container wrote %d lines", after-before)
	}
	if r := d.mustDocker(t, 1, "", "exec", "p", "true"); !strings.Contains(r.stderr, "is paused, unpause the container before exec") {
		t.Errorf("exec into a paused container: %q", r.stderr)
	}
	if r := d.mustDocker(t, 1, "", "pause", "p"); !strings.Contains(r.stderr, "already paused") {
		t.Errorf("pause of a paused container: %q", r.stderr)
	}

	// A daemon crash and restart: re-adopted, still paused.
	d.crash(t)
	d.launch(t, d.bin)
	if r := d.mustVmctl(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.State.Error}}", "p"); r.stdout != "paused \n" {
		t.Fatalf("after a daemon restart: %q, want paused", r.stdout)
	}
	before = lines()
	time.Sleep(time.Second)
	if after := lines(); after != before {
		t.Errorf("the re-adopted paused container wrote %d lines", after-before)
	}

	d.mustVmctl(t, 0, "", "unpause", "p")
	waitFor(t, func() bool { return lines() > before+2 }, "output after unpause")
	if r := d.mustDocker(t, 0, "", "exec", "p", "echo", "in"); r.stdout != "in\n" {
		t.Errorf("exec after unpause: %q", r.stdout)
	}
	if r := d.mustDocker(t, 1, "", "unpause", "p"); !strings.Contains(r.stderr, "not paused") {
		t.Errorf("unpause of a running container: %q", r.stderr)
	}
	// A paused container stops as any other.
	d.mustDocker(t, 0, "", "pause", "p")
	d.mustDocker(t, 0, "", "stop", "-t", "1", "p")
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "p"); r.stdout != "exited false\n" {
		t.Errorf("after stop of a paused container: %q", r.stdout)
	}
}
