package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// Wait statuses as the kernel encodes them (low 7 bits: signal; else
// exit code in bits 8-15).
const (
	exited0   = syscall.WaitStatus(0)
	exited1   = syscall.WaitStatus(1 << 8)
	sigKilled = syscall.WaitStatus(syscall.SIGKILL)
	sigSegv   = syscall.WaitStatus(syscall.SIGSEGV)
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		facts      exitFacts
		want       sandbox.ExitReason
		wantDetail string
	}{
		{"guest reboot", exitFacts{shutdownReason: "guest-reset", status: exited0}, sandbox.ExitShutdown, "guest rebooted"},
		{"guest poweroff", exitFacts{shutdownReason: "guest-shutdown", status: exited0}, sandbox.ExitShutdown, "guest powered off"},
		{"guest reboot raced our kill", exitFacts{shutdownReason: "guest-reset", killedByUs: true, status: sigKilled}, sandbox.ExitShutdown, "guest rebooted"},
		{"quit by us", exitFacts{shutdownReason: "host-qmp-quit", quitByUs: true, status: exited0}, sandbox.ExitKilled, "QMP quit"},
		{"killed by us", exitFacts{killedByUs: true, status: sigKilled}, sandbox.ExitKilled, "SIGKILL"},
		{"quit then killed", exitFacts{quitByUs: true, killedByUs: true, status: sigKilled}, sandbox.ExitKilled, "SIGKILL"},
		{"signal from elsewhere", exitFacts{shutdownReason: "host-signal", status: exited0}, sandbox.ExitKilled, "signal"},
		{"sigkill from elsewhere", exitFacts{status: sigKilled, stderrTail: "x"}, sandbox.ExitCrashed, "QEMU killed by signal SIGKILL: x"},
		{"segfault", exitFacts{status: sigSegv}, sandbox.ExitCrashed, "SIGSEGV"},
		{"exit 1", exitFacts{status: exited1, stderrTail: "qemu: oops"}, sandbox.ExitCrashed, "QEMU exited with status 1: qemu: oops"},
		{"exit 0 silently", exitFacts{status: exited0}, sandbox.ExitCrashed, "without reporting a shutdown"},
		{"panic event", exitFacts{guestPanicked: true, shutdownReason: "guest-panic", status: exited0}, sandbox.ExitCrashed, "GUEST_PANICKED"},
		{"panic reason", exitFacts{shutdownReason: "guest-panic", status: exited0}, sandbox.ExitCrashed, "guest panicked"},
		{"panic on console", exitFacts{shutdownReason: "guest-reset", consolePanic: "Kernel panic - not syncing: boom", status: exited0}, sandbox.ExitCrashed, "guest Kernel panic - not syncing: boom"},
		{"internal error, then our kill", exitFacts{internalError: true, killedByUs: true, status: sigKilled}, sandbox.ExitCrashed, "internal error"},
		{"host error", exitFacts{shutdownReason: "host-error", status: exited1}, sandbox.ExitCrashed, "QEMU shut down: host-error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := classify(tt.facts)
			if got != tt.want || !strings.Contains(detail, tt.wantDetail) {
				t.Errorf("classify() = %s, %q; want %s, containing %q", got, detail, tt.want, tt.wantDetail)
			}
		})
	}
}

func TestFindConsolePanic(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		console string
		want    string
	}{
		{"clean reboot", "[    0.5] reboot: Restarting system\n", ""},
		{"panic", "[    0.3] Run /init\n[    0.4] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\n[    0.4] Rebooting in 1 seconds..\n",
			"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300"},
		{"crlf", "Kernel panic - not syncing: VFS: Unable to mount root fs\r\n", "Kernel panic - not syncing: VFS: Unable to mount root fs"},
		{"truncated at end", "Kernel panic - not syncing: x", "Kernel panic - not syncing: x"},
		{"binary junk", "Kernel panic - not syncing: \xff\xfe\n", "Kernel panic - not syncing: ?"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "console"+string(rune('a'+i)))
			if err := os.WriteFile(p, []byte(tt.console), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := findConsolePanic(p); got != tt.want {
				t.Errorf("findConsolePanic() = %q, want %q", got, tt.want)
			}
		})
	}
	if got := findConsolePanic(""); got != "" {
		t.Errorf("findConsolePanic(no log) = %q", got)
	}
	if got := findConsolePanic(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("findConsolePanic(missing) = %q", got)
	}
}

func TestTailLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, []byte("one\n\ntwo\nthree\nfour\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := tailLines(p, 3, 4096), "two | three | four"; got != want {
		t.Errorf("tailLines() = %q, want %q", got, want)
	}
	if got, want := tailLines(p, 3, 5), "four"; got != want {
		t.Errorf("tailLines(max 5) = %q, want %q", got, want)
	}
}
