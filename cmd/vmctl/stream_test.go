package main

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// endOnSignal turns a termination signal into the end of the session's
// context, with the signal and its exit status reported.
func TestEndOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT} {
		ctx, received, stop := endOnSignal(context.Background())
		if received() != 0 {
			t.Errorf("received() = %v before any signal, want 0", received())
		}
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not end the session's context", sig)
		}
		if got := received(); got != sig {
			t.Errorf("received() = %v after %v", got, sig)
		}
		if se, ok := signalStatus(sig).(*statusError); !ok || se.code != 128+int(sig) || se.err != nil {
			t.Errorf("signalStatus(%v) = %v, want a silent status %d", sig, signalStatus(sig), 128+int(sig))
		}
		stop()
	}
	// stop without a signal ends the context and reports none.
	ctx, received, stop := endOnSignal(context.Background())
	stop()
	if ctx.Err() == nil || received() != 0 {
		t.Errorf("after stop: ctx.Err() = %v, received() = %v; want canceled and 0", ctx.Err(), received())
	}
}
