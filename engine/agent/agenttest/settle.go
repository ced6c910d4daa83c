package agenttest

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// SettleGoroutines fails the test unless the goroutine count comes back to
// base within the given time: what a hostile agent made the engine start
// must end with the connection. The goroutines left are listed.
func SettleGoroutines(t testing.TB, base int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			var stacks bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Errorf("%d goroutines left, %d before; they are:\n%s", runtime.NumGoroutine(), base, stacks.String())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
