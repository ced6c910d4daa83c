package virtio

import (
	"log/slog"
	"sync"
	"time"
)

// Guest-caused problems are logged at most guestLogBurst times per
// guestLogWindow: a hostile guest can produce them as fast as it can kick
// a queue, and must not be able to flood the VMM's log or disk.
const (
	guestLogBurst  = 10
	guestLogWindow = time.Minute
)

var guestLog struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

// LogGuestError logs a problem caused by guest input (a malformed chain or
// request) at warning level, rate-limited; suppressed messages are counted
// in the next one that gets through.
func LogGuestError(msg string, args ...any) {
	guestLog.mu.Lock()
	now := time.Now()
	if now.Sub(guestLog.start) > guestLogWindow {
		guestLog.start, guestLog.n = now, 0
	}
	guestLog.n++
	if guestLog.n > guestLogBurst {
		guestLog.suppressed++
		guestLog.mu.Unlock()
		return
	}
	if guestLog.suppressed > 0 {
		args = append(args, "suppressed", guestLog.suppressed)
		guestLog.suppressed = 0
	}
	guestLog.mu.Unlock()
	slog.Warn(msg, args...)
}
