package rootfs

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/vmctl/vmctl/engine/errs"
	"golang.org/x/sys/unix"
)

// usage is what an extracted tree needs on an ext4 file system with 4 KiB
// blocks, counted while extracting so the disk can be sized without a walk.
type usage struct {
	bytes  int64 // data and directory blocks, rounded up to blocks
	inodes int64
}

const blockSize = 4096

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// errUnsafePath is returned for an entry that tries to leave the root.
var errUnsafePath = errors.New("unsafe path in image layer")

// cleanName maps a tar entry name to a path relative to the root. Absolute
// names are taken relative to the root, as Docker does; a name that climbs
// with ".." is refused rather than silently re-rooted, because only a
// hostile archive contains one.
func cleanName(name string) (string, error) {
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q", errUnsafePath, name)
		}
	}
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	if clean == "" {
		clean = "."
	}
	return clean, nil
}

// extractTar unpacks a flattened image (mutate.Extract output) into dir,
// preserving owners, modes (setuid, setgid, sticky), mtimes, symlinks, hard
// links, device nodes, fifos and extended attributes. Every file system
// operation goes through an os.Root on dir, or through a directory fd opened
// by it, so no entry can reach outside dir: not by "..", not by an absolute
// name, not through a symlink an earlier entry planted.
//
// Preconditions: dir exists and is empty; the caller can chown and mknod
// (root).
func extractTar(ctx context.Context, r io.Reader, dir string, limit int64) (usage, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return usage{}, err
	}
	defer root.Close()
	x := &extractor{root: root, limit: limit}
	if err := x.unpack(ctx, r); err != nil {
		return usage{}, err
	}
	x.use.inodes++ // the root directory
	return x.use, nil
}

// unpack extracts every entry of the tar stream r, then the hard links
// that came before their targets, then the directories' modes and times.
func (x *extractor) unpack(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract writes the end-of-archive marker even when it
			// fails (a deferred Close), and reports the failure only when
			// its pipe is read further; so read to the real end.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("reading image layers: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("reading image layers: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("extracting %q: %w", hdr.Name, err)
		}
	}
	// mutate.Extract emits upper layers first, so a hard link can precede
	// the file it names; those are made once everything else exists.
	for _, hdr := range x.pendingLinks {
		if x.overlay {
			// A link to a file of a lower layer: the layer cannot be a
			// disk of its own.
			if target, err := cleanName(hdr.Linkname); err == nil {
				if _, err := x.root.Lstat(target); errors.Is(err, os.ErrNotExist) {
					x.unlinked = true
					continue
				}
			}
		}
		if err := x.link(hdr, false); err != nil {
			return fmt.Errorf("extracting %q: %w", hdr.Name, err)
		}
	}
	return x.finishDirs()
}

type extractor struct {
	root *os.Root
	use  usage
	// limit bounds the bytes the files take (use.bytes), counted as they
	// are written: a tiny layer can describe huge files.
	limit        int64
	dirs         []dirMeta
	seenDirs     map[string]bool
	pendingLinks []*tar.Header

	// overlay is set when one layer is unpacked as an overlayfs lower
	// directory (layer.go) rather than a flattened image: whiteouts become
	// overlayfs's, and what the layer lists is recorded to tell whether
	// it stands on its own.
	overlay   bool
	listed    map[string]bool // directories the layer lists
	whiteouts map[string]bool // whiteout nodes made
	entries   int
	unlinked  bool // a hard link named a file the layer lacks
}

