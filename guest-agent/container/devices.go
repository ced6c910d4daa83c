package container

// The device policy of a privileged container (docker run --privileged):
// where Docker gives such a container every device of its host, a
// container here gets every device of its VM, on mounts that allow them.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
)

// privileged says whether a container sees every device of its VM
// (contract.AnnotationPrivileged).
func privileged(s *specs.Spec) bool { return s.Annotations[contract.AnnotationPrivileged] == "true" }

// vmDevices lists the device nodes under dev (the guest's /dev) as spec
// devices at the same paths, for createDevices to make in a privileged
// container's /dev. Left out: what every container's /dev has already
// (populateDev's nodes and links, the console a terminal gets) and the
// directories of its own file systems.
func vmDevices(dev string) ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir(dev, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone while we looked
			}
			return err
		}
		rel, _ := filepath.Rel(dev, p)
		switch {
		case d.IsDir() && (rel == "pts" || rel == "shm" || rel == "mqueue"):
			return filepath.SkipDir
		case d.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0:
			return nil
		case rel == "console" || devLinks[rel] != "" || slices.ContainsFunc(devNodes, func(n devNode) bool { return n.name == rel }):
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("list devices: %w", err)
		}
		typ := "c"
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			typ = "b"
		}
		mode := os.FileMode(st.Mode & 0o7777)
		uid, gid := st.Uid, st.Gid
		out = append(out, specs.LinuxDevice{
			Path: "/dev/" + rel, Type: typ, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
			FileMode: &mode, UID: &uid, GID: &gid,
		})
		return nil
	})
	return out, err
}

// allowDevices clears nodev on the container's root (a bind of the
// storage's nodev overlay, in the init's mount namespace only), so that a
// privileged container may use a node it makes anywhere, as under Docker.
func allowDevices(rootfs string) error {
	flags := lockedFlags(rootfs) &^ unix.MS_NODEV
	var st unix.Statfs_t
	if err := unix.Statfs(rootfs, &st); err == nil && st.Flags&unix.ST_RDONLY != 0 {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", rootfs, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("allow devices on the rootfs: %w", err)
	}
	return nil
}
