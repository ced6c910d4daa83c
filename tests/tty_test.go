package tests

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// `vmctl run -it` driven through a real pty: the container gets a terminal
// of the size the user's terminal has, and follows resizes.
func TestInteractiveTerminal(t *testing.T) {
	e := e2e(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	driveTerminal(t, e.cmd(ctx, "run", "-i", "-t", "--rm", "busybox", "sh"))
}

// driveTerminal runs c (a `vmctl run -i -t ... sh`) on a real pty: the
// shell is on a /dev/pts terminal of the pty's size, follows a resize
// (SIGWINCH), and its exit status is vmctl's.
func driveTerminal(t *testing.T, c *exec.Cmd) {
	t.Helper()
	c.SysProcAttr = nil // pty.Start makes its own session
	ptmx, err := pty.StartWithSize(c, &pty.Winsize{Rows: 33, Cols: 101})
	must(t, err)
	defer ptmx.Close()

	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
	waitFor := func(re *regexp.Regexp) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			if re.MatchString(output()) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Process.Kill()
		t.Fatalf("timed out waiting for %v; output so far: %q", re, output())
	}
	waitFor(regexp.MustCompile(`/ [#$] `)) // the shell's prompt (busybox then asks for the cursor position)
	io.WriteString(ptmx, "tty; stty size; echo marker-$((40+2))\r")
	waitFor(regexp.MustCompile(`marker-42`))
	got := output()
	if !regexp.MustCompile(`/dev/pts/\d+`).MatchString(got) {
		t.Errorf("tty did not print a /dev/pts path: %q", got)
	}
	if !strings.Contains(got, "33 101") {
		t.Errorf("stty size did not print 33 101: %q", got)
	}
	must(t, pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}))
	time.Sleep(500 * time.Millisecond)
	io.WriteString(ptmx, "stty size; echo resized-$((1+1))\r")
	waitFor(regexp.MustCompile(`resized-2`))
	if got := output(); !strings.Contains(got, "40 120") {
		t.Errorf("after resize stty size did not print 40 120: %q", got)
	}
	io.WriteString(ptmx, "exit 5\r")
	err = c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
		t.Errorf("exit: %v, want status 5", err)
	}
}
