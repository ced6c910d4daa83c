package hostfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Extended attributes: user.* pass through both ways; trusted.* (where
// host services such as overlayfs keep state) are neither shown nor set;
// a read-only share sets nothing.
func TestXattrs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(file, "user.host", []byte("h"), 0); err != nil {
		t.Skipf("this file system takes no user xattrs: %v", err)
	}
	trusted := unix.Setxattr(file, "trusted.overlay.x", []byte("y"), 0) == nil
	for _, ro := range []bool{false, true} {
		fs, err := New(dir, Options{ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		root, err := fs.Attach()
		if err != nil {
			t.Fatal(err)
		}
		_, f, err := root.Walk([]string{"f"})
		if err != nil {
			t.Fatal(err)
		}
		if v, err := f.GetXattr("user.host"); err != nil || string(v) != "h" {
			t.Errorf("GetXattr(user.host) = %q, %v", v, err)
		}
		err = f.SetXattr("user.guest", []byte("g"), 0)
		if ro != (err != nil) {
			t.Errorf("read-only %v: SetXattr(user.guest) = %v", ro, err)
		}
		if err := f.SetXattr("trusted.overlay.opaque", []byte("y"), 0); err == nil {
			t.Error("the guest set a trusted.* attribute")
		}
		names, err := f.ListXattrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.") {
				t.Errorf("the guest sees %s", n)
			}
		}
		if trusted {
			if _, err := f.GetXattr("trusted.overlay.x"); err == nil {
				t.Error("the guest read trusted.overlay.x")
			}
		}
		f.Close()
		root.Close()
		fs.Close()
	}
	buf := make([]byte, 8)
	if n, err := unix.Getxattr(file, "user.guest", buf); err != nil || string(buf[:n]) != "g" {
		t.Errorf("the host reads user.guest = %v", err)
	}
}

// A guest that keeps walking without clunking runs out of nodes (EMFILE),
// not the VMM out of descriptors; closing gives them back.
func TestNodesAreBounded(t *testing.T) {
	fs, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	root, err := fs.Attach()
	if err != nil {
		t.Fatal(err)
	}
	var held []interface{ Close() error }
	var walkErr error
	for i := 0; i <= MaxNodes; i++ {
		_, f, err := root.Walk(nil)
		if err != nil {
			walkErr = err
			break
		}
		held = append(held, f)
	}
	if walkErr != unix.EMFILE || len(held) != MaxNodes-1 {
		t.Fatalf("after %d nodes: %v, want EMFILE after %d", len(held), walkErr, MaxNodes-1)
	}
	for _, f := range held {
		f.Close()
	}
	if _, f, err := root.Walk(nil); err != nil {
		t.Errorf("after closing, a walk fails: %v", err)
	} else {
		f.Close()
	}
	root.Close()
	if n := fs.nodes.Load(); n != 0 {
		t.Errorf("%d nodes counted after everything closed", n)
	}
}

// Times are set on the node itself, a symlink's included (tar and cp -a
// set them), never on what a symlink points to.
func TestSetTimesOfSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	var before unix.Stat_t
	unix.Stat(target, &before)
	fs, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	root, _ := fs.Attach()
	_, f, err := root.Walk([]string{"link"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetAttr(p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: 1234}); err != nil {
		t.Fatal(err)
	}
	var link, after unix.Stat_t
	unix.Lstat(filepath.Join(dir, "link"), &link)
	unix.Stat(target, &after)
	if link.Mtim.Sec != 1234 || after.Mtim != before.Mtim {
		t.Errorf("symlink mtime %d (want 1234), target's changed: %v", link.Mtim.Sec, after.Mtim != before.Mtim)
	}
}
