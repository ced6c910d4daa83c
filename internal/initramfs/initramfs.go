// Package initramfs writes the guest image that the guest kernel unpacks as
// its root file system: an uncompressed newc cpio archive whose /init is a
// given static binary (the agent), plus the few directories and device nodes
// that must exist before that binary runs.
//
// The archive is uncompressed on purpose: under TCG the guest decompresses
// at emulated speed, which costs more than reading a few extra megabytes from
// host memory. The output is deterministic (fixed order, zero timestamps and
// owners, sequential inode numbers), so the same binary always gives the same
// image and images can be cached by content.
//
// This package does not build the agent, does not compress, and does not add
// anything the agent can create for itself at run time (mounts, other nodes).
package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// File is an extra regular file to place in the image.
type File struct {
	// Path inside the image, relative ("bin/busybox"); parents must be
	// directories already in the image (the base layout or earlier Dirs).
	Path string
	Mode os.FileMode
	Data []byte
}

// Image describes one guest image.
type Image struct {
	// Init is the static binary run as PID 1.
	Init []byte
	// Dirs are extra directories (mode 0755), created in order after the
	// base layout.
	Dirs []string
	// Files are extra regular files, written after Dirs.
	Files []File
}

// entry is one archive member before encoding.
type entry struct {
	name      string
	mode      uint32 // type bits | permission bits, as in st_mode
	rdevMajor uint32
	rdevMinor uint32
	data      []byte
	nlink     uint32
}

// st_mode type bits (include/uapi/linux/stat.h).
const (
	modeDir  = 0o040000
	modeChr  = 0o020000
	modeReg  = 0o100000
	modeMask = 0o7777
)

// baseLayout is what the kernel and the agent need before the agent can
// mount anything: the kernel opens /dev/console for PID 1's stdio before
// exec'ing /init (without it PID 1 starts with no stdin/stdout/stderr), and
// /dev/null is used for processes that get no input. The directories are
// mount points the agent fills with proc, sysfs, tmpfs and disks.
func baseLayout() []entry {
	dir := func(name string, perm uint32) entry {
		return entry{name: name, mode: modeDir | perm, nlink: 2}
	}
	chr := func(name string, perm, major, minor uint32) entry {
		return entry{name: name, mode: modeChr | perm, rdevMajor: major, rdevMinor: minor, nlink: 1}
	}
	return []entry{
		dir("dev", 0o755),
		chr("dev/console", 0o600, 5, 1),
		chr("dev/null", 0o666, 1, 3),
		dir("proc", 0o555),
		dir("sys", 0o555),
		dir("run", 0o755),
		dir("tmp", 0o1777),
		dir("mnt", 0o755),
	}
}

// Write encodes img as a newc archive to w.
func Write(w io.Writer, img Image) error {
	if len(img.Init) == 0 {
		return errors.New("initramfs: init binary is empty")
	}
	entries := baseLayout()
	for _, d := range img.Dirs {
		name, err := cleanName(d)
		if err != nil {
			return err
		}
		entries = append(entries, entry{name: name, mode: modeDir | 0o755, nlink: 2})
	}
	for _, f := range img.Files {
		name, err := cleanName(f.Path)
		if err != nil {
			return err
		}
		if !f.Mode.IsRegular() {
			return fmt.Errorf("initramfs: %s: only regular files can be added, got mode %v", f.Path, f.Mode)
		}
		entries = append(entries, entry{name: name, mode: modeReg | uint32(f.Mode.Perm()), data: f.Data, nlink: 1})
	}
	entries = append(entries, entry{name: "init", mode: modeReg | 0o755, data: img.Init, nlink: 1})
	if err := checkNames(entries); err != nil {
		return err
	}

	bw := bufio.NewWriterSize(w, 1<<16)
	for i, e := range entries {
		if err := writeEntry(bw, uint32(i+1), e); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", e.name, err)
		}
	}
	if err := writeEntry(bw, 0, entry{name: trailerName, nlink: 1}); err != nil {
		return fmt.Errorf("initramfs: write trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// WriteFile builds the image for the init binary at initPath and writes it
// to out atomically (a temporary file renamed into place), so a reader never
// sees a half-written image.
func WriteFile(out, initPath string) error {
	bin, err := os.ReadFile(initPath)
	if err != nil {
		return fmt.Errorf("initramfs: read init binary: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := Write(tmp, Image{Init: bin}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

func cleanName(p string) (string, error) {
	c := filepath.Clean(strings.TrimPrefix(p, "/"))
	if c == "." || c == ".." || strings.HasPrefix(c, "../") || c == trailerName {
		return "", fmt.Errorf("initramfs: invalid path %q", p)
	}
	return c, nil
}

// checkNames rejects duplicates and members whose parent directory is not
// in the archive: the kernel's unpacker does not create missing parents, so
// such a member would silently be dropped at boot.
func checkNames(entries []entry) error {
	dirs := map[string]bool{".": true}
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.name] {
			return fmt.Errorf("initramfs: %s appears twice", e.name)
		}
		seen[e.name] = true
		if parent := filepath.Dir(e.name); !dirs[parent] {
			return fmt.Errorf("initramfs: %s: parent directory %s is not in the image", e.name, parent)
		}
		if e.mode&^modeMask == modeDir {
			dirs[e.name] = true
		}
	}
	return nil
}
