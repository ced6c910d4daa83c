// Package storage turns a container's disks into its rootfs: it finds each
// virtio-blk disk by its serial, mounts the image disks read-only and the
// writable disk read-write, and mounts an overlay of them. The overlay's
// upper and work directories live on the writable disk, so a container that
// is started again later finds its changes intact. Volume disks are mounted
// beside the rootfs, and Binds says how to put them into the container.
// A rootfs share (contract.RoleRootfs: a host directory over virtio-fs or
// 9p) is the rootfs itself, with no image or writable disk.
//
// It does not create filesystems or know about the agent protocol.
package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/mountopt"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// MaxSerial is VIRTIO_BLK_ID_BYTES: the longest serial virtio-blk reports.
const MaxSerial = 20

// Disk is one block device to mount.
type Disk struct {
	Serial   string
	FSType   string // default ext4
	Options  []string
	ReadOnly bool
	// Role is one of contract.RoleImage, RoleWritable, RoleVolume, RoleBind
	// and RoleRootfs: a volume's data directory is bound into the
	// container at MountPoint.
	Role string
	// MountPoint is where a volume appears in the container (RoleVolume only).
	MountPoint string
	// Subdir is the directory of a rootfs share that is the rootfs, or of
	// a bind share that is bound (one path component; RoleRootfs and
	// RoleBind only, empty for the share's root).
	Subdir string
}

// ErrInvalid marks a request the caller got wrong.
var ErrInvalid = errors.New("invalid storage request")

// ErrNotFound marks a disk that is not attached to the guest.
var ErrNotFound = errors.New("disk not found")

// Manager mounts disks under BaseDir/<container id>.
type Manager struct {
	// SysBlock is the sysfs block class directory. Default /sys/block.
	SysBlock string
	// DevDir holds the device nodes. Default /dev.
	DevDir string
	// BaseDir holds one directory per container. Default /run/vmctl/containers.
	BaseDir string
	// WaitDevice bounds the wait for a disk that has not appeared yet.
	WaitDevice time.Duration
}

func (m *Manager) defaults() {
	if m.SysBlock == "" {
		m.SysBlock = "/sys/block"
	}
	if m.DevDir == "" {
		m.DevDir = "/dev"
	}
	if m.BaseDir == "" {
		m.BaseDir = "/run/vmctl/containers"
	}
}

// Validate checks a disk list: at least one image and at most one writable
// disk, or else one rootfs share; known roles, plausible serials and
// filesystem types.
func Validate(disks []Disk) error {
	images, writable, rootfs := 0, 0, 0
	seen := map[string]bool{}
	for _, d := range disks {
		if d.Serial == "" || len(d.Serial) > MaxSerial || strings.ContainsAny(d.Serial, "/\x00\n") {
			return fmt.Errorf("%w: disk serial %q must be 1 to %d bytes", ErrInvalid, d.Serial, MaxSerial)
		}
		// A share may be listed more than once for different subdirs of it
		// (a pod's one share holds its containers' rootfs and volumes).
		key := d.Serial
		if d.Subdir != "" {
			key += "/" + d.Subdir
		}
		if seen[key] {
			return fmt.Errorf("%w: disk serial %q listed twice", ErrInvalid, d.Serial)
		}
		seen[key] = true
		if strings.ContainsAny(d.FSType, ",\x00 ") {
			return fmt.Errorf("%w: filesystem type %q", ErrInvalid, d.FSType)
		}
		for _, o := range d.Options {
			if strings.ContainsAny(o, ",\x00") {
				return fmt.Errorf("%w: mount option %q", ErrInvalid, o)
			}
		}
		if d.Role != contract.RoleVolume && d.Role != contract.RoleBind && d.MountPoint != "" {
			return fmt.Errorf("%w: disk %q of role %s has a mount point", ErrInvalid, d.Serial, d.Role)
		}
		if d.Subdir != "" && (d.Role != contract.RoleRootfs && d.Role != contract.RoleBind || !validSubdir(d.Subdir)) {
			return fmt.Errorf("%w: storage %q of role %s: subdir %q (only a rootfs or bind share has one: a single path component)", ErrInvalid, d.Serial, d.Role, d.Subdir)
		}
		switch d.Role {
		case contract.RoleRootfs:
			rootfs++
			if d.FSType != "9p" && d.FSType != "virtiofs" {
				return fmt.Errorf("%w: rootfs share %q has file system %q, want virtiofs or 9p", ErrInvalid, d.Serial, d.FSType)
			}
		case contract.RoleBind:
			if d.FSType != "9p" && d.FSType != "virtiofs" {
				return fmt.Errorf("%w: bind share %q has file system %q, want virtiofs or 9p", ErrInvalid, d.Serial, d.FSType)
			}
			fallthrough
		case contract.RoleVolume:
			if err := ValidateMountPoint(d.MountPoint); err != nil {
				return err
			}
			if seen["\x00"+d.MountPoint] {
				return fmt.Errorf("%w: two volumes on %s", ErrInvalid, d.MountPoint)
			}
			seen["\x00"+d.MountPoint] = true
		case contract.RoleImage:
			images++
		case contract.RoleWritable:
			writable++
			if d.ReadOnly {
				return fmt.Errorf("%w: the writable disk %q is marked read-only", ErrInvalid, d.Serial)
			}
		default:
			return fmt.Errorf("%w: disk %q has unknown role %q (want image, writable, volume, bind or rootfs)", ErrInvalid, d.Serial, d.Role)
		}
	}
	switch {
	case rootfs > 1:
		return fmt.Errorf("%w: more than one rootfs share", ErrInvalid)
	case rootfs == 1 && images+writable > 0:
		return fmt.Errorf("%w: a rootfs share goes without image and writable disks", ErrInvalid)
	case rootfs == 0 && images == 0:
		return fmt.Errorf("%w: no image disk", ErrInvalid)
	}
	if writable > 1 {
		return fmt.Errorf("%w: more than one writable disk", ErrInvalid)
	}
	return nil
}

