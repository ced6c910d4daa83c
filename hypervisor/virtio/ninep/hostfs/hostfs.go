// Package hostfs serves one host directory to a guest over 9P2000.L (the
// p9.File of github.com/hugelgupf/p9's server), for virtio-9p shares: a
// container's bind mounts.
//
// The guest is hostile. Every node is held as an O_PATH|O_NOFOLLOW
// descriptor and every name is resolved one component at a time relative to
// its parent's descriptor (openat), never as a host path, so neither ".."
// (the server refuses it in names) nor a symlink the guest plants inside the
// share (never followed on the host: the guest resolves symlinks itself,
// with Readlink) nor a rename race can reach outside the shared directory.
// A node is reopened for I/O through /proc/self/fd/N, which names the same
// inode, and only regular files and directories are opened on the host:
// device nodes and FIFOs found in a share are the guest kernel's to
// emulate (v9fs never opens them on the server), and the guest cannot
// create device nodes.
//
// A read-only share refuses every change with EROFS, whatever the guest's
// mount options say.
//
// Ownership passes through as the guest asks (as Docker's bind mounts do:
// root in the container creates files owned by root on the host) when the
// VMM runs as root. Extended attributes outside user.* and
// system.posix_acl_* cannot be set by the guest, and trusted.* ones are not
// shown to it.
//
// It keeps no cache: every request reaches the host file system.
package hostfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Options configures a share.
type Options struct {
	// ReadOnly refuses every change with EROFS.
	ReadOnly bool
}

// FS is one shared host directory.
type FS struct {
	root   int // O_PATH|O_DIRECTORY
	ro     bool
	asRoot bool
	// nodes counts the descriptors the guest holds open through this
	// share (one per node, one more per opened node), up to MaxNodes.
	nodes atomic.Int64
}

// MaxNodes bounds the descriptors one share keeps open for its guest: a
// guest that walks without ever clunking gets EMFILE, not the VMM's whole
// descriptor table.
const MaxNodes = 16384

// take reserves n descriptors, or fails with EMFILE.
func (fs *FS) take(n int64) error {
	if fs.nodes.Add(n) > MaxNodes {
		fs.nodes.Add(-n)
		return unix.EMFILE
	}
	return nil
}

var _ p9.Attacher = (*FS)(nil)

// New opens dir (already resolved by the caller: symlinks in it are
// followed once, here) as the root of a share.
func New(dir string, opts Options) (*FS, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("shared directory %s: %w", dir, err)
	}
	return &FS{root: fd, ro: opts.ReadOnly, asRoot: unix.Geteuid() == 0}, nil
}

// Close releases the root. Files attached before stay usable until closed.
func (fs *FS) Close() error { return unix.Close(fs.root) }

// Attach implements p9.Attacher.
func (fs *FS) Attach() (p9.File, error) {
	if err := fs.take(1); err != nil {
		return nil, err
	}
	fd, err := unix.FcntlInt(uintptr(fs.root), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		fs.take(-1)
		return nil, err
	}
	f, err := newFile(fs, fd)
	if err != nil {
		fs.take(-1)
	}
	return f, err
}

// file is one node: an O_PATH descriptor, plus a real descriptor once
// opened.
type file struct {
	fs   *FS
	fd   int
	mode uint32 // S_IFMT bits, fixed for the inode

	mu     sync.Mutex // guards opened's offset for Readdir
	opened int        // -1 until Open or Create
}

func newFile(fs *FS, fd int) (*file, error) {
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &file{fs: fs, fd: fd, mode: st.Mode & unix.S_IFMT, opened: -1}, nil
}

