package tests

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Signals sent to vmctl reach the container's process.
func TestSignalsAreForwarded(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--rm", "busybox", "sh", "-c",
		`trap 'echo got-int; exit 3' INT; trap 'echo got-term; exit 4' TERM; echo ready; while true; do sleep 0.1; done`)
	stdout, err := c.StdoutPipe()
	must(t, err)
	must(t, c.Start())
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("first line %q, want ready", lines.Text())
	}
	must(t, c.Process.Signal(syscall.SIGINT))
	if !lines.Scan() || lines.Text() != "got-int" {
		t.Errorf("after SIGINT: %q, want got-int", lines.Text())
	}
	err = c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("exit: %v, want status 3", err)
	}
	e.checkClean(t, before)
}

// A SIGKILL from outside the container ends its PID 1 (the kernel forces
// signals from an ancestor namespace), and vmctl reports 128+9. vmctl sends
// it on the third Ctrl-C, for commands that ignore SIGINT (as PID 1 does
// without a handler; this one ignores it explicitly).
func TestKillFromOutsideReports137(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--rm", "busybox", "sh", "-c", `trap "" INT; echo ready; while :; do sleep 1; done`)
	stdout, err := c.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	c.Stderr = &stderr
	must(t, c.Start())
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("first line %q, want ready", lines.Text())
	}
	for i := 0; i < 3; i++ {
		must(t, c.Process.Signal(syscall.SIGINT))
		time.Sleep(200 * time.Millisecond)
	}
	for lines.Scan() {
	}
	err = c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 137 {
		t.Errorf("exit: %v, want status 137; stderr %q", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "killing the container") {
		t.Errorf("stderr %q does not say the container was killed", stderr.String())
	}
	e.checkClean(t, before)
}

// An interrupt while the VM boots cancels the run and leaves nothing behind.
func TestInterruptDuringBoot(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--rm", "busybox", "sleep", "30")
	var stderr strings.Builder
	c.Stderr = &stderr
	must(t, c.Start())
	time.Sleep(300 * time.Millisecond) // QEMU is starting or booting
	must(t, c.Process.Signal(syscall.SIGINT))
	err := c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Errorf("exit: %v, want a failure", err)
	}
	e.checkClean(t, before)
}