// validSubdir: one path component, not . or ..
func validSubdir(s string) bool {
	return len(s) <= 255 && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// FindBySerial returns the device node of the disk whose
// SysBlock/<name>/serial equals serial.
func (m *Manager) FindBySerial(serial string) (string, error) {
	m.defaults()
	entries, err := os.ReadDir(m.SysBlock)
	if err != nil {
		return "", fmt.Errorf("list disks: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(m.SysBlock, e.Name(), "serial"))
		if err != nil {
			continue
		}
		if strings.TrimRight(string(b), "\n\x00 ") == serial {
			return filepath.Join(m.DevDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("%w: no disk with serial %q", ErrNotFound, serial)
}

// findWait retries FindBySerial for up to WaitDevice, for disks whose
// probe has not finished when the request arrives.
func (m *Manager) findWait(serial string) (string, error) {
	deadline := time.Now().Add(m.WaitDevice)
	for {
		dev, err := m.FindBySerial(serial)
		if err == nil {
			if _, err = os.Stat(dev); err == nil {
				return dev, nil
			}
		}
		if !time.Now().Before(deadline) {
			return "", err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dir is the container's storage directory.
func (m *Manager) Dir(id string) string {
	m.defaults()
	return filepath.Join(m.BaseDir, id)
}

// Mount mounts the disks and returns the rootfs directory. On failure it
// undoes what it mounted.
func (m *Manager) Mount(id string, disks []Disk) (rootfs string, err error) {
	m.defaults()
	if err := Validate(disks); err != nil {
		return "", err
	}
	dir := m.Dir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			m.Unmount(id)
		}
	}()
	rootfs = filepath.Join(dir, "rootfs")
	for _, d := range disks {
		if d.Role == contract.RoleRootfs {
			if err := m.mountRootfsShare(d, rootfs); err != nil {
				return "", err
			}
			return rootfs, m.mountVolumes(id, disks, rootfs)
		}
	}
	var lowers []string
	writable := ""
	for i, d := range disks {
		if d.Role == contract.RoleVolume || d.Role == contract.RoleBind {
			continue // mounted once the rootfs exists, below
		}
		target := filepath.Join(dir, "image"+strconv.Itoa(i))
		if d.Role == contract.RoleWritable {
			target = filepath.Join(dir, "writable")
		}
		if err := m.mountDisk(d, target); err != nil {
			return "", err
		}
		trace.Step("storage: mounted disk " + d.Serial)
		if d.Role == contract.RoleWritable {
			writable = target
		} else {
			lowers = append(lowers, target)
		}
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return "", fmt.Errorf("create rootfs dir: %w", err)
	}
	if writable == "" && len(lowers) == 1 {
		// Nothing to overlay: the image itself is the (read-only) rootfs.
		if err := unix.Mount(lowers[0], rootfs, "", unix.MS_BIND, ""); err != nil {
			return "", fmt.Errorf("bind image as rootfs: %w", err)
		}
		return rootfs, m.mountVolumes(id, disks, rootfs)
	}
	// The first image disk is the top layer, as in overlayfs's lowerdir.
	data := "lowerdir=" + strings.Join(lowers, ":")
	if writable != "" {
		upper, work := filepath.Join(writable, "upper"), filepath.Join(writable, "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return "", fmt.Errorf("create %s on the writable disk: %w", filepath.Base(d), err)
			}
		}
		data += ",upperdir=" + upper + ",workdir=" + work
	}
	trace.Step("storage: upper and work dirs")
	// nodev: a device node a container makes (it has CAP_MKNOD, as under
	// Docker) cannot be opened, so the VM's disks stay out of its reach.
	if err := unix.Mount("overlay", rootfs, "overlay", unix.MS_NODEV, data); err != nil {
		return "", fmt.Errorf("mount overlay rootfs: %w", err)
	}
	trace.Step("storage: overlay mounted")
	return rootfs, m.mountVolumes(id, disks, rootfs)
}

// mountVolumes mounts the volume disks; a new volume takes the image's
// content at its mount point, so it needs the rootfs.
func (m *Manager) mountVolumes(id string, disks []Disk, rootfs string) error {
	for _, d := range disks {
		switch d.Role {
		case contract.RoleVolume:
			if err := m.mountVolume(id, d, rootfs); err != nil {
				return err
			}
		case contract.RoleBind:
			if err := m.mountShare(id, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// mountRootfsShare mounts a rootfs share (or its subdir) as the rootfs,
// read-write unless marked read-only. nodev as for the overlay: device
// nodes the container makes cannot be opened.
func (m *Manager) mountRootfsShare(d Disk, rootfs string) error {
	flags := uintptr(unix.MS_NODEV)
	if d.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	opts := d.Options
	if d.FSType == "9p" {
		opts = append(append([]string(nil), contract.BindMountOptions9P...), d.Options...)
	}
	target := rootfs
	if d.Subdir != "" {
		// The share holds every container's rootfs: mounted beside, the
		// container's directory is bound as its rootfs.
		target = filepath.Join(filepath.Dir(rootfs), "share")
	}
	for _, dir := range []string{rootfs, target} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if err := unix.Mount(d.Serial, target, d.FSType, flags, strings.Join(opts, ",")); err != nil {
		return fmt.Errorf("mount the rootfs share (tag %s, %s): %w", d.Serial, d.FSType, err)
	}
	if d.Subdir != "" {
		src := filepath.Join(target, d.Subdir)
		if st, err := os.Lstat(src); err != nil || !st.IsDir() {
			return fmt.Errorf("%w: the rootfs share has no directory %q", ErrNotFound, d.Subdir)
		}
		if err := unix.Mount(src, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind the rootfs %s: %w", d.Subdir, err)
		}
	}
	trace.Step("storage: mounted rootfs share " + d.Serial)
	return nil
}

func (m *Manager) mountDisk(d Disk, target string) error {
	dev, err := m.findWait(d.Serial)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	flags, _, data := mountopt.Parse(d.Options)
	flags &^= unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT
	// Device nodes on a container's disks are never opened (see the
	// overlay below): what a container sees of them is nodev.
	flags |= unix.MS_NODEV
	if d.ReadOnly || d.Role == contract.RoleImage {
		flags |= unix.MS_RDONLY
	}
	fstype := d.FSType
	if fstype == "" {
		fstype = "ext4"
	}
	if err := unix.Mount(dev, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount disk %q (%s, %s): %w", d.Serial, dev, fstype, err)
	}
	return nil
}

// Unmount unmounts the rootfs and the disks of id and removes its
// directory. Safe to call again and on a partly mounted container.
func (m *Manager) Unmount(id string) error {
	m.defaults()
	dir := m.Dir(id)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	// rootfs first: it sits on the others.
	names := []string{"rootfs"}
	for _, e := range entries {
		if e.Name() != "rootfs" {
			names = append(names, e.Name())
		}
	}
	var errs []error
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := unmountAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		trace.Step("storage: unmounted " + n)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unmountAll removes every mount stacked on p.
func unmountAll(p string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(p, 0)
		switch err {
		case nil:
			continue
		case unix.EINVAL, unix.ENOENT:
			return nil // not (or no longer) a mount point
		case unix.EBUSY:
			// Still in use by a dying process: detach, the kernel
			// finishes when the last user is gone.
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
			continue
		default:
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return fmt.Errorf("unmount %s: too many stacked mounts", p)
}
