package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `make install` puts the binaries, the guest files and the systemd units
// under PREFIX; the units are valid for systemd, and the installed vmctld,
// started the way vmctld.socket starts it (socket activation, -H fd://),
// finds its guest files and serves an installed vmctl that names no host.
func TestInstall(t *testing.T) {
	e := e2e(t)
	prefix := t.TempDir()
	mk := exec.Command("make", "install", "PREFIX="+prefix)
	mk.Dir = e.root
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"bin/vmctl", "bin/vmctld", "bin/vmctl-vmm", "bin/containerd-shim-vmctl-v1", "lib/vmctl/guest/vmlinuz",
		"lib/vmctl/guest/initramfs.img", "lib/systemd/system/vmctld.service", "lib/systemd/system/vmctld.socket"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("make install left no %s: %v", f, err)
		}
	}
	unit, err := os.ReadFile(filepath.Join(prefix, "lib/systemd/system/vmctld.service"))
	must(t, err)
	if want := "ExecStart=" + filepath.Join(prefix, "bin/vmctld") + " -H fd://\n"; !strings.Contains(string(unit), want) {
		t.Errorf("vmctld.service has no %q:\n%s", want, unit)
	}
	verify := exec.Command("systemd-analyze", "verify", filepath.Join(prefix, "lib/systemd/system/vmctld.service"),
		filepath.Join(prefix, "lib/systemd/system/vmctld.socket"))
	if out, err := verify.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Socket activation with the installed programs, as systemd does it:
	// the socket listens first, vmctld starts on the first client.
	dataRoot, err := os.MkdirTemp("", "vmctl-install-data-")
	must(t, err)
	defer os.RemoveAll(dataRoot)
	execRoot, err := os.MkdirTemp("", "vi")
	must(t, err)
	defer os.RemoveAll(execRoot)
	vmctl := filepath.Join(prefix, "bin/vmctl")
	load := exec.Command(vmctl, "--data-root", dataRoot, "--exec-root", execRoot, "load", "-i", filepath.Join(e.root, "build/busybox.tar"))
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("installed vmctl load: %v\n%s", err, out)
	}
	sock := filepath.Join(execRoot, "api.sock")
	act := exec.Command("systemd-socket-activate", "-l", sock, filepath.Join(prefix, "bin/vmctld"),
		"-H", "fd://", "--data-root", dataRoot, "--exec-root", execRoot)
	act.Env = append(os.Environ(), "VMCTL_KERNEL=", "VMCTL_INITRD=")
	var actOut strings.Builder
	act.Stdout, act.Stderr = &actOut, &actOut
	act.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, act.Start())
	defer func() {
		syscall.Kill(-act.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { act.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-act.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("the activated vmctld did not stop on SIGTERM: %s", actOut.String())
		}
	}()
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil }, "the activation socket")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := func(args ...string) result {
		c := exec.CommandContext(ctx, vmctl, args...)
		c.Env = append(os.Environ(), "VMCTL_HOST=", "VMCTL_DATA_ROOT=", "VMCTL_EXEC_ROOT=", "VMCTL_KERNEL=", "VMCTL_INITRD=",
			"VMCTL_DEFAULT_HOST=unix://"+sock)
		return capture(ctx, t, c, nil)
	}
	r := client("info")
	if r.code != 0 {
		t.Fatalf("info through the activated vmctld: exit %d\n%s%s\nvmctld: %s", r.code, r.stdout, r.stderr, actOut.String())
	}
	for _, want := range []string{"Daemon:         unix://" + sock, filepath.Join(prefix, "lib/vmctl/guest/vmlinuz"), dataRoot} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("info = %q, want it to show %s", r.stdout, want)
		}
	}
	if r := client("run", "--rm", "busybox", "echo", "activated"); r.code != 0 || r.stdout != "activated\n" {
		t.Errorf("run through the activated vmctld: exit %d, stdout %q, stderr %q\nvmctld: %s", r.code, r.stdout, r.stderr, actOut.String())
	}
}
