package tests

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A vmctld killed with SIGKILL leaves its containers' VMs running; the next
// vmctld on the same roots re-adopts them: ps, logs and stop work, a
// container whose command ended meanwhile shows its real exit, and rm leaves
// nothing behind.
func TestDaemonRestartReadopts(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)

	d.mustDocker(t, 0, "", "run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 8; exit 3")
	shortStarted := time.Now()
	d.mustDocker(t, 0, "", "run", "-d", "--name", "ticker", "busybox",
		"sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done")
	waitFor(t, func() bool {
		return strings.Contains(d.docker(t, "", "logs", "ticker").stdout, "tick 2\n")
	}, "three lines from the ticker before the crash")
	pidOut := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Pid}}", "ticker").stdout
	vmmPid, err := strconv.Atoi(strings.TrimSpace(pidOut))
	if err != nil || vmmPid <= 0 {
		t.Fatalf("docker inspect ticker: VMM pid %q", pidOut)
	}
	before := lastTick(d.docker(t, "", "logs", "ticker").stdout)

	d.crash(t)
	if err := syscall.Kill(vmmPid, 0); err != nil {
		t.Fatalf("the VMM (pid %d) did not survive the daemon's SIGKILL: %v", vmmPid, err)
	}
	// Keep the daemon down until the short container's command has ended.
	time.Sleep(time.Until(shortStarted.Add(11 * time.Second)))
	if err := syscall.Kill(vmmPid, 0); err != nil {
		t.Fatalf("the VMM (pid %d) ended while the daemon was down: %v", vmmPid, err)
	}
	d.launch(t, d.bin)

	ps := d.mustDocker(t, 0, "", "ps", "--format", "{{.Names}} {{.Status}}").stdout
	if !strings.Contains(ps, "ticker Up") {
		t.Errorf("docker ps after restart = %q, want ticker Up", ps)
	}
	waitFor(t, func() bool {
		st := d.docker(t, "", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "short").stdout
		return strings.TrimSpace(st) == "exited 3"
	}, "the short container, ended while the daemon was down, to show exited 3")
	waitFor(t, func() bool {
		return lastTick(d.docker(t, "", "logs", "ticker").stdout) >= before+3
	}, "new ticker lines after the restart")
	logs := d.mustDocker(t, 0, "", "logs", "ticker").stdout
	if !strings.HasPrefix(logs, "tick 0\n") {
		t.Errorf("docker logs ticker after restart lost the lines from before the crash: %q", logs)
	}

	d.mustDocker(t, 0, "", "stop", "-t", "1", "ticker")
	st := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "ticker").stdout)
	if st != "exited 137" && st != "exited 143" {
		t.Errorf("ticker after docker stop: %q, want exited 137 or 143", st)
	}
	waitFor(t, func() bool { return syscall.Kill(vmmPid, 0) != nil }, "the adopted VMM to end after docker stop")
	d.mustDocker(t, 0, "", "rm", "ticker", "short")
	// d's cleanup checks that no VMM process, exec-root entry or container
	// directory is left.
}

// lastTick returns the number of the last "tick N" line, or -1.
func lastTick(logs string) int {
	last := -1
	for _, line := range strings.Split(logs, "\n") {
		if n, err := strconv.Atoi(strings.TrimPrefix(line, "tick ")); err == nil && strings.HasPrefix(line, "tick ") {
			last = n
		}
	}
	return last
}
