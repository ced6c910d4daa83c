// Package rootfs turns images into the block devices a guest mounts: a
// read-only ext4 disk holding an image's flattened root file system,
// built once per image and cached by image ID, and a fresh writable ext4
// disk per container for its read-write layer. The guest agent stacks the
// two with overlayfs.
//
// Images are unpacked on the host into a temporary directory (through
// os.Root, so hostile layer paths cannot escape it), each layer checked
// against the diff ID its config lists as it is unpacked (for a pulled
// image this is the first such check; see diffid.go), and packed with
// mkfs.ext4 -d, which needs e2fsprogs but no mounting, loop devices or
// kernel support. Building needs root, to keep owners and make device nodes.
//
// This package does not store images (see engine/images) and does not
// attach or mount disks.
package rootfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/engine/images"
)

// Builder builds and caches image disks under one directory:
// <root>/disks/<image-id-hex>.ext4, with scratch space in <root>/tmp.
// It is safe for concurrent use by goroutines and processes.
type Builder struct {
	root string
}

// NewBuilder opens (creating if needed) a disk cache at root and removes
// scratch directories left by builds that died.
func NewBuilder(root string) (*Builder, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	b := &Builder{root: root}
	for _, d := range []string{b.disksDir(), b.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening disk cache: %w", err)
		}
	}
	b.removeStale()
	return b, nil
}

func (b *Builder) disksDir() string { return filepath.Join(b.root, "disks") }
func (b *Builder) tmpDir() string   { return filepath.Join(b.root, "tmp") }

var hexID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// idHex checks an image ID ("sha256:<hex>" or "<hex>") and returns the hex.
func idHex(id string) (string, error) {
	h := strings.TrimPrefix(id, "sha256:")
	if !hexID.MatchString(h) {
		return "", fmt.Errorf("invalid image ID %q", id)
	}
	return h, nil
}

