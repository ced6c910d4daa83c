// Package trace records CLOCK_MONOTONIC timestamps of the steps between the
// agent's start and a container's first output, and prints them as a table
// on the console when the kernel command line carries contract.TraceFlag
// (api/agent/contract). It is
// how the in-guest part of a container's start is measured; with the flag
// absent, recording is off and costs one branch per step.
//
// Timestamps are CLOCK_MONOTONIC, the clock the kernel's own console
// timestamps approximate, so they compare across processes (the container
// init reports its marks to the agent) and with the kernel's boot messages.
//
// It does not decide what is measured (callers name their steps) and keeps
// no history beyond the marks not yet printed.
package trace

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Mark is one step: its name and when it ended.
type Mark struct {
	Name string `json:"n"`
	// At is CLOCK_MONOTONIC in nanoseconds.
	At int64 `json:"t"`
}

var (
	enabled atomic.Bool
	mu      sync.Mutex // guards marks
	marks   []Mark
)

// Enable turns recording on or off.
func Enable(on bool) { enabled.Store(on) }

// Enabled reports whether marks are recorded.
func Enabled() bool { return enabled.Load() }

// Now is CLOCK_MONOTONIC in nanoseconds.
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// Step records that the named step has just ended.
func Step(name string) {
	if !enabled.Load() {
		return
	}
	Add(Mark{Name: name, At: Now()})
}

// Add records marks taken elsewhere (the container init's).
func Add(ms ...Mark) {
	if !enabled.Load() {
		return
	}
	mu.Lock()
	marks = append(marks, ms...)
	mu.Unlock()
}

// Take returns the recorded marks and forgets them.
func Take() []Mark {
	mu.Lock()
	defer mu.Unlock()
	out := marks
	marks = nil
	return out
}

// Table formats marks in time order, one per line: the monotonic time in
// milliseconds, the time since the previous mark, and the step name.
func Table(ms []Mark) string {
	ms = append([]Mark(nil), ms...)
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].At < ms[j].At })
	var b strings.Builder
	for i, m := range ms {
		delta := 0.0
		if i > 0 {
			delta = float64(m.At-ms[i-1].At) / 1e6
		}
		fmt.Fprintf(&b, "trace %9.1f ms %+8.1f ms  %s\n", float64(m.At)/1e6, delta, m.Name)
	}
	return b.String()
}
