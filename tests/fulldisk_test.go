package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A host disk that fills under a container fails the container's writes
// (the guest sees I/O errors) instead of pausing its VM, where it would
// look up while nothing it writes goes anywhere; the error is logged once,
// not once per retried write.
func TestFullHostDiskFailsWrites(t *testing.T) {
	e := e2e(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=96m"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	execRoot, err := os.MkdirTemp("", "vfd")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(execRoot) })
	vm := func(ctx context.Context, args ...string) result {
		c := e.cmd(ctx, append([]string{"--data-root", filepath.Join(dir, "d"), "--exec-root", execRoot}, args...)...)
		return capture(ctx, t, c, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if r := vm(ctx, "load", "-i", filepath.Join(e.root, "build/busybox.tar")); r.code != 0 {
		t.Fatalf("load: %s", r.stderr)
	}
	r := vm(ctx, "run", "--rm", "--network", "none", "busybox", "sh", "-c",
		"dd if=/dev/zero of=/big bs=1M count=200 conv=fsync; echo dd=$?")
	if ctx.Err() != nil {
		t.Fatal("the container's VM hung on the full disk")
	}
	if r.code != 0 || r.stdout != "dd=1\n" || !strings.Contains(r.stderr, "Input/output error") {
		t.Errorf("write to a full host disk: exit %d, stdout %q, stderr %q; want dd to fail with an I/O error", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stderr, "disk I/O error reported to the guest"); n != 1 || !strings.Contains(r.stderr, "No space left on device") {
		t.Errorf("the engine logged the disk error %d times (want once, with its reason): %q", n, r.stderr)
	}
}