func fstat(fd int, st *unix.Stat_t) error {
	return unix.Fstatat(fd, "", st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// procPath names fd's inode for calls that have no descriptor form for
// O_PATH descriptors (open, chmod, truncate, utimes, xattrs).
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func (f *file) isDir() bool     { return f.mode == unix.S_IFDIR }
func (f *file) isRegular() bool { return f.mode == unix.S_IFREG }
func (f *file) isSymlink() bool { return f.mode == unix.S_IFLNK }

func (f *file) writable() error {
	if f.fs.ro {
		return unix.EROFS
	}
	return nil
}

// qid identifies an inode to the guest. Inode numbers of different host
// file systems under the share are kept apart by the device number in the
// top bits.
func qid(st *unix.Stat_t) p9.QID {
	return p9.QID{Type: p9.FileMode(st.Mode).QIDType(), Path: st.Ino ^ uint64(st.Dev)<<48}
}

func attrOf(st *unix.Stat_t) (p9.AttrMask, p9.Attr) {
	return p9.AttrMask{
			Mode: true, NLink: true, UID: true, GID: true, RDev: true, ATime: true, MTime: true,
			CTime: true, INo: true, Size: true, Blocks: true,
		}, p9.Attr{
			Mode: p9.FileMode(st.Mode), UID: p9.UID(st.Uid), GID: p9.GID(st.Gid), NLink: p9.NLink(st.Nlink),
			RDev: p9.Dev(st.Rdev), Size: uint64(st.Size), BlockSize: uint64(st.Blksize), Blocks: uint64(st.Blocks),
			ATimeSeconds: uint64(st.Atim.Sec), ATimeNanoSeconds: uint64(st.Atim.Nsec),
			MTimeSeconds: uint64(st.Mtim.Sec), MTimeNanoSeconds: uint64(st.Mtim.Nsec),
			CTimeSeconds: uint64(st.Ctim.Sec), CTimeNanoSeconds: uint64(st.Ctim.Nsec),
		}
}

// walk resolves names one at a time from f, never following a symlink.
func (f *file) walk(names []string) (_ []p9.QID, _ *file, _ *unix.Stat_t, err error) {
	if err := f.fs.take(1); err != nil {
		return nil, nil, nil, err
	}
	defer func() {
		if err != nil {
			f.fs.take(-1)
		}
	}()
	cur, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	var st unix.Stat_t
	if err := fstat(cur, &st); err != nil {
		unix.Close(cur)
		return nil, nil, nil, err
	}
	qids := make([]p9.QID, 0, len(names))
	for _, name := range names {
		if err := checkName(name); err != nil {
			unix.Close(cur)
			return nil, nil, nil, err
		}
		next, err := unix.Openat(cur, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return nil, nil, nil, err
		}
		cur = next
		if err := fstat(cur, &st); err != nil {
			unix.Close(cur)
			return nil, nil, nil, err
		}
		qids = append(qids, qid(&st))
	}
	return qids, &file{fs: f.fs, fd: cur, mode: st.Mode & unix.S_IFMT, opened: -1}, &st, nil
}

// checkName refuses what is not a single path component. The server
// checks too; this package does not rely on it.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return unix.EINVAL
	}
	return nil
}

// Walk implements p9.File.
func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	qids, nf, _, err := f.walk(names)
	if err != nil {
		return nil, nil, err
	}
	return qids, nf, nil
}

// WalkGetAttr implements p9.File: one fstat per component instead of a
// walk and a getattr.
func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, st, err := f.walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	mask, attr := attrOf(st)
	return qids, nf, mask, attr, nil
}

// StatFS implements p9.File.
func (f *file) StatFS() (p9.FSStat, error) {
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.fd, &s); err != nil {
		return p9.FSStat{}, err
	}
	return p9.FSStat{
		Type: uint32(s.Type), BlockSize: uint32(s.Bsize), Blocks: s.Blocks, BlocksFree: s.Bfree,
		BlocksAvailable: s.Bavail, Files: s.Files, FilesFree: s.Ffree,
		FSID: uint64(uint32(s.Fsid.Val[0])) | uint64(uint32(s.Fsid.Val[1]))<<32, NameLength: uint32(s.Namelen),
	}, nil
}

// GetAttr implements p9.File.
func (f *file) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	var st unix.Stat_t
	if err := fstat(f.fd, &st); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	mask, attr := attrOf(&st)
	return qid(&st), mask, attr, nil
}

