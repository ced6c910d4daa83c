package pid1

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

var (
	logMu  sync.Mutex
	logOut io.Writer = os.Stderr
)

// OpenLog sends Logf output to the kernel log (/dev/kmsg), where the host
// sees it on the serial console, falling back to /dev/console and stderr.
// It returns a writer for other loggers (the ttrpc library's) that adds the
// same "vmctl-agent: " prefix to each line.
func OpenLog() io.Writer {
	openLog()
	return prefixWriter{}
}

// prefixWriter sends each line through Logf's output with its prefix.
type prefixWriter struct{}

func (prefixWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(logOut, "vmctl-agent: "+line); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func openLog() {
	logMu.Lock()
	defer logMu.Unlock()
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		// <3> is KERN_ERR: shown on the console even with "quiet", which
		// hides the default (warning) level.
		logOut = &lineWriter{w: f, prefix: "<3>"}
		return
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		logOut = &lineWriter{w: f}
	}
}

// Logf logs one line with the "vmctl-agent:" prefix. The agent is quiet on
// success paths: log only errors and things an operator must know.
func Logf(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	logMu.Lock()
	defer logMu.Unlock()
	fmt.Fprintf(logOut, "vmctl-agent: %s\n", msg)
}

// lineWriter writes each line with its own write(2): /dev/kmsg takes one
// record per write.
type lineWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(l.w, l.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