// dirMeta is applied after extraction: a directory's mode may forbid
// writing into it, and creating children changes its mtime.
type dirMeta struct {
	name  string
	mode  fs.FileMode
	mtime time.Time
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dropOverlayXattrs(hdr)
	if x.overlay {
		x.entries++
		if strings.HasPrefix(path.Base(name), whiteoutPrefix) {
			return x.whiteout(name)
		}
	}
	if name != "." {
		if err := x.mkParents(name); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeDir && name != "." {
		// Its name takes room in its directory, whatever its data does.
		x.use.bytes += direntBytes(name)
	}
	mode := hdr.FileInfo().Mode()
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(name, hdr, mode)
	case tar.TypeReg, tar.TypeGNUSparse:
		// archive/tar reads a sparse file's holes as zeros, which
		// copySparse turns back into holes.
		if err := x.replace(name); err != nil {
			return skipKept(err)
		}
		return x.file(name, hdr, mode, r)
	case tar.TypeSymlink:
		if err := x.replace(name); err != nil {
			return skipKept(err)
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		if len(hdr.Linkname) >= 60 { // longer targets do not fit in the inode
			x.use.bytes += blockSize
		}
		x.use.inodes++
		return x.meta(name, hdr, 0, false)
	case tar.TypeLink:
		return x.link(hdr, true)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := x.replace(name); err != nil {
			return skipKept(err)
		}
		if err := x.node(name, hdr, mode); err != nil {
			return err
		}
		x.use.inodes++
		return x.meta(name, hdr, mode, true)
	default:
		// Nothing else belongs in a root file system (PAX and GNU long-name
		// records are consumed by archive/tar); skip it like Docker does.
		return nil
	}
}

// mkParents makes the directories above name. A layer need not list them
// (many tools write only files), and those made here take inodes and blocks
// on the disk like listed ones, so they are counted once each too; a
// parent that turns out to be a symlink is counted as well, which only
// makes the disk a little larger.
func (x *extractor) mkParents(name string) error {
	parent := path.Dir(name)
	if err := x.root.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	for p := parent; p != "." && !x.seenDirs[p]; p = path.Dir(p) {
		x.countDir(p)
	}
	return nil
}

// countDir adds the directory name to the usage, once.
func (x *extractor) countDir(name string) {
	if x.seenDirs == nil {
		x.seenDirs = map[string]bool{}
	}
	if x.seenDirs[name] || name == "." {
		return
	}
	x.seenDirs[name] = true
	x.use.bytes += blockSize + direntBytes(name)
	x.use.inodes++
}

// direntBytes is the room name's entry takes in its directory on ext4: an
// 8-byte header and the name padded to 4 bytes (struct ext4_dir_entry_2).
// A directory's first block is counted with the directory; the entries
// fill it and the blocks after it.
func direntBytes(name string) int64 {
	return 8 + roundUp(int64(len(path.Base(name))), 4)
}

// errKeepDir stops a non-directory entry from replacing a directory.
// mutate.Extract emits upper layers first and each name once, so a
// directory already at the name was made for an upper layer's entries
// beneath it, and those hide the lower layer's entry.
var errKeepDir = errors.New("a directory is already there")

// replace removes a non-directory at name so a new entry can take its place.
func (x *extractor) replace(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errKeepDir
	}
	return x.root.Remove(name)
}

// skipKept turns errKeepDir into "skip this entry".
func skipKept(err error) error {
	if errors.Is(err, errKeepDir) {
		return nil
	}
	return err
}

func (x *extractor) dir(name string, hdr *tar.Header, mode fs.FileMode) error {
	fi, err := x.root.Lstat(name)
	opaque := false
	switch {
	case err == nil && fi.IsDir():
	case err == nil || errors.Is(err, os.ErrNotExist):
		// A directory in place of this layer's whiteout of the same
		// name hides what the layers below have there.
		opaque = x.whiteouts[name]
		if err := x.replace(name); err != nil {
			return skipKept(err)
		}
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return err
		}
	default:
		return err
	}
	if x.overlay {
		x.listed[name] = true
		if opaque {
			if err := x.setOpaque(name); err != nil {
				return err
			}
		}
	}
	x.countDir(name)
	if err := x.owner(name, hdr); err != nil {
		return err
	}
	if err := x.xattrs(name, hdr); err != nil {
		return err
	}
	x.dirs = append(x.dirs, dirMeta{name: name, mode: mode, mtime: hdr.ModTime})
	return nil
}

func (x *extractor) file(name string, hdr *tar.Header, mode fs.FileMode, r io.Reader) error {
	if x.limit > 0 && x.use.bytes+roundUp(hdr.Size, blockSize) > x.limit {
		return fmt.Errorf("%w: %q makes it larger than %s", ErrTooLarge, name, units.BytesSize(float64(x.limit)))
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := copySparse(f, r)
	if err == nil && n != hdr.Size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		// Owner before mode: chown clears setuid and setgid.
		err = f.Chown(hdr.Uid, hdr.Gid)
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = setXattrs(int(f.Fd()), hdr)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	x.use.bytes += roundUp(hdr.Size, blockSize)
	x.use.inodes++
	return x.times(name, hdr.ModTime)
}

// link makes a hard link. Its target is a name inside the image, cleaned
// like any entry name. When wait is set and the target does not exist yet,
// the link is retried after all other entries.
func (x *extractor) link(hdr *tar.Header, wait bool) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return err
	}
	if target == name {
		return nil
	}
	if _, err := x.root.Lstat(target); errors.Is(err, os.ErrNotExist) && wait {
		x.pendingLinks = append(x.pendingLinks, hdr)
		return nil
	}
	if err := x.mkParents(name); err != nil {
		return err
	}
	if err := x.replace(name); err != nil {
		return skipKept(err)
	}
	return x.root.Link(target, name)
}

// inParent runs fn with an fd of name's parent directory, opened through
// the root, and name's last element. The *at system calls it enables act on
// that element without following it.
func (x *extractor) inParent(name string, fn func(dirfd int, base string) error) error {
	d, err := x.root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return fn(int(d.Fd()), path.Base(name))
}