// SetAttr implements p9.File.
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if err := f.writable(); err != nil {
		return err
	}
	if valid.Permissions {
		if f.isSymlink() {
			return unix.EOPNOTSUPP
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, procPath(f.fd), uint32(attr.Permissions.Permissions()), 0); err != nil {
			return err
		}
	}
	if valid.UID || valid.GID {
		uid, gid := -1, -1
		if valid.UID && attr.UID.Ok() {
			uid = int(attr.UID)
		}
		if valid.GID && attr.GID.Ok() {
			gid = int(attr.GID)
		}
		if err := unix.Fchownat(f.fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if valid.Size {
		if !f.isRegular() {
			return unix.EINVAL
		}
		if err := unix.Truncate(procPath(f.fd), int64(attr.Size)); err != nil {
			return err
		}
	}
	if valid.ATime || valid.MTime {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if valid.ATime {
			ts[0] = timespec(valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		}
		if valid.MTime {
			ts[1] = timespec(valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		}
		// On the node itself, symlinks included; kernels before
		// utimensat took AT_EMPTY_PATH go through /proc/self/fd, which
		// cannot reach a symlink without following it.
		err := unix.UtimesNanoAt(f.fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) && !f.isSymlink() {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, procPath(f.fd), ts[:], 0)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func timespec(given bool, sec, nsec uint64) unix.Timespec {
	if !given {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// Close implements p9.File.
func (f *file) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opened >= 0 {
		unix.Close(f.opened)
		f.opened = -1
		f.fs.take(-1)
	}
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
		f.fs.take(-1)
	}
	return nil
}

// openFlags are the open(2) flags a guest may pass through; the rest
// (O_CREAT, O_NOFOLLOW, O_PATH, ...) are the server's to choose.
const openFlags = unix.O_ACCMODE | unix.O_TRUNC | unix.O_DSYNC | unix.O_SYNC

// Open implements p9.File.
func (f *file) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	flags := int(mode) & openFlags
	switch {
	case f.isDir():
		flags = unix.O_RDONLY | unix.O_DIRECTORY
	case f.isRegular():
		if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
			if err := f.writable(); err != nil {
				return p9.QID{}, 0, err
			}
		}
	default:
		return p9.QID{}, 0, unix.EPERM
	}
	if err := f.fs.take(1); err != nil {
		return p9.QID{}, 0, err
	}
	fd, err := unix.Open(procPath(f.fd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		f.fs.take(-1)
		return p9.QID{}, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		f.fs.take(-1)
		return p9.QID{}, 0, err
	}
	f.mu.Lock()
	if f.opened >= 0 {
		unix.Close(f.opened)
		f.fs.take(-1)
	}
	f.opened = fd
	f.mu.Unlock()
	return qid(&st), 0, nil
}

// ReadAt implements p9.File.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.opened < 0 {
		return 0, unix.EBADF
	}
	n, err := unix.Pread(f.opened, p, off)
	if n < 0 {
		n = 0
	}
	return n, err
}

// WriteAt implements p9.File.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if err := f.writable(); err != nil {
		return 0, err
	}
	if f.opened < 0 {
		return 0, unix.EBADF
	}
	n, err := unix.Pwrite(f.opened, p, off)
	if n < 0 {
		n = 0
	}
	return n, err
}

// FSync implements p9.File.
func (f *file) FSync() error {
	if f.opened < 0 {
		return unix.EBADF
	}
	return unix.Fsync(f.opened)
}

