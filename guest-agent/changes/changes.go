// Package changes writes what a container changed, the upper directory of
// its overlayfs root, as an OCI image layer: a tar in which overlayfs's
// whiteouts (character devices 0/0) become ".wh.NAME" files and its
// opaque directories (trusted.overlay.opaque=y) get a ".wh..wh..opq"
// entry, as the image spec's layer format has them.
//
// A build runs several steps in one container, so a layer can hold the
// changes since a Snapshot taken after the previous step: entries whose
// inode, type, mode, owner, size, times or link target differ, and a
// whiteout for each path the previous step's layer had and the upper
// directory no longer has. ctime moves on every change to a file's data or
// metadata and cannot be set from user space, so a change a process makes
// cannot hide from it.
//
// Files are read through an os.Root on the upper directory and never
// followed: a container's symlinks point where they like, and the writer
// stores them as symlinks.
package changes

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Whiteout names of the OCI layer format.
const (
	WhiteoutPrefix = ".wh."
	WhiteoutOpaque = ".wh..wh..opq"
)

// stamp is what identifies one version of a file.
type stamp struct {
	ino, size, rdev      uint64
	mode, uid, gid       uint32
	mtime, ctime         int64 // nanoseconds
	link                 string
	opaque, whiteoutNode bool
}

// Snapshot is the state of an upper directory after a Write.
type Snapshot struct {
	files map[string]stamp // path relative to the upper directory, "a/b"
}

// Write writes the changes in the upper directory dir since prev (all of
// it for a zero Snapshot) as a layer tar to w. It returns the state to
// pass to the next Write and the number of entries written: 0 when
// nothing changed (the tar is then an empty one).
func Write(w io.Writer, dir string, prev Snapshot) (next Snapshot, n int, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Snapshot{}, 0, err
	}
	defer root.Close()
	next = Snapshot{files: map[string]stamp{}}
	var names []string
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, err := stampOf(root, p, info)
		if err != nil {
			return err
		}
		next.files[p] = st
		names = append(names, p)
		return nil
	})
	if err != nil {
		return Snapshot{}, 0, fmt.Errorf("reading the upper directory: %w", err)
	}
	sort.Strings(names)
	// What changed, and what the previous layer had and the directory no
	// longer has (one whiteout for the topmost path gone).
	changed := map[string]bool{}
	for _, p := range names {
		if old, had := prev.files[p]; !had || old != next.files[p] {
			changed[p] = true
		}
	}
	var gone []string
	for p := range prev.files {
		if _, ok := next.files[p]; !ok {
			gone = append(gone, p)
		}
	}
	sort.Strings(gone)
	var whiteouts []string
	for i, p := range gone {
		if i > 0 && under(p, gone[:i]) {
			continue
		}
		if prev.files[p].whiteoutNode {
			continue // a whiteout that went: the lower file is back, which a layer cannot say
		}
		whiteouts = append(whiteouts, p)
	}
	// Every directory above a change is listed too, as it is now, as
	// Docker's layers list them: a layer that only implied one could not
	// be stacked as a lower directory of its own (the engine's layer
	// disks) without losing the directory's owner and mode.
	parents := map[string]bool{}
	for _, p := range append(slices.Collect(maps.Keys(changed)), whiteouts...) {
		for d := path.Dir(p); d != "." && !parents[d]; d = path.Dir(d) {
			parents[d] = true
		}
	}
	tw := tar.NewWriter(w)
	links := map[uint64]string{} // inode of a file with several names -> the name written
	for _, p := range names {
		if !changed[p] && !parents[p] {
			continue
		}
		old, had := prev.files[p]
		k, err := writeEntry(tw, root, p, next.files[p], had && old.opaque, links)
		if err != nil {
			return Snapshot{}, 0, err
		}
		n += k
	}
	for _, p := range whiteouts {
		if err := tw.WriteHeader(&tar.Header{Name: whiteoutName(p), Typeflag: tar.TypeReg, Format: tar.FormatPAX, ModTime: time.Unix(0, 0)}); err != nil {
			return Snapshot{}, 0, err
		}
		n++
	}
	if err := tw.Close(); err != nil {
		return Snapshot{}, 0, err
	}
	return next, n, nil
}

