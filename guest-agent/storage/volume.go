package storage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// volumeData is the directory on a volume's filesystem that the container
// sees. Keeping the data one level down hides lost+found and tells a
// volume's first use (no such directory yet) from later ones.
const volumeData = "_data"

// ValidateMountPoint checks where a volume goes in the container: an
// absolute, clean path other than "/", without "..", NUL or newline. The
// container runtime resolves it inside the rootfs (symlinks included) when
// it mounts, so this only rejects what cannot be meant.
func ValidateMountPoint(p string) error {
	switch {
	case !path.IsAbs(p):
		return fmt.Errorf("%w: volume mount point %q is not absolute", ErrInvalid, p)
	case strings.ContainsAny(p, "\x00\n"):
		return fmt.Errorf("%w: volume mount point %q contains a NUL or newline", ErrInvalid, p)
	case p == "/":
		return fmt.Errorf("%w: a volume cannot be mounted on /", ErrInvalid)
	case path.Clean(p) != p:
		return fmt.Errorf("%w: volume mount point %q is not clean", ErrInvalid, p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("%w: volume mount point %q contains ..", ErrInvalid, p)
		}
	}
	return nil
}

// volumeDir is where a volume's filesystem is mounted in the guest.
func (m *Manager) volumeDir(id string, d Disk) string {
	return filepath.Join(m.Dir(id), "volume-"+d.Serial)
}

// mountVolume mounts a volume's filesystem read-write (a read-only mount of
// an ext4 whose journal needs replaying fails, and the data directory may
// have to be created), then prepares its data directory. The container's
// view is made read-only by its bind mount (Binds).
func (m *Manager) mountVolume(id string, d Disk, rootfs string) error {
	target := m.volumeDir(id, d)
	d.ReadOnly = false
	if err := m.mountDisk(d, target); err != nil {
		return err
	}
	return prepareVolumeData(target, rootfs, d.MountPoint)
}

// prepareVolumeData creates the volume's data directory on first use and,
// as docker does, fills it with what the image has at the mount point
// (the directory's owner and mode included). It goes through a temporary
// directory, a sync and a rename, so an interrupted copy is redone next
// time.
func prepareVolumeData(volRoot, rootfs, mountPoint string) error {
	data := filepath.Join(volRoot, volumeData)
	if _, err := os.Lstat(data); err == nil {
		return nil
	}
	tmp := filepath.Join(volRoot, volumeData+".tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("volume at %s: %w", mountPoint, err)
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("volume at %s: %w", mountPoint, err)
	}
	src, err := openInRoot(rootfs, mountPoint)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		// Nothing in the image there: the volume starts empty.
	case err != nil:
		return fmt.Errorf("volume at %s: open the image's directory: %w", mountPoint, err)
	default:
		defer src.Close()
		// /proc/self/fd/N names the directory the kernel resolved inside
		// the rootfs; below it, copyTree never follows a symlink.
		from := "/proc/self/fd/" + strconv.Itoa(int(src.Fd()))
		if err := copyTree(from, tmp); err != nil {
			return fmt.Errorf("volume at %s: copy the image's content in: %w", mountPoint, err)
		}
		if err := copyMeta(from+"/.", tmp); err != nil {
			return fmt.Errorf("volume at %s: %w", mountPoint, err)
		}
	}
	// The copy must be on the disk before the rename says it is complete:
	// ext4 can commit the rename before delayed-allocation data, and a VM
	// ended then would leave a _data of empty files that is never redone.
	if err := syncFS(volRoot); err != nil {
		return fmt.Errorf("volume at %s: %w", mountPoint, err)
	}
	if err := os.Rename(tmp, data); err != nil {
		return fmt.Errorf("volume at %s: %w", mountPoint, err)
	}
	return nil
}

// syncFS flushes the file system that holds dir.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// openInRoot opens the directory p as if rootfs were "/": the kernel
// resolves every symlink and ".." inside rootfs (openat2 RESOLVE_IN_ROOT),
// so an image's symlink cannot point the copy at the guest's own files.
func openInRoot(rootfs, p string) (*os.File, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(root, strings.TrimPrefix(p, "/"), how)
	// A rename or mount anywhere in the system during the lookup makes the
	// kernel give up on it with EAGAIN (openat2(2)); retrying gets past it.
	for try := 0; err == unix.EAGAIN && try < 16; try++ {
		fd, err = unix.Openat2(root, strings.TrimPrefix(p, "/"), how)
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

// copyTree copies the content of directory src into the existing directory
// dst: directories, regular files, symlinks (as links), device nodes and
// fifos, with owner, mode and modification time. Sockets are skipped.
// Extended attributes are not copied.
func copyTree(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(s, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
			if err := copyTree(s, d); err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := copyFile(s, d); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(s)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, d); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
			if err := unix.Mknod(d, st.Mode, int(st.Rdev)); err != nil {
				return err
			}
		default:
			continue
		}
		if err := copyMeta(s, d); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyMeta gives dst the owner, permission bits and times of src, without
// following a symlink at either end. The owner goes first: chown clears
// the set-id bits.
func copyMeta(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", dst, err)
	}
	return nil
}

// shareDir is where a bind share is mounted in the guest.
func (m *Manager) shareDir(id string, d Disk) string {
	if d.Subdir != "" {
		return filepath.Join(m.Dir(id), "share-"+d.Serial+"-"+d.Subdir)
	}
	return filepath.Join(m.Dir(id), "share-"+d.Serial)
}

// mountShare mounts a host directory shared over virtio-fs or virtio-9p
// (d.FSType), found by its tag (the disk's serial). A read-only share is
// mounted read-only; the host refuses changes to it as well. Unlike a
// volume, it is not filled from the image: the host's directory is what
// the container sees, as with docker's bind mounts.
func (m *Manager) mountShare(id string, d Disk) error {
	target := m.shareDir(id, d)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if d.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	opts := d.Options
	if d.FSType == "9p" {
		opts = append(append([]string(nil), contract.BindMountOptions9P...), d.Options...)
	}
	if err := unix.Mount(d.Serial, target, d.FSType, flags, strings.Join(opts, ",")); err != nil {
		return fmt.Errorf("mount the shared directory for %s (tag %s): %w", d.MountPoint, d.Serial, err)
	}
	trace.Step("storage: mounted share " + d.Serial)
	return nil
}

// Binds returns the bind mounts that put the container's volumes and bind
// shares (mounted by Mount) at their mount points, for the container's OCI
// spec. The
// container runtime resolves each destination inside the rootfs and
// creates it if missing. They come parents first (fewer path components
// first, as docker orders mounts): a bind on /a made after one on /a/b
// would hide the volume at /a/b.
func (m *Manager) Binds(id string, disks []Disk) []specs.Mount {
	var out []specs.Mount
	for _, d := range disks {
		var src string
		switch d.Role {
		case contract.RoleVolume:
			src = filepath.Join(m.volumeDir(id, d), volumeData)
		case contract.RoleBind:
			// The share's subdir, or the share itself.
			src = filepath.Join(m.shareDir(id, d), d.Subdir)
		default:
			continue
		}
		opts := []string{"rbind"}
		if d.ReadOnly {
			opts = append(opts, "ro")
		}
		out = append(out, specs.Mount{Destination: d.MountPoint, Type: "bind", Source: src, Options: opts})
	}
	slices.SortStableFunc(out, func(a, b specs.Mount) int {
		return strings.Count(a.Destination, "/") - strings.Count(b.Destination, "/")
	})
	return out
}