func (x *extractor) node(name string, hdr *tar.Header, mode fs.FileMode) error {
	return x.inParent(name, func(dirfd int, base string) error {
		perm := uint32(mode.Perm())
		switch hdr.Typeflag {
		case tar.TypeFifo:
			return unix.Mkfifoat(dirfd, base, perm)
		case tar.TypeChar:
			return unix.Mknodat(dirfd, base, unix.S_IFCHR|perm, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
		default:
			return unix.Mknodat(dirfd, base, unix.S_IFBLK|perm, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
		}
	})
}

func (x *extractor) owner(name string, hdr *tar.Header) error {
	return x.root.Lchown(name, hdr.Uid, hdr.Gid)
}

// meta sets owner, mode (unless the entry is a symlink) and mtime of a
// newly created non-directory entry.
func (x *extractor) meta(name string, hdr *tar.Header, mode fs.FileMode, chmod bool) error {
	if err := x.owner(name, hdr); err != nil {
		return err
	}
	if chmod {
		err := x.inParent(name, func(dirfd int, base string) error {
			return unix.Fchmodat(dirfd, base, unixMode(mode), 0)
		})
		if err != nil {
			return err
		}
	}
	return x.times(name, hdr.ModTime)
}

func (x *extractor) times(name string, mtime time.Time) error {
	return x.inParent(name, func(dirfd int, base string) error {
		ts := unix.NsecToTimespec(mtime.UnixNano())
		return unix.UtimesNanoAt(dirfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func (x *extractor) xattrs(name string, hdr *tar.Header) error {
	if !hasXattrs(hdr) {
		return nil
	}
	d, err := x.root.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return setXattrs(int(d.Fd()), hdr)
}

// finishDirs applies directory modes and mtimes, deepest first, so setting
// a parent's mtime is the last change inside it.
func (x *extractor) finishDirs() error {
	slices.SortStableFunc(x.dirs, func(a, b dirMeta) int {
		return cmp.Compare(strings.Count(b.name, "/"), strings.Count(a.name, "/"))
	})
	for _, d := range x.dirs {
		fi, err := x.root.Lstat(d.name)
		if err != nil || !fi.IsDir() {
			continue // replaced by a later entry
		}
		if err := x.root.Chmod(d.name, d.mode); err != nil {
			return fmt.Errorf("setting mode of %q: %w", d.name, err)
		}
		if err := x.times(d.name, d.mtime); err != nil {
			return fmt.Errorf("setting mtime of %q: %w", d.name, err)
		}
	}
	return nil
}

const xattrPrefix = "SCHILY.xattr."

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			return true
		}
	}
	return false
}

// dropOverlayXattrs removes overlayfs's own attributes (trusted.overlay.*)
// from an entry: in a layer they would steer the guest's overlay (opaque
// marks, redirects, metacopy), which only the layer format's whiteouts may
// do. Docker's and containerd's appliers drop them too.
func dropOverlayXattrs(hdr *tar.Header) {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix+"trusted.overlay.") {
			delete(hdr.PAXRecords, k)
		}
	}
}

func setXattrs(fd int, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if err := unix.Fsetxattr(fd, attr, []byte(v), 0); err != nil {
			return fmt.Errorf("setting xattr %s: %w", attr, err)
		}
	}
	return nil
}

// unixMode converts permission and special bits to the st_mode bits
// chmod(2) takes; os.FileMode keeps setuid, setgid and sticky elsewhere.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}

// Extract unpacks the tar stream r into the empty directory dir as the disk
// builds do (see extractTar): owners, modes, links and device nodes kept,
// nothing written outside dir whatever the entries name. It returns the
// bytes the files take. Builds use it for their contexts and for the file
// systems of the images they copy from.
func Extract(ctx context.Context, r io.Reader, dir string) (int64, error) {
	u, err := extractTar(ctx, r, dir, DefaultMaxUnpacked)
	return u.bytes, err
}

// ErrTooLarge is an image (or layer, or build context) that unpacks to
// more than the limit: the client's error (400), not the daemon's.
var ErrTooLarge = errs.New(errdefs.ErrInvalidArgument, "image too large")

// DefaultMaxUnpacked bounds what one image unpacks to when the daemon
// sets no limit (Builder.MaxUnpacked): 32 GiB.
const DefaultMaxUnpacked = 32 << 30

// copySparse copies r to f, seeking over blocks of zeros instead of
// writing them, so a file that is mostly holes (a sparse file in a layer)
// takes no more of the host's disk than its data. It returns the bytes
// copied, holes included.
func copySparse(f *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	var n int64
	hole := false
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			if isZero(buf[:k]) {
				if _, serr := f.Seek(int64(k), io.SeekCurrent); serr != nil {
					return n, serr
				}
				hole = true
			} else {
				if _, werr := f.Write(buf[:k]); werr != nil {
					return n, werr
				}
				hole = false
			}
			n += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	if hole {
		// A trailing hole: the file's length is set, not written.
		if err := f.Truncate(n); err != nil {
			return n, err
		}
	}
	return n, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
