package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// exitFacts is what the driver learned about a VM's end: from QMP events,
// from its own actions, from QEMU's wait status and from the console.
type exitFacts struct {
	// shutdownReason is the "reason" of QEMU's SHUTDOWN event ("" if none
	// arrived): guest-shutdown, guest-reset, host-qmp-quit, host-signal, ...
	shutdownReason string
	// guestPanicked is set by a GUEST_PANICKED event.
	guestPanicked bool
	// internalError is set when QEMU stopped the guest in the
	// internal-error run state (a KVM emulation failure); the driver then
	// kills QEMU, which would otherwise sit paused forever.
	internalError bool
	// consolePanic is the kernel's "Kernel panic - not syncing" line, found
	// in the console log after a guest reset.
	consolePanic string
	// quitByUs and killedByUs record the driver's own actions.
	quitByUs   bool
	killedByUs bool
	// status is QEMU's wait status; stderrTail its last stderr lines.
	status     syscall.WaitStatus
	stderrTail string
}

// classify turns exitFacts into the engine's exit reason. The guest's own
// shutdown wins over the host's kill (the guest finished first); a crash
// signal wins over everything because a panicking guest may also reset.
func classify(f exitFacts) (sandbox.ExitReason, string) {
	switch {
	case f.internalError:
		return sandbox.ExitCrashed, "hypervisor internal error: QEMU stopped the guest (see qemu.log)"
	case f.guestPanicked:
		return sandbox.ExitCrashed, "guest panicked (GUEST_PANICKED event)"
	case f.consolePanic != "":
		return sandbox.ExitCrashed, "guest " + f.consolePanic
	}
	switch f.shutdownReason {
	case "guest-shutdown":
		return sandbox.ExitShutdown, "guest powered off"
	case "guest-reset":
		return sandbox.ExitShutdown, "guest rebooted"
	case "guest-panic":
		return sandbox.ExitCrashed, "guest panicked"
	}
	switch {
	case f.killedByUs:
		return sandbox.ExitKilled, "killed by the host (SIGKILL)"
	case f.quitByUs || f.shutdownReason == "host-qmp-quit":
		return sandbox.ExitKilled, "stopped by the host (QMP quit)"
	case f.shutdownReason == "host-signal":
		return sandbox.ExitKilled, "QEMU ended by a signal"
	case f.shutdownReason != "":
		return sandbox.ExitCrashed, withTail("QEMU shut down: "+f.shutdownReason, f.stderrTail)
	case f.status.Signaled():
		return sandbox.ExitCrashed, withTail("QEMU killed by signal "+signalName(f.status.Signal()), f.stderrTail)
	case f.status.Exited() && f.status.ExitStatus() != 0:
		return sandbox.ExitCrashed, withTail(fmt.Sprintf("QEMU exited with status %d", f.status.ExitStatus()), f.stderrTail)
	}
	return sandbox.ExitCrashed, withTail("QEMU exited without reporting a shutdown", f.stderrTail)
}

// signalName names a signal the way kill(1) does.
func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGSYS:
		return "SIGSYS (seccomp)"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return fmt.Sprintf("%d (%v)", int(s), s)
}

func withTail(msg, tail string) string {
	if tail == "" {
		return msg
	}
	return msg + ": " + tail
}

// tailLines returns up to the last n non-empty lines of the last max bytes
// of path, joined with " | " so an error stays one line.
func tailLines(path string, n int, max int64) string {
	b := readTail(path, max)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// readTail returns the last max bytes of path, nil if it cannot be read.
func readTail(path string, max int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, max))
	if err != nil {
		return nil
	}
	return b
}

// panicMarker starts the line every Linux panic prints at KERN_EMERG, which
// "quiet" does not hide.
var panicMarker = []byte("Kernel panic - not syncing")

// findConsolePanic returns the kernel panic line in the console log's tail.
// With panic=-1 a panicking guest resets at once, which QEMU reports exactly
// like a reboot; the console is the only witness (microvm has no pvpanic
// device an ACPI-less kernel can find).
func findConsolePanic(consoleLog string) string {
	if consoleLog == "" {
		return ""
	}
	b := readTail(consoleLog, 64<<10)
	i := bytes.LastIndex(b, panicMarker)
	if i < 0 {
		return ""
	}
	line := b[i:]
	if j := bytes.IndexAny(line, "\r\n"); j >= 0 {
		line = line[:j]
	}
	if len(line) > 200 {
		line = line[:200]
	}
	return strings.ToValidUTF8(string(line), "?")
}
