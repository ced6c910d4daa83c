package tests

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// An interrupt while run pulls a missing image ends vmctl with 130 and
// one line saying so, as an interrupt later in the boot does, not with a
// transport error about a canceled context. The registry is a local
// listener that accepts and never answers, so the pull is still waiting
// when the signal comes.
func TestRunInterruptedDuringPull(t *testing.T) {
	e := e2e(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	must(t, shareLoopbackAddr(l.Addr().String()))
	var held sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	held.Add(1)
	go func() {
		defer held.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		l.Close()
		held.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	image := l.Addr().String() + "/stalled:1"

	interrupt := func(t *testing.T, c *exec.Cmd) {
		var stderr strings.Builder
		c.Stderr = &stderr
		must(t, c.Start())
		waitFor(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(conns) > 0
		}, "the pull to reach the stalled registry")
		must(t, c.Process.Signal(syscall.SIGINT))
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Errorf("exit: %v, want status 130; stderr %q", err, stderr.String())
		}
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.Contains(last, "interrupted") || strings.Contains(last, "context canceled") {
			t.Errorf("last stderr line %q, want one saying the run was interrupted", last)
		}
	}
	t.Run("in process", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		before := e.containerCount(t)
		interrupt(t, e.cmd(ctx, "run", "--rm", image, "true"))
		e.checkClean(t, before)
	})
	t.Run("through a daemon", func(t *testing.T) {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		d := startDaemon(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		interrupt(t, clientCmd(ctx, e, nil, "-H", d.host(), "run", "--rm", image, "true"))
	})
}
