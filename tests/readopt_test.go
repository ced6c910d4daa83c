package tests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A vmctld killed with SIGKILL leaves its containers' VMs running; the next
// vmctld on the same roots re-adopts them: ps, logs and stop work, a
// container whose command ended meanwhile shows its real exit, and rm leaves
// nothing behind. A container whose VM died while no daemon ran is marked
// exited with the reason, and its runtime state is removed.
func TestDaemonRestartReadopts(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	// On failure, containers may outlive a crashed daemon: remove them (or
	// kill their VMMs) before the daemon's own cleanup checks for leftovers.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		d.docker(t, "", "rm", "-f", "ticker", "short", "doomed")
		killVMMsUnder(d.execRoot)
	})

	d.mustDocker(t, 0, "", "run", "-d", "--name", "doomed", "busybox", "sleep", "1000")
	doomedPid := vmmPid(t, d, "doomed")
	doomedID := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.Id}}", "doomed").stdout)
	d.mustDocker(t, 0, "", "run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 8; exit 3")
	shortStarted := time.Now()
	d.mustDocker(t, 0, "", "run", "-d", "--name", "ticker", "busybox",
		"sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done")
	waitFor(t, func() bool {
		return strings.Contains(d.docker(t, "", "logs", "ticker").stdout, "tick 2\n")
	}, "three lines from the ticker before the crash")
	vmmPid := vmmPid(t, d, "ticker")
	before := lastTick(d.docker(t, "", "logs", "ticker").stdout)

	d.crash(t)
	if err := syscall.Kill(vmmPid, 0); err != nil {
		t.Fatalf("the VMM (pid %d) did not survive the daemon's SIGKILL: %v", vmmPid, err)
	}
	// One VM dies while no daemon watches it.
	must(t, syscall.Kill(doomedPid, syscall.SIGKILL))
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
	doomed := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}", "doomed").stdout)
	if !strings.HasPrefix(doomed, "exited 255 the VM ended while no daemon was running") {
		t.Errorf("doomed container after restart: %q, want exited 255 with the reason", doomed)
	}
	if _, err := os.Stat(filepath.Join(d.execRoot, doomedID[:12])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead VM's exec-root entry is still there (stat: %v)", err)
	}
	if out := d.mustDocker(t, 0, "", "exec", "ticker", "echo", "exec-ok").stdout; out != "exec-ok\n" {
		t.Errorf("docker exec in the re-adopted container = %q, want exec-ok", out)
	}
	logs := d.mustDocker(t, 0, "", "logs", "ticker").stdout
	if !strings.HasPrefix(logs, "tick 0\n") {
		t.Errorf("docker logs ticker after restart lost the lines from before the crash: %q", logs)
	}
	// The agent's answer to the read pending at the crash went to the dead
	// daemon; the new one asks for it again, so no line is missing.
	if gap := firstGap(logs); gap >= 0 {
		t.Errorf("docker logs ticker after restart misses tick %d: %q", gap, logs)
	}

	// A client attached to the re-adopted container gets its new output
	// and ends when it stops.
	attachOut := filepath.Join(t.TempDir(), "attach.out")
	outFile, err := os.Create(attachOut)
	must(t, err)
	defer outFile.Close()
	attach := exec.Command("docker", "attach", "--no-stdin", "ticker")
	attach.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
	attach.Stdout, attach.Stderr = outFile, outFile
	must(t, attach.Start())
	attachDone := make(chan error, 1)
	go func() { attachDone <- attach.Wait() }()
	defer func() {
		attach.Process.Kill()
		<-attachDone
	}()
	waitFor(t, func() bool {
		b, _ := os.ReadFile(attachOut)
		return strings.Contains(string(b), "tick ")
	}, "output on docker attach to the re-adopted container")

	d.mustDocker(t, 0, "", "stop", "-t", "1", "ticker")
	select {
	case <-attachDone:
		attachDone <- nil // for the deferred cleanup
	case <-time.After(30 * time.Second):
		t.Error("docker attach did not end when the re-adopted container stopped")
	}
	st := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "ticker").stdout)
	if st != "exited 137" && st != "exited 143" {
		t.Errorf("ticker after docker stop: %q, want exited 137 or 143", st)
	}
	waitFor(t, func() bool { return syscall.Kill(vmmPid, 0) != nil }, "the adopted VMM to end after docker stop")
	d.mustDocker(t, 0, "", "rm", "ticker", "short", "doomed")
	// d's cleanup checks that no VMM process, exec-root entry or container
	// directory is left.
}

// killVMMsUnder kills the VMM processes whose command line names dir (the
// VMs of one exec root), for cleanup after a failure; the daemon, whose
// command line names dir too, is left to its own cleanup.
func killVMMsUnder(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir+"/") {
			continue
		}
		if prog := filepath.Base(strings.SplitN(string(b), "\x00", 2)[0]); !strings.HasPrefix(prog, "qemu-system") && prog != "vmctl-vmm" {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// vmmPid is the VMM process of a running container (State.Pid).
func vmmPid(t *testing.T, d *daemon, name string) int {
	t.Helper()
	out := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Pid}}", name).stdout
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid <= 0 {
		t.Fatalf("docker inspect %s: VMM pid %q", name, out)
	}
	return pid
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

// firstGap returns the first N missing from a run of "tick N" lines that
// starts at 0, or -1 if none is missing.
func firstGap(logs string) int {
	next := 0
	for _, line := range strings.Split(logs, "\n") {
		n, err := strconv.Atoi(strings.TrimPrefix(line, "tick "))
		if err != nil || !strings.HasPrefix(line, "tick ") {
			continue
		}
		if n != next {
			return next
		}
		next++
	}
	return -1
}
