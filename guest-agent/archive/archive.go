// Package archive copies files in and out of a container's root file
// system as tars, for docker cp: paths are resolved inside the root as the
// container itself would resolve them (symlinks followed, an absolute
// target starting again at the container's root, ".." stopping there),
// and every file operation goes through an os.Root, so no path a
// container planted leads outside its root.
package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// ErrNotFound: nothing at the path.
var ErrNotFound = errors.New("no such file or directory")

// ErrInvalid: a tar entry or request that cannot be applied.
var ErrInvalid = errors.New("invalid")

// maxLinks bounds the symlinks one resolution follows.
const maxLinks = 255

// Resolve returns p (absolute or relative to the root: "/" either way) as
// a clean path relative to the root, every symlink but the last
// component's resolved inside it; with followLast the last is resolved
// too.
func Resolve(root *os.Root, p string, followLast bool) (string, error) {
	var done []string // resolved components
	todo := components(p)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := path.Join(append(done, c)...)
		if len(todo) == 0 && !followLast {
			done = append(done, c)
			break
		}
		info, err := root.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			done = append(done, c) // what does not exist yet resolves to itself
			continue
		}
		if err != nil {
			return "", err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := root.Readlink(cur)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			done = nil
		}
		todo = append(components(target), todo...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

func components(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// Stat is a path's description, as docker cp's stat header has it.
type Stat struct {
	Name       string
	Size       int64
	Mode       fs.FileMode
	Mtime      time.Time
	LinkTarget string
}

// StatPath describes p, its last component followed only when p ends in
// "/" or "/." (as docker cp reads a path), and returns its resolved path.
func StatPath(root *os.Root, p string) (Stat, string, error) {
	rel, err := Resolve(root, p, strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/."))
	if err != nil {
		return Stat{}, "", err
	}
	info, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return Stat{}, "", fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if err != nil {
		return Stat{}, "", err
	}
	st := Stat{Name: path.Base("/" + rel), Size: info.Size(), Mode: info.Mode(), Mtime: info.ModTime()}
	if rel == "." {
		st.Name = "/"
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		if st.LinkTarget, err = root.Readlink(rel); err != nil {
			return Stat{}, "", err
		}
	}
	return st, rel, nil
}

// Write writes a tar of the path rel (relative to the root, resolved) to
// w: its own name (base) as the top entry, a directory's contents below.
func Write(w io.Writer, root *os.Root, rel, base string) error {
	tw := tar.NewWriter(w)
	top, err := root.Lstat(rel)
	if err != nil {
		return err
	}
	if top.Mode()&fs.ModeSymlink != 0 {
		// A symlink is the tar's one entry (the walk would follow it).
		link, err := root.Readlink(rel)
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(top, link)
		if err != nil {
			return err
		}
		h.Name, h.Uname, h.Gname, h.Format = base, "", "", tar.FormatPAX
		if st, ok := top.Sys().(*syscall.Stat_t); ok {
			h.Uid, h.Gid = int(st.Uid), int(st.Gid)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		return tw.Close()
	}
	err = fs.WalkDir(root.FS(), rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = root.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		under := strings.TrimPrefix(strings.TrimPrefix(p, rel), "/")
		if p == rel {
			under = ""
		}
		h.Name = path.Join(base, under)
		if d.IsDir() {
			h.Name += "/"
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			h.Uid, h.Gid = int(st.Uid), int(st.Gid)
		}
		h.Uname, h.Gname, h.Format = "", "", tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, io.LimitReader(f, h.Size))
		if err == nil && n < h.Size {
			_, err = io.CopyN(tw, zeros{}, h.Size-n) // the file shrank meanwhile
		}
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Options are docker cp's for a copy into a container.
type Options struct {
	// KeepOwners keeps the tar's owners; otherwise root owns everything.
	KeepOwners bool
	// NoOverwriteDirNonDir refuses to replace a directory with something
	// else, or the reverse.
	NoOverwriteDirNonDir bool
}

// Extract unpacks the tar r into the directory dir (relative to the root,
// resolved): entries with clean relative names only, created through the
// root, replacing what is there.
func Extract(r io.Reader, root *os.Root, dir string, o Options) error {
	info, err := root.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, dir)
	}
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrInvalid, dir)
	}
	sub, err := root.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer sub.Close()
	tr := tar.NewReader(r)
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading the tar: %v", ErrInvalid, err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if name == "" || name == "." {
			continue
		}
		if path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: tar entry %q leaves the destination", ErrInvalid, h.Name)
		}
		if err := sub.MkdirAll(path.Dir(name), 0o755); err != nil && path.Dir(name) != "." {
			return err
		}
		old, err := sub.Lstat(name)
		exists := err == nil
		if exists && o.NoOverwriteDirNonDir && old.IsDir() != (h.Typeflag == tar.TypeDir) {
			return fmt.Errorf("%w: cannot overwrite %s with a %s", ErrInvalid, name, kind(h.Typeflag))
		}
		if exists && !(old.IsDir() && h.Typeflag == tar.TypeDir) {
			if err := sub.RemoveAll(name); err != nil {
				return err
			}
		}
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if !exists || !old.IsDir() {
				if err := sub.Mkdir(name, mode); err != nil {
					return err
				}
			}
			dirs = append(dirs, dirTime{name, h.ModTime})
		case tar.TypeReg:
			f, err := sub.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := sub.Symlink(h.Linkname, name); err != nil {
				return err
			}
		case tar.TypeLink:
			target := path.Clean(h.Linkname)
			if path.IsAbs(target) || target == ".." || strings.HasPrefix(target, "../") {
				return fmt.Errorf("%w: hard link %q to %q leaves the destination", ErrInvalid, h.Name, h.Linkname)
			}
			if err := sub.Link(target, name); err != nil {
				return err
			}
		default:
			continue // devices and fifos are not copied into containers
		}
		uid, gid := 0, 0
		if o.KeepOwners {
			uid, gid = h.Uid, h.Gid
		}
		if err := sub.Lchown(name, uid, gid); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeSymlink {
			// After the chown, which clears setuid and setgid bits.
			if err := sub.Chmod(name, fs.FileMode(h.Mode)&fs.ModePerm|specialBits(h.Mode)); err != nil {
				return err
			}
			if h.Typeflag != tar.TypeDir {
				sub.Chtimes(name, h.ModTime, h.ModTime)
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		sub.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime)
	}
	return nil
}

func specialBits(mode int64) fs.FileMode {
	var m fs.FileMode
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func kind(t byte) string {
	if t == tar.TypeDir {
		return "directory"
	}
	return "non-directory"
}
