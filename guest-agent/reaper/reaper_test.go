package reaper

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// startShell forks `sh -c script` without exec.Cmd.Wait ever being called.
func startShell(t *testing.T, r *Reaper, script string) (int, <-chan Status) {
	t.Helper()
	pid, ch, err := r.Start(func() (int, error) {
		cmd := exec.Command("/bin/sh", "-c", script)
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	if err != nil {
		t.Fatalf("Start(%q): %v", script, err)
	}
	return pid, ch
}

func waitStatus(t *testing.T, ch <-chan Status) Status {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no status after 10s")
		return Status{}
	}
}

func TestReaperStatuses(t *testing.T) {
	r := New()
	go r.Run()
	defer r.Stop()

	tests := []struct {
		script     string
		wantCode   int
		wantSignal syscall.Signal
		wantExit   int
	}{
		{"exit 0", 0, 0, 0},
		{"exit 7", 7, 0, 7},
		{"kill -KILL $$", -1, syscall.SIGKILL, 137},
		{"kill -TERM $$", -1, syscall.SIGTERM, 143},
		// Exits before Start returns: must still be delivered.
		{"", 0, 0, 0},
	}
	for _, tt := range tests {
		pid, ch := startShell(t, r, tt.script)
		got := waitStatus(t, ch)
		if got.Pid != pid || got.ExitCode != tt.wantCode || got.Signal != tt.wantSignal || got.ExitStatus() != tt.wantExit {
			t.Errorf("sh -c %q = %+v (exit %d), want pid %d code %d signal %v exit %d",
				tt.script, got, got.ExitStatus(), pid, tt.wantCode, tt.wantSignal, tt.wantExit)
		}
	}
}

func TestReaperManyChildren(t *testing.T) {
	r := New()
	go r.Run()
	defer r.Stop()

	// Children exit in any order while others are being started; each
	// status must reach the waiter of its own pid.
	const n = 20
	type started struct {
		pid int
		ch  <-chan Status
	}
	var all []started
	for i := 0; i < n; i++ {
		pid, ch := startShell(t, r, "exit "+string(rune('0'+i%10)))
		all = append(all, started{pid, ch})
	}
	for i, s := range all {
		got := waitStatus(t, s.ch)
		if got.Pid != s.pid || got.ExitCode != i%10 {
			t.Errorf("child %d: got %+v, want pid %d code %d", i, got, s.pid, i%10)
		}
	}
}

func TestReaperStartError(t *testing.T) {
	r := New()
	go r.Run()
	defer r.Stop()
	if _, _, err := r.Start(func() (int, error) { return 0, exec.ErrNotFound }); err == nil {
		t.Error("Start with a failing start func: got nil error")
	}
	if _, _, err := r.Start(func() (int, error) { return -1, nil }); err == nil {
		t.Error("Start returning pid -1: got nil error")
	}
}