// under reports whether p lies below one of the sorted paths before it.
func under(p string, before []string) bool {
	for _, q := range before {
		if strings.HasPrefix(p, q+"/") {
			return true
		}
	}
	return false
}

func whiteoutName(p string) string {
	return path.Join(path.Dir(p), WhiteoutPrefix+path.Base(p))
}

func stampOf(root *os.Root, p string, info fs.FileInfo) (stamp, error) {
	sys, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return stamp{}, fmt.Errorf("%s: no stat data", p)
	}
	st := stamp{ino: sys.Ino, size: uint64(sys.Size), rdev: sys.Rdev, mode: sys.Mode, uid: sys.Uid, gid: sys.Gid,
		mtime: sys.Mtim.Nano(), ctime: sys.Ctim.Nano()}
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		l, err := root.Readlink(p)
		if err != nil {
			return stamp{}, err
		}
		st.link = l
	case info.Mode()&fs.ModeCharDevice != 0 && sys.Rdev == 0:
		st.whiteoutNode = true
	case info.IsDir():
		opaque, err := isOpaque(root, p)
		if err != nil {
			return stamp{}, err
		}
		st.opaque = opaque
	}
	return st, nil
}

// isOpaque reads overlayfs's opaque mark of a directory.
func isOpaque(root *os.Root, p string) (bool, error) {
	f, err := root.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		n, err := unix.Fgetxattr(int(f.Fd()), attr, buf)
		if err == nil && n == 1 && buf[0] == 'y' {
			return true, nil
		}
		if err != nil && !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.EOPNOTSUPP) {
			return false, fmt.Errorf("%s: %s: %w", p, attr, err)
		}
	}
	return false, nil
}

// writeEntry writes one changed path: a whiteout, a directory (with its
// opaque mark if it became opaque), a file, a link. It returns the number
// of entries written.
func writeEntry(tw *tar.Writer, root *os.Root, p string, st stamp, wasOpaque bool, links map[uint64]string) (int, error) {
	if st.whiteoutNode {
		return 1, tw.WriteHeader(&tar.Header{Name: whiteoutName(p), Typeflag: tar.TypeReg, Format: tar.FormatPAX, ModTime: time.Unix(0, 0)})
	}
	h := &tar.Header{Name: p, Mode: int64(st.mode & 0o7777), Uid: int(st.uid), Gid: int(st.gid),
		ModTime: time.Unix(0, st.mtime), Format: tar.FormatPAX}
	switch st.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		h.Typeflag, h.Name = tar.TypeDir, p+"/"
	case unix.S_IFLNK:
		h.Typeflag, h.Linkname = tar.TypeSymlink, st.link
	case unix.S_IFREG:
		if first, ok := links[st.ino]; ok {
			h.Typeflag, h.Linkname = tar.TypeLink, first
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(st.size)
		}
	case unix.S_IFCHR:
		h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, int64(unix.Major(st.rdev)), int64(unix.Minor(st.rdev))
	case unix.S_IFBLK:
		h.Typeflag, h.Devmajor, h.Devminor = tar.TypeBlock, int64(unix.Major(st.rdev)), int64(unix.Minor(st.rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		return 0, nil // a socket: nothing a layer holds
	}
	if err := tw.WriteHeader(h); err != nil {
		return 0, err
	}
	switch {
	case h.Typeflag == tar.TypeReg:
		if err := copyFile(tw, root, p, h.Size); err != nil {
			return 0, err
		}
		links[st.ino] = p
	case h.Typeflag == tar.TypeDir && st.opaque && !wasOpaque:
		return 2, tw.WriteHeader(&tar.Header{Name: path.Join(p, WhiteoutOpaque), Typeflag: tar.TypeReg, Format: tar.FormatPAX, ModTime: time.Unix(0, 0)})
	}
	return 1, nil
}

// copyFile writes size bytes of the file: a file that shrank meanwhile is
// padded with zeros, one that grew is cut, so the tar stays well formed.
func copyFile(w io.Writer, root *os.Root, p string, size int64) error {
	f, err := root.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if n < size {
		_, err = io.CopyN(w, zeros{}, size-n)
	}
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