// DiskPath is where the disk of the image with this ID is (or would be) cached.
func (b *Builder) DiskPath(id string) (string, error) {
	h, err := idHex(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(b.disksDir(), h+".ext4"), nil
}

func (b *Builder) lockPath(h string) string { return filepath.Join(b.disksDir(), h+".lock") }

// RemoveImageDisk deletes the cached disk of the image with this ID (a
// removed image), waiting for a build of it in progress. A VM that has the
// disk open keeps its copy until it ends.
func (b *Builder) RemoveImageDisk(ctx context.Context, id string) error {
	h, err := idHex(id)
	if err != nil {
		return err
	}
	l, err := flock.Acquire(ctx, b.lockPath(h))
	if err != nil {
		return err
	}
	defer l.Release()
	if err := os.Remove(filepath.Join(b.disksDir(), h+".ext4")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// removeStale deletes scratch entries (named <hex>-...) whose build is no
// longer running, which the per-image lock tells.
func (b *Builder) removeStale() {
	for _, dir := range []string{b.tmpDir(), b.disksDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			h, _, ok := strings.Cut(strings.TrimPrefix(e.Name(), "."), "-")
			if !ok || !hexID.MatchString(h) {
				continue
			}
			l, free, err := flock.TryAcquire(b.lockPath(h), true)
			if err != nil || !free {
				continue
			}
			os.RemoveAll(filepath.Join(dir, e.Name()))
			l.Release()
		}
	}
}

// ImageDisk returns the path of a read-only ext4 disk holding img's
// flattened root file system, building it on first use. Concurrent callers
// (in any process) for the same image wait for one build. A failed or
// cancelled build leaves nothing behind.
func (b *Builder) ImageDisk(ctx context.Context, img images.Image) (string, error) {
	h, err := idHex(img.ID)
	if err != nil {
		return "", err
	}
	final := filepath.Join(b.disksDir(), h+".ext4")
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	mkfs, err := findMkfs()
	if err != nil {
		return "", err
	}
	if img.Content() == nil {
		return "", fmt.Errorf("image %s has no content to build a disk from", img.ID)
	}
	l, err := flock.Acquire(ctx, b.lockPath(h))
	if err != nil {
		return "", err
	}
	defer l.Release()
	// Someone else may have built it while we waited.
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	unpacked, err := b.build(ctx, mkfs, img, h, final)
	if err != nil {
		if cl, ok := errors.AsType[*CorruptLayerError](err); ok {
			// Already one line that names the image and says what to do.
			return "", errs.Class(errdefs.ErrDataLoss, cl)
		}
		return "", fmt.Errorf("building disk for image %s: %w", shortID(h), err)
	}
	// A pulled image's layers have now been checked against its diff IDs;
	// the store records that, with their unpacked size, as a load would.
	// Failing to record it costs nothing but a size shown as compressed,
	// so the disk is returned regardless.
	_ = img.RecordUnpacked(ctx, unpacked)
	return final, nil
}

func shortID(h string) string { return h[:12] }

// displayName is how errors name an image: by its first tag, else by its
// short ID, as docker images lists it.
func displayName(img images.Image, h string) string {
	if len(img.RepoTags) > 0 {
		return img.RepoTags[0]
	}
	return shortID(h)
}

// build makes the disk and returns the unpacked size of the image's layers.
func (b *Builder) build(ctx context.Context, mkfs string, img images.Image, h, final string) (int64, error) {
	dir, err := os.MkdirTemp(b.tmpDir(), h+"-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	content, err := checkDiffIDs(img.Content(), displayName(img, h))
	if err != nil {
		return 0, err
	}
	rc := mutate.Extract(content)
	use, err := extractTar(ctx, rc, dir)
	rc.Close()
	if err != nil {
		return 0, err
	}
	unpacked, ok := content.unpacked()
	if !ok {
		// extractTar reads mutate.Extract to its end, which reads every
		// layer to its end; a layer not read whole is a bug, not a pass.
		return 0, fmt.Errorf("image %s: not every layer was read to its end", displayName(img, h))
	}
	f, err := os.CreateTemp(b.disksDir(), "."+h+"-*.ext4")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	size, inodes := diskSize(use)
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	args := []string{
		"-q", "-F",
		"-b", strconv.Itoa(blockSize),
		"-N", strconv.FormatInt(inodes, 10),
		"-m", "0",
		"-L", "vmctl-" + h[:10],
		// A UUID derived from the image ID names the disk stably.
		"-U", uuidFrom(h),
		// Read-only: no journal and no room reserved for growth.
		"-O", "^has_journal,^resize_inode",
		"-E", "root_owner=0:0,nodiscard",
		"-d", dir,
		tmp,
	}
	if out, err := exec.CommandContext(ctx, mkfs, args...).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("mkfs.ext4: %w: %s", err, firstLine(out))
	}
	// The read-only feature makes the kernel refuse a read-write mount of a
	// disk that VMs share; mke2fs 1.47 cannot set it, tune2fs can.
	tune := filepath.Join(filepath.Dir(mkfs), "tune2fs")
	if out, err := exec.CommandContext(ctx, tune, "-O", "read-only", tmp).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("tune2fs: %w: %s", err, firstLine(out))
	}
	if err := syncFile(tmp); err != nil {
		return 0, err
	}
	return unpacked, os.Rename(tmp, final)
}

// diskSize sizes a read-only disk from what extraction counted: data plus
// inode tables (256-byte inodes) plus a margin for ext4's own metadata
// (superblock copies, group descriptors, bitmaps, directory indexes).
func diskSize(u usage) (size, inodes int64) {
	inodes = u.inodes + u.inodes/10 + 64
	size = u.bytes + u.bytes/10 + inodes*256 + 4<<20
	return roundUp(size, 1<<20), inodes
}

func uuidFrom(h string) string {
	s := sha256.Sum256([]byte("vmctl image disk " + h))
	s[6] = s[6]&0x0f | 0x50 // name-based UUID layout (version 5 bits, variant 10)
	s[8] = s[8]&0x3f | 0x80
	x := fmt.Sprintf("%x", s[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// RemoveDisk deletes the cached disk of the image with this ID, if any.
// A running VM that has the disk open keeps its copy until it exits.
func (b *Builder) RemoveDisk(id string) error {
	p, err := b.DiskPath(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ErrNoMkfs says e2fsprogs is missing.
var ErrNoMkfs = errors.New("mkfs.ext4 not found: install e2fsprogs")

// mkfsFallbacks are tried when PATH has no mkfs.ext4: it lives in an sbin
// directory that a non-login PATH often lacks.
var mkfsFallbacks = []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"}

// findMkfs locates mkfs.ext4.
func findMkfs() (string, error) {
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range mkfsFallbacks {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNoMkfs
}
