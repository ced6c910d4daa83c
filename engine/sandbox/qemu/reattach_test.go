package qemu

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// forget makes a started VM look like one whose engine process died: the
// agent connection (and listener, for a client-mode QEMU) and the QMP
// connection go, QEMU keeps running. The reaper of the original VM still reaps QEMU in the end (it is
// this process's child), as init would after a real crash.
func forget(v *vm, agentConn interface{ Close() error }) {
	agentConn.Close()
	if v.agentLn != nil {
		v.agentLn.Close()
	}
	v.closeMonitor()
}

// startForgotten boots a detached VM, checks its agent channel, and
// forgets it.
func startForgotten(t *testing.T) (*Driver, sandbox.Config, *vm) {
	t.Helper()
	_, cfg := needVM(t)
	d, err := New(Options{Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	old := sb.(*vm)
	t.Cleanup(func() { old.kill(); <-old.done })
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	echo(t, conn, bufio.NewReader(conn), "before")
	forget(old, conn)
	return d, cfg, old
}

func TestReattachAgentQMPAndExit(t *testing.T) {
	d, cfg, old := startForgotten(t)
	pid := old.Pid()

	sb, err := d.Reattach(ctxTimeout(t, 30*time.Second), cfg, pid)
	if err != nil {
		t.Fatalf("Reattach: %v", err)
	}
	defer sb.Destroy()
	if sb.Pid() != pid || sb.ID() != cfg.ID {
		t.Errorf("Pid, ID = %d, %q; want %d, %q", sb.Pid(), sb.ID(), pid, cfg.ID)
	}
	v := sb.(*vm)
	v.mu.Lock()
	connected := v.dom != nil
	v.mu.Unlock()
	if !connected {
		t.Error("QMP not reconnected after Reattach")
	}
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent after Reattach: %v", err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	echo(t, conn, r, "after")

	// The guest reboots: QEMU exits; the adopted VM notices through its
	// pidfd and classifies the exit from QMP's SHUTDOWN event.
	conn.Write([]byte("reboot\n"))
	exit, err := sb.Wait(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Reason != sandbox.ExitShutdown || exit.Detail != "guest rebooted" {
		t.Errorf("Wait() = %+v, want shutdown, guest rebooted", exit)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	<-old.exited
	assertGone(t, pid, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
}

func TestReattachThenStop(t *testing.T) {
	d, cfg, old := startForgotten(t)
	pid := old.Pid()
	sb, err := d.Reattach(ctxTimeout(t, 30*time.Second), cfg, pid)
	if err != nil {
		t.Fatalf("Reattach: %v", err)
	}
	defer sb.Destroy()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sb.Stop(done); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	exit, err := sb.Wait(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Reason != sandbox.ExitKilled {
		t.Errorf("Wait() after Stop = %+v, want killed", exit)
	}
	if err := sb.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	<-old.exited
	assertGone(t, pid, cfg.StateDir)
	assertNoStateDir(t, cfg.StateDir)
}

// Reattach refuses what is not the VM's QEMU, and leaves it alone.
func TestReattachRefuses(t *testing.T) {
	dir, err := os.MkdirTemp("", "vmq")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	d := &Driver{binary: Binary, accel: "tcg", detach: true}
	tests := []struct {
		name    string
		cfg     sandbox.Config
		pid     int
		wantErr string
	}{
		{"another process", sandbox.Config{ID: "x", StateDir: dir}, os.Getpid(), "is not the QEMU of this VM"},
		{"no such process", sandbox.Config{ID: "x", StateDir: dir}, 1 << 30, "QEMU process"},
		{"invalid pid", sandbox.Config{ID: "x", StateDir: dir}, 0, "invalid pid"},
		{"relative state dir", sandbox.Config{ID: "x", StateDir: "vm"}, os.Getpid(), "absolute state directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, err := d.Reattach(context.Background(), tt.cfg, tt.pid)
			if err == nil {
				sb.Destroy()
				t.Fatalf("Reattach(%+v, %d) succeeded, want error %q", tt.cfg, tt.pid, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Reattach(%+v, %d) = %v, want error containing %q", tt.cfg, tt.pid, err, tt.wantErr)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused Reattach left %d entries in the state dir", len(entries))
	}
}
