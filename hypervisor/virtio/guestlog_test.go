package virtio

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogGuestErrorIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(old)
	guestLog.mu.Lock()
	guestLog.n, guestLog.suppressed = 0, 0
	guestLog.mu.Unlock()

	for range 3 * guestLogBurst {
		LogGuestError("bad chain")
	}
	if got := strings.Count(buf.String(), "bad chain"); got != guestLogBurst {
		t.Fatalf("%d messages logged out of %d, want %d", got, 3*guestLogBurst, guestLogBurst)
	}
	guestLog.mu.Lock()
	guestLog.start = guestLog.start.Add(-2 * guestLogWindow) // the window has passed
	guestLog.mu.Unlock()
	LogGuestError("bad chain")
	if !strings.Contains(buf.String(), "suppressed=20") {
		t.Fatalf("the first message of a new window does not report the 20 suppressed: %s", buf.String())
	}
}
