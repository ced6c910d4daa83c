package vmm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// TestReattachChecksTheProcess: only the vmctl-vmm whose control socket is
// in the VM's state directory is adopted; a recycled pid running something
// else, another VM's VMM or a gone process is refused and left alone.
func TestReattachChecksTheProcess(t *testing.T) {
	dir := t.TempDir()
	ours := filepath.Join(dir, "c1", "vmm.sock")
	start := func(argv0 string, args ...string) *exec.Cmd {
		t.Helper()
		// A shell standing in for the VMM: what counts is its command line.
		cmd := &exec.Cmd{Path: "/bin/sh", Args: append([]string{argv0, "-c", "sleep 100; true"}, args...)}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The group goes too: the shell's sleep would outlive it.
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		waitExec(t, cmd.Process.Pid, argv0)
		return cmd
	}
	vmmPath := filepath.Join(dir, "bin", Binary)
	tests := []struct {
		name    string
		cmd     *exec.Cmd
		wantErr string // empty: the command line is accepted
	}{
		{"our VMM", start(vmmPath, "-control", ours), ""},
		{"another VM's VMM", start(vmmPath, "-control", filepath.Join(dir, "c2", "vmm.sock")), "not the vmctl-vmm of this VM"},
		{"the socket as another flag's value", start(vmmPath, "-console", ours), "not the vmctl-vmm of this VM"},
		{"another program", start("/bin/sh", "-control", ours), "is not vmctl-vmm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, err := sandbox.ProcessArgs(tt.cmd.Process.Pid)
			if err == nil {
				err = checkOwnVMM(tt.cmd.Process.Pid, args, ours)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkOwnVMM = %v, want accepted", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkOwnVMM = %v, want an error containing %q", err, tt.wantErr)
			}
			// Reattach refuses it and leaves the process running.
			d := &Driver{binary: vmmPath, detach: true}
			if _, err := d.Reattach(context.Background(), sandbox.Config{ID: "c1", StateDir: filepath.Dir(ours)}, tt.cmd.Process.Pid); err == nil {
				t.Fatal("Reattach adopted a process that is not this VM's VMM")
			}
			if tt.cmd.ProcessState != nil {
				t.Fatal("Reattach ended the process it refused")
			}
		})
	}
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	d := &Driver{binary: vmmPath, detach: true}
	if _, err := d.Reattach(context.Background(), sandbox.Config{ID: "c1", StateDir: filepath.Dir(ours)}, gone.Process.Pid); err == nil {
		t.Fatal("Reattach adopted a process that has ended")
	}
}

// TestReattachNeedsTheControlSocket: our VMM's process, but nothing serves
// its control socket: refused, and the process is ended (the caller records
// the container as ended and could otherwise boot a second VM on its disk).
func TestReattachNeedsTheControlSocket(t *testing.T) {
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "c1")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(stateDir, "vmm.sock")
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{filepath.Join(dir, Binary), "-c", "sleep 100; true", "-control", sock}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waited
	}()
	waitExec(t, cmd.Process.Pid, cmd.Args[0])
	d := &Driver{binary: cmd.Args[0], detach: true}
	_, err := d.Reattach(context.Background(), sandbox.Config{ID: "c1", StateDir: stateDir}, cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), "vmm.sock") {
		t.Fatalf("Reattach without a control server = %v, want an error naming the socket", err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the VMM that could not be adopted still runs")
	}
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir of the ended VM left behind (stat: %v)", err)
	}
}

// waitExec waits until process pid has executed its program (its command
// line starts with argv0): right after Start, the child may still be the
// forked copy of this test binary.
func waitExec(t *testing.T, pid int, argv0 string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if strings.HasPrefix(string(b), argv0+"\x00") {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("process %d did not exec %s", pid, argv0)
}
