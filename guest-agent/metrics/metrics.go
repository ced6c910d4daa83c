// Package metrics reads what the host shows of a running container: its
// processes (ListProcesses: /proc of every process in its cgroup) and its
// resource statistics (Stats: the cgroup v2 interface files, the guest's
// CPU time from /proc/stat, and the counters of the container's network
// namespace from /proc/PID/net/dev). It answers with the agent API's
// messages, bounded by api/agent/contract.
//
// Everything it reads is the guest kernel's, except the container's
// /etc/passwd (user names), which it opens inside the container's root with
// openat2(RESOLVE_IN_ROOT) and reads only as a small regular file. Reading
// never blocks on the container: a frozen (paused) container is read as
// any other.
//
// It does not find containers (see container) nor speak ttrpc (see
// service).
package metrics

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Source is where one container's processes and statistics are read.
type Source struct {
	// Cgroup is the container's cgroup v2 directory.
	Cgroup string
	// InitPid is the container's init in the guest's pid namespace; 0
	// when it is gone.
	InitPid int
	// Proc and Sys are the guest's procfs and sysfs; empty means /proc
	// and /sys. Tests point them at testdata.
	Proc, Sys string
	// Now is the wall clock and Uptime the time since boot
	// (CLOCK_BOOTTIME, the clock of /proc/PID/stat's start times); nil
	// means the real ones.
	Now    func() time.Time
	Uptime func() time.Duration
}

func (s Source) proc(parts ...string) string {
	root := s.Proc
	if root == "" {
		root = "/proc"
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

func (s Source) sys(parts ...string) string {
	root := s.Sys
	if root == "" {
		root = "/sys"
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

func (s Source) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s Source) uptime() time.Duration {
	if s.Uptime != nil {
		return s.Uptime()
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// userHZ is the unit of the times in /proc/PID/stat and /proc/stat
// (USER_HZ, 100 on every architecture the guest runs on).
const userHZ = 100

func ticks(n uint64) time.Duration { return time.Duration(n) * (time.Second / userHZ) }

// readLimited reads at most max bytes of a file: what /proc and cgroupfs
// files need (their sizes read as 0 or 4096), and what a file a container
// could have made large must not exceed.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAll(f, max)
}

func readAll(r io.Reader, max int64) ([]byte, error) { return io.ReadAll(io.LimitReader(r, max)) }

// smallFile is the most a cgroup or /proc file this package reads may
// hold (memory.stat is about 1.5 KiB, /proc/PID/status about 1.5 KiB,
// /proc/stat grows with the CPUs: about 150 bytes each).
const smallFile = 256 << 10

// text makes a string the guest read fit for a protobuf string, which
// must be UTF-8: invalid bytes become U+FFFD. The host decides how to show
// control characters.
func text(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// cut shortens s to at most n bytes on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func parseUint(field string) (uint64, error) {
	n, err := strconv.ParseUint(field, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a number: %q", cut(field, 32))
	}
	return n, nil
}
