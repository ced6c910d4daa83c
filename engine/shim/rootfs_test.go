package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// isMountPoint reports whether path is a mount point of this process's
// mount namespace.
func isMountPoint(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func TestMountRootfsWithoutMounts(t *testing.T) {
	t.Run("no rootfs directory", func(t *testing.T) {
		bundle := t.TempDir()
		rootfs, mounted, err := mountRootfs(bundle, &specs.Spec{Root: &specs.Root{Path: "rootfs"}}, nil)
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "has no rootfs") {
			t.Fatalf("mountRootfs = %q, %v, %v; want errdefs.ErrInvalidArgument saying the bundle has no rootfs", rootfs, mounted, err)
		}
		if rootfs != "" || mounted {
			t.Errorf("mountRootfs = %q, mounted %v on error; want \"\", false", rootfs, mounted)
		}
		if got := entries(t, bundle); len(got) != 0 {
			t.Errorf("the bundle holds %q after the refusal: want nothing created", got)
		}
	})
	t.Run("rootfs a file", func(t *testing.T) {
		bundle := t.TempDir()
		if err := os.WriteFile(filepath.Join(bundle, "rootfs"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := mountRootfs(bundle, &specs.Spec{}, []*types.Mount{}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("mountRootfs with rootfs a file = %v, want errdefs.ErrInvalidArgument", err)
		}
	})
	t.Run("the bundle's rootfs", func(t *testing.T) {
		bundle := t.TempDir()
		want := filepath.Join(bundle, "rootfs")
		if err := os.Mkdir(want, 0o755); err != nil {
			t.Fatal(err)
		}
		// No root in the spec: the default, "rootfs".
		rootfs, mounted, err := mountRootfs(bundle, &specs.Spec{}, nil)
		if err != nil || rootfs != want || mounted {
			t.Errorf("mountRootfs = %q, mounted %v, %v; want %q, not mounted", rootfs, mounted, err, want)
		}
	})
	t.Run("a relative root path of the spec's", func(t *testing.T) {
		bundle := t.TempDir()
		want := filepath.Join(bundle, "fs", "root")
		if err := os.MkdirAll(want, 0o755); err != nil {
			t.Fatal(err)
		}
		rootfs, mounted, err := mountRootfs(bundle, &specs.Spec{Root: &specs.Root{Path: "fs/root"}}, nil)
		if err != nil || rootfs != want || mounted {
			t.Errorf("mountRootfs = %q, mounted %v, %v; want %q, not mounted", rootfs, mounted, err, want)
		}
	})
	t.Run("an absolute root path", func(t *testing.T) {
		bundle, elsewhere := t.TempDir(), t.TempDir()
		rootfs, mounted, err := mountRootfs(bundle, &specs.Spec{Root: &specs.Root{Path: elsewhere}}, nil)
		if err != nil || rootfs != elsewhere || mounted {
			t.Errorf("mountRootfs = %q, mounted %v, %v; want %q, not mounted", rootfs, mounted, err, elsewhere)
		}
	})
}

// The snapshotter's mounts, as containerd passes them: a bind mount here
// (an overlay needs layers), mounted on the bundle's rootfs and undone by
// unmountRootfs.
func TestMountRootfsMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: mounting the rootfs needs CAP_SYS_ADMIN")
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "marker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := t.TempDir()
	want := filepath.Join(bundle, "rootfs")
	t.Cleanup(func() { unix.Unmount(want, unix.MNT_DETACH) })
	rootfs, mounted, err := mountRootfs(bundle, &specs.Spec{Root: &specs.Root{Path: "rootfs"}},
		[]*types.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "rw"}}})
	if err != nil || rootfs != want || !mounted {
		t.Fatalf("mountRootfs = %q, mounted %v, %v; want %q, mounted", rootfs, mounted, err, want)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "marker")); err != nil {
		t.Errorf("the rootfs does not show the mount's content: %v", err)
	}
	if err := unmountRootfs(rootfs); err != nil {
		t.Fatalf("unmountRootfs = %v", err)
	}
	if isMountPoint(t, rootfs) {
		t.Errorf("%s is still a mount point after unmountRootfs", rootfs)
	}
	if _, err := os.Stat(filepath.Join(src, "marker")); err != nil {
		t.Errorf("unmountRootfs touched the mount's source: %v", err)
	}
	// Nothing mounted: nothing to do.
	if err := unmountRootfs(rootfs); err != nil {
		t.Errorf("unmountRootfs of a directory without mounts = %v, want nil", err)
	}

	// A mount that fails leaves no mount behind.
	bundle = t.TempDir()
	_, mounted, err = mountRootfs(bundle, &specs.Spec{}, []*types.Mount{{Type: "bind", Source: filepath.Join(src, "no-such-dir"), Options: []string{"rbind"}}})
	if err == nil || mounted || !errdefs.IsInvalidArgument(err) {
		t.Errorf("mountRootfs of a missing source = mounted %v, %v; want errdefs.ErrInvalidArgument, not mounted", mounted, err)
	}
	if isMountPoint(t, filepath.Join(bundle, "rootfs")) {
		t.Errorf("a failed mountRootfs left a mount on %s", filepath.Join(bundle, "rootfs"))
	}
}