// xattrSettable is what a guest may set or remove.
func xattrSettable(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

// xattrHidden is what the guest does not see: overlayfs and other host
// services keep their state in trusted.*.
func xattrHidden(name string) bool { return strings.HasPrefix(name, "trusted.") }

// SetXattr implements p9.File.
func (f *file) SetXattr(name string, data []byte, flags p9.XattrFlags) error {
	if err := f.writable(); err != nil {
		return err
	}
	if !xattrSettable(name) {
		return unix.EPERM
	}
	if f.isSymlink() {
		return unix.EPERM // user.* is not allowed on symlinks anyway
	}
	return unix.Setxattr(procPath(f.fd), name, data, int(flags))
}

// GetXattr implements p9.File.
func (f *file) GetXattr(name string) ([]byte, error) {
	if xattrHidden(name) || f.isSymlink() {
		return nil, unix.ENODATA
	}
	return growing(256, func(buf []byte) (int, error) { return unix.Getxattr(procPath(f.fd), name, buf) })
}

// growing calls fn with ever larger buffers (up to 1 MiB) while it answers
// ERANGE, as the xattr calls do when the value outgrew the buffer.
func growing(size int, fn func([]byte) (int, error)) ([]byte, error) {
	for ; ; size *= 4 {
		buf := make([]byte, size)
		n, err := fn(buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// ListXattrs implements p9.File.
func (f *file) ListXattrs() ([]string, error) {
	if f.isSymlink() {
		return nil, nil
	}
	buf, err := growing(1024, func(buf []byte) (int, error) { return unix.Listxattr(procPath(f.fd), buf) })
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range strings.Split(string(buf), "\x00") {
		if name != "" && !xattrHidden(name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// RemoveXattr implements p9.File.
func (f *file) RemoveXattr(name string) error {
	if err := f.writable(); err != nil {
		return err
	}
	if !xattrSettable(name) || f.isSymlink() {
		return unix.EPERM
	}
	return unix.Removexattr(procPath(f.fd), name)
}

// Lock implements p9.File with open file description locks, which belong
// to the guest's open file (one fid) as POSIX locks belong to a process.
// A blocking request is answered Blocked; the guest retries.
func (f *file) Lock(_ int, typ p9.LockType, _ p9.LockFlags, start, length uint64, _ string) (p9.LockStatus, error) {
	if f.opened < 0 {
		return p9.LockStatusError, unix.EBADF
	}
	lk := unix.Flock_t{Whence: 0, Start: int64(start), Len: int64(length)}
	switch typ {
	case p9.ReadLock:
		lk.Type = unix.F_RDLCK
	case p9.WriteLock:
		lk.Type = unix.F_WRLCK
	case p9.Unlock:
		lk.Type = unix.F_UNLCK
	default:
		return p9.LockStatusError, unix.EINVAL
	}
	err := unix.FcntlFlock(uintptr(f.opened), unix.F_OFD_SETLK, &lk)
	switch {
	case err == nil:
		return p9.LockStatusOK, nil
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EACCES):
		return p9.LockStatusBlocked, nil
	default:
		return p9.LockStatusError, err
	}
}

// own gives a node the guest's owner, as a root VMM can.
func (f *file) own(dirfd int, name string, uid p9.UID, gid p9.GID) error {
	if !f.fs.asRoot {
		return nil
	}
	u, g := -1, -1
	if uid.Ok() {
		u = int(uid)
	}
	if gid.Ok() {
		g = int(gid)
	}
	return unix.Fchownat(dirfd, name, u, g, unix.AT_SYMLINK_NOFOLLOW)
}

// created finishes a new entry: owner and mode as asked (the process umask
// must not change what the guest chose), then its QID. A failure removes
// the entry again.
func (f *file) created(name string, mode uint32, uid p9.UID, gid p9.GID, dir bool) (p9.QID, error) {
	fail := func(err error) (p9.QID, error) {
		flags := 0
		if dir {
			flags = unix.AT_REMOVEDIR
		}
		unix.Unlinkat(f.fd, name, flags)
		return p9.QID{}, err
	}
	if err := f.own(f.fd, name, uid, gid); err != nil {
		return fail(err)
	}
	nf, err := unix.Openat(f.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(nf)
	var st unix.Stat_t
	if err := fstat(nf, &st); err != nil {
		return fail(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK && st.Mode&0o7777 != mode&0o7777 {
		if err := unix.Fchmodat(unix.AT_FDCWD, procPath(nf), mode&0o7777, 0); err != nil {
			return fail(err)
		}
		st.Mode = st.Mode&unix.S_IFMT | mode&0o7777
	}
	return qid(&st), nil
}

func (f *file) checkCreate(name string) error {
	if err := f.writable(); err != nil {
		return err
	}
	if !f.isDir() {
		return unix.ENOTDIR
	}
	return checkName(name)
}

// Create implements p9.File.
func (f *file) Create(name string, flags p9.OpenFlags, perm p9.FileMode, uid p9.UID, gid p9.GID) (_ p9.File, _ p9.QID, _ uint32, err error) {
	if err := f.checkCreate(name); err != nil {
		return nil, p9.QID{}, 0, err
	}
	if err := f.fs.take(2); err != nil {
		return nil, p9.QID{}, 0, err
	}
	defer func() {
		if err != nil {
			f.fs.take(-2)
		}
	}()
	mode := uint32(perm.Permissions())
	fd, err := unix.Openat(f.fd, name, int(flags)&openFlags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	q, err := f.created(name, mode, uid, gid, false)
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	// The node's O_PATH descriptor names the inode just created, not
	// whatever the name may point to by now.
	pfd, err := unix.Open(procPath(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	return &file{fs: f.fs, fd: pfd, mode: unix.S_IFREG, opened: fd}, q, 0, nil
}

// Mkdir implements p9.File.
func (f *file) Mkdir(name string, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.checkCreate(name); err != nil {
		return p9.QID{}, err
	}
	mode := uint32(perm.Permissions())
	if err := unix.Mkdirat(f.fd, name, mode); err != nil {
		return p9.QID{}, err
	}
	return f.created(name, mode, uid, gid, true)
}

// Symlink implements p9.File. The target is stored as given: it is only
// ever resolved by the guest.
func (f *file) Symlink(target, name string, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.checkCreate(name); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Symlinkat(target, f.fd, name); err != nil {
		return p9.QID{}, err
	}
	return f.created(name, 0o777, uid, gid, false)
}

// Link implements p9.File.
func (f *file) Link(target p9.File, name string) error {
	if err := f.checkCreate(name); err != nil {
		return err
	}
	t, ok := target.(*file)
	if !ok || t.isDir() {
		return unix.EPERM
	}
	if t.isSymlink() {
		// linkat through /proc/self/fd would link the symlink's target.
		return unix.EPERM
	}
	return unix.Linkat(unix.AT_FDCWD, procPath(t.fd), f.fd, name, unix.AT_SYMLINK_FOLLOW)
}

// Mknod implements p9.File: FIFOs, sockets and empty regular files; never
// device nodes, which the host would honour.
func (f *file) Mknod(name string, mode p9.FileMode, _, _ uint32, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.checkCreate(name); err != nil {
		return p9.QID{}, err
	}
	switch {
	case mode.IsNamedPipe(), mode.IsSocket(), mode.IsRegular():
	default:
		return p9.QID{}, unix.EPERM
	}
	perm := uint32(mode.Permissions())
	if err := unix.Mknodat(f.fd, name, uint32(mode.FileType())|perm, 0); err != nil {
		return p9.QID{}, err
	}
	return f.created(name, perm, uid, gid, false)
}

// Rename implements p9.File; the server only calls RenameAt.
func (f *file) Rename(p9.File, string) error { return unix.ENOSYS }

// RenameAt implements p9.File.
func (f *file) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := f.checkCreate(oldName); err != nil {
		return err
	}
	nd, ok := newDir.(*file)
	if !ok {
		return unix.EXDEV
	}
	if err := nd.checkCreate(newName); err != nil {
		return err
	}
	return unix.Renameat(f.fd, oldName, nd.fd, newName)
}

// UnlinkAt implements p9.File.
func (f *file) UnlinkAt(name string, flags uint32) error {
	if err := f.checkCreate(name); err != nil {
		return err
	}
	return unix.Unlinkat(f.fd, name, int(flags)&unix.AT_REMOVEDIR)
}

// Readlink implements p9.File.
func (f *file) Readlink() (string, error) {
	if !f.isSymlink() {
		return "", unix.EINVAL
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(f.fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Renamed implements p9.File: nodes are descriptors, not paths.
func (f *file) Renamed(p9.File, string) {}

// Readdir implements p9.File. offset is a position getdents returned (the
// d_off of the last entry the guest got), count the bytes the guest has
// room for.
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opened < 0 || !f.isDir() {
		return nil, unix.EBADF
	}
	if _, err := unix.Seek(f.opened, int64(offset), 0); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.opened, &st); err != nil {
		return nil, err
	}
	buf := make([]byte, min(max(count, 512), 64<<10))
	n, err := unix.Getdents(f.opened, buf)
	if err != nil {
		return nil, err
	}
	var out p9.Dirents
	for b := buf[:n]; len(b) >= 19; {
		ino := le64(b[0:])
		off := le64(b[8:])
		reclen := int(uint16(b[16]) | uint16(b[17])<<8)
		typ := b[18]
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if i := indexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		b = b[reclen:]
		// Type is the d_type the guest's getdents reports, as Linux's
		// v9fs client passes it through.
		out = append(out, p9.Dirent{
			QID:    p9.QID{Type: direntQIDType(typ), Path: ino ^ uint64(st.Dev)<<48},
			Offset: off, Type: p9.QIDType(typ), Name: string(name),
		})
	}
	return out, nil
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func direntQIDType(t uint8) p9.QIDType {
	switch t {
	case unix.DT_DIR:
		return p9.TypeDir
	case unix.DT_LNK:
		return p9.TypeSymlink
	}
	return p9.TypeRegular
}
