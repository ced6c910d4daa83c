package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// forwardResize sends the terminal size of fd now and on every SIGWINCH,
// to the in-process engine or a daemon alike. It returns the stop function.
func forwardResize(fd int, resize func(rows, cols uint16)) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	// The size may have changed since create: ask for it once now. A
	// SIGWINCH that came since Notify may already fill the channel (and
	// asks the same); a plain send would then block forever.
	select {
	case ch <- syscall.SIGWINCH:
	default:
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if w, h, err := term.GetSize(fd); err == nil {
					resize(uint16(h), uint16(w))
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

// forwardSignals proxies the signals a user sends vmctl to the container's
// process, as docker run does. The container's PID 1 ignores signals it has
// no handler for, so a third Ctrl-C kills it. It returns the stop function.
func forwardSignals(kill func(syscall.Signal)) func() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		interrupts := 0
		for {
			select {
			case s := <-ch:
				sig := s.(syscall.Signal)
				if sig == syscall.SIGINT {
					interrupts++
					if interrupts == 3 {
						fmt.Fprintln(os.Stderr, "vmctl: third interrupt, killing the container")
						sig = syscall.SIGKILL
					}
				}
				kill(sig)
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
