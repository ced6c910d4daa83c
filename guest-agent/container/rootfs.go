package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/mountopt"
)

// inRoot joins unsafePath to root, resolving symlinks as if root were "/",
// so a symlink in the image cannot send a mount outside the rootfs. Missing
// components are kept as they are (the caller creates them).
func inRoot(root, unsafePath string) (string, error) {
	const maxLinks = 255
	links := 0
	resolved := "/"
	rest := strings.Split(filepath.Clean("/"+unsafePath), "/")
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		links++
		if links > maxLinks {
			return "", fmt.Errorf("resolve %s in rootfs: too many symlinks", unsafePath)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s in rootfs: %w", unsafePath, err)
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, resolved), nil
}

// devMounts are added when the spec does not mount /dev itself: a container
// always gets a private /dev with terminals and shared memory.
var devMounts = []specs.Mount{
	{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "strictatime", "mode=755", "size=65536k"}},
	{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec"}},
	{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
}

// withDevMounts returns the spec's mounts plus what /dev needs. A
// privileged container's /dev allows device nodes (see vmDevices).
func withDevMounts(mounts []specs.Mount, privileged bool) []specs.Mount {
	has := map[string]bool{}
	for _, m := range mounts {
		has[m.Destination] = true
	}
	var out []specs.Mount
	if !has["/dev"] {
		dev := devMounts[0]
		if privileged {
			dev.Options = slices.DeleteFunc(slices.Clone(dev.Options), func(o string) bool { return o == "nodev" })
		}
		out = append(out, dev)
	}
	out = append(out, mounts...)
	for _, m := range devMounts[1:] {
		if !has[m.Destination] {
			out = append(out, m)
		}
	}
	return out
}

// mountAll performs the container's mounts under rootfs, before pivot_root.
// devpts is special: the terminals the agent allocates live in the guest's
// devpts instance, and since Linux 4.7 every devpts mount is a new instance,
// so the container gets a bind of the guest's instance instead; that way the
// pty the agent made resolves by path (tty prints /dev/pts/N).
func mountAll(rootfs, guestDevPts string, mounts []specs.Mount, terminal, privileged bool) error {
	for _, m := range withDevMounts(mounts, privileged) {
		target, err := inRoot(rootfs, m.Destination)
		if err != nil {
			return err
		}
		flags, propagation, data := mountopt.Parse(m.Options)
		typ, source := m.Type, m.Source
		switch {
		case typ == "devpts":
			typ, source, flags, data = "", guestDevPts, unix.MS_BIND|(flags&^unix.MS_BIND), ""
		case typ == "cgroup":
			// cgroup v1 is not offered in the guest.
			typ = "cgroup2"
		}
		bind := flags&unix.MS_BIND != 0
		if err := makeTarget(source, target, bind); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		if bind {
			if err := unix.Mount(source, target, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
				return fmt.Errorf("bind %s on %s: %w", source, m.Destination, err)
			}
			// Bind mounts ignore other flags until remounted; the
			// remount keeps the source's nodev, nosuid and noexec.
			if rest := flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
				if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|rest|lockedFlags(target), ""); err != nil {
					return fmt.Errorf("remount %s: %w", m.Destination, err)
				}
			}
		} else if err := unix.Mount(source, target, typ, flags, data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", typ, m.Destination, err)
		}
		if propagation != 0 {
			if err := unix.Mount("", target, "", propagation, ""); err != nil {
				return fmt.Errorf("set propagation of %s: %w", m.Destination, err)
			}
		}
		if m.Destination == "/dev" {
			if err := populateDev(target, terminal); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeTarget creates the mount point: a file for a file bind, else a dir.
func makeTarget(source, target string, bind bool) error {
	if bind {
		if fi, err := os.Stat(source); err == nil && !fi.IsDir() {
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
	}
	return os.MkdirAll(target, 0o755)
}

// devNode is a standard device node.
type devNode struct {
	name         string
	major, minor uint32
}

// devNodes are created in every container's /dev.
var devNodes = []devNode{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// devLinks are the symbolic links in every container's /dev.
var devLinks = map[string]string{
	"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
	"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore",
}

// populateDev fills a fresh /dev tmpfs with the standard nodes and links.
// The tmpfs is nodev, so a node the container makes there cannot be
// opened (the device policy: no raw access to the VM's disks or kernel
// log); the standard nodes are binds of the guest's own, whose mount
// allows devices.
func populateDev(dev string, terminal bool) error {
	for _, n := range devNodes {
		if err := bindFile("/dev/"+n.name, filepath.Join(dev, n.name)); err != nil {
			return fmt.Errorf("create /dev/%s: %w", n.name, err)
		}
	}
	for name, target := range devLinks {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link /dev/%s: %w", name, err)
		}
	}
	if terminal {
		// As in runc: /dev/console is the container's terminal.
		slave, err := os.Readlink("/proc/self/fd/0")
		if err == nil && strings.HasPrefix(slave, "/dev/pts/") {
			if err := bindFile(slave, filepath.Join(dev, "console")); err != nil {
				return fmt.Errorf("bind /dev/console: %w", err)
			}
		}
	}
	return nil
}

func bindFile(source, target string) error {
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		return err
	}
	f.Close()
	return unix.Mount(source, target, "", unix.MS_BIND, "")
}

// createDevices makes the spec's extra device nodes.
func createDevices(rootfs string, devices []specs.LinuxDevice) error {
	for _, d := range devices {
		p, err := inRoot(rootfs, d.Path)
		if err != nil {
			return err
		}
		mode := uint32(0o666)
		if d.FileMode != nil {
			mode = uint32(*d.FileMode & 0o7777)
		}
		switch d.Type {
		case "b":
			mode |= unix.S_IFBLK
		case "p":
			mode |= unix.S_IFIFO
		default:
			mode |= unix.S_IFCHR
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p)
		if err := unix.Mknod(p, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
			return fmt.Errorf("create device %s: %w", d.Path, err)
		}
		uid, gid := 0, 0
		if d.UID != nil {
			uid = int(*d.UID)
		}
		if d.GID != nil {
			gid = int(*d.GID)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("chown device %s: %w", d.Path, err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root of the mount namespace and detaches the
// old root. pivot_root(".", ".") stacks the old root on the new one, so no
// directory for it is needed in the image (runc does the same).
func pivotRoot(rootfs string) error {
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir to rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// Keep the unmount below from propagating to the agent's namespace.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root a slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

// maskPaths hides paths the container must not see (Docker's defaults list
// /proc/kcore, /sys/firmware and the like): files get /dev/null bound over
// them, directories an empty read-only tmpfs.
func maskPaths(paths []string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
		} else {
			err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// readonlyPaths makes paths read-only by binding them over themselves.
func readonlyPaths(paths []string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s read-only: %w", p, err)
		}
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", p, err)
		}
	}
	return nil
}

// lockedFlags are the nosuid, nodev and noexec of the mount at path, which
// a bind remount must repeat or it clears them.
func lockedFlags(path string) uintptr {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	var f uintptr
	for bit, ms := range map[int64]uintptr{unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC} {
		if st.Flags&bit != 0 {
			f |= ms
		}
	}
	return f
}
