package shim

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountRootfs puts the container's root file system at the bundle's rootfs
// directory: the mounts containerd's snapshotter prepared (an overlay of
// the image's layers with the container's own upper directory), or, with
// none, a rootfs the bundle brings itself. mounted says whether it mounted
// anything, which unmountRootfs must undo.
func mountRootfs(bundle string, spec *specs.Spec, mounts []*types.Mount) (rootfs string, mounted bool, err error) {
	rel := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		rel = spec.Root.Path
	}
	rootfs = rel
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rel)
	}
	if len(mounts) == 0 {
		st, err := os.Stat(rootfs)
		if err != nil || !st.IsDir() {
			return "", false, fmt.Errorf("%w: bundle %s has no rootfs: no mounts given and no directory %s", errdefs.ErrInvalidArgument, bundle, rootfs)
		}
		return rootfs, false, nil
	}
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return "", false, fmt.Errorf("create %s: %w", rootfs, err)
	}
	ms := make([]mount.Mount, 0, len(mounts))
	for _, m := range mounts {
		ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	if err := mount.All(ms, rootfs); err != nil {
		unmountRootfs(rootfs)
		return "", false, fmt.Errorf("%w: mount the rootfs: %v", errdefs.ErrInvalidArgument, err)
	}
	return rootfs, true, nil
}

// unmountRootfs unmounts everything on rootfs.
func unmountRootfs(rootfs string) error {
	if err := mount.UnmountRecursive(rootfs, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the rootfs %s: %w", rootfs, err)
	}
	return nil
}
