// Package rootfs turns images into the block devices a guest mounts:
// read-only ext4 disks holding an image's root file system (one flattened
// disk, or a flattened base with a disk per layer above it, see layer.go),
// built once and cached by layer chain ID, and a fresh writable ext4 disk
// per container for its read-write layer. The guest agent stacks them with
// overlayfs.
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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/engine/images"
)

// Builder builds and caches image disks under one directory, <root>/disks
// (flat-<chain>.ext4 and layer-<chain>.ext4, see layer.go), with scratch
// space in <root>/tmp. It is safe for concurrent use by goroutines and
// processes.
type Builder struct {
	root string
	// MaxUnpacked bounds what an image (or a layer) unpacks to: larger
	// ones fail their disk's build with ErrTooLarge, checked as the files
	// are written. 0 is DefaultMaxUnpacked.
	MaxUnpacked int64
}

func (b *Builder) maxUnpacked() int64 {
	if b.MaxUnpacked > 0 {
		return b.MaxUnpacked
	}
	return DefaultMaxUnpacked
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

func (b *Builder) lockPath(key string) string { return filepath.Join(b.disksDir(), key+".lock") }

// keyOf returns the cache key a file or scratch name under disks/ or tmp/
// belongs to: "flat-<hex>" or "layer-<hex>", or the bare image ID hex of
// the disks of earlier versions, which were keyed by image.
func keyOf(name string) (string, bool) {
	name = strings.TrimPrefix(name, ".")
	kind := ""
	for _, k := range []string{"flat-", "layer-"} {
		if strings.HasPrefix(name, k) {
			kind, name = k, name[len(k):]
		}
	}
	if len(name) < 64 || !hexID.MatchString(name[:64]) || (len(name) > 64 && !strings.ContainsRune("-.", rune(name[64]))) {
		return "", false
	}
	return kind + name[:64], true
}

// removeStale deletes scratch entries (named <key>-...) whose build is no
// longer running, which the key's lock tells.
func (b *Builder) removeStale() {
	for _, dir := range []string{b.tmpDir(), b.disksDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			key, ok := keyOf(e.Name())
			if !ok || !strings.HasPrefix(strings.TrimPrefix(e.Name(), "."), key+"-") {
				continue
			}
			l, free, err := flock.TryAcquire(b.lockPath(key), true)
			if err != nil || !free {
				continue
			}
			os.RemoveAll(filepath.Join(dir, e.Name()))
			l.Release()
		}
	}
}

// Prune deletes the cached disks that no image of live needs: for each
// image, the flattened disk and the layer disk of every prefix of its
// layers are kept. A disk being built is left alone; a VM that has a
// deleted disk open keeps its copy until it ends, and a stopped container
// whose disk went gets it built again at its next start. It returns the
// number of disks deleted.
func (b *Builder) Prune(ctx context.Context, live []images.Image) (int, error) {
	keep := map[string]bool{}
	for _, img := range live {
		content := img.Content()
		if content == nil {
			continue
		}
		cf, err := content.ConfigFile()
		if err != nil {
			// An image whose config cannot be read keeps nothing: its
			// disks could not be built either.
			continue
		}
		keep[flatKey(emptyChain)] = keep[flatKey(emptyChain)] || len(cf.RootFS.DiffIDs) == 0
		for _, c := range ChainIDs(cf.RootFS.DiffIDs) {
			keep[flatKey(c)], keep[layerKey(c)] = true, true
		}
	}
	entries, err := os.ReadDir(b.disksDir())
	if err != nil {
		return 0, err
	}
	doomed := map[string]bool{}
	for _, e := range entries {
		if key, ok := keyOf(e.Name()); ok && !keep[key] && !strings.HasPrefix(e.Name(), ".") {
			doomed[key] = true
		}
	}
	removed := 0
	for key := range doomed {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		l, free, err := flock.TryAcquire(b.lockPath(key), true)
		if err != nil || !free {
			continue
		}
		for _, ext := range []string{".ext4", ".empty", ".unfit"} {
			err := os.Remove(b.diskFile(key, ext))
			if err == nil && ext == ".ext4" {
				removed++
			}
		}
		// The lock goes too: a builder that opened it before this unlink
		// and takes it after may build the disk once more, which is all.
		os.Remove(b.lockPath(key))
		l.Release()
	}
	return removed, nil
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
	mkfs, err := findMkfs()
	if err != nil {
		return "", err
	}
	content := img.Content()
	if content == nil {
		return "", fmt.Errorf("image %s has no content to build a disk from", img.ID)
	}
	cf, err := content.ConfigFile()
	if err != nil {
		return "", fmt.Errorf("reading the config of image %s: %w", img.ID, err)
	}
	top := emptyChain
	if chains := ChainIDs(cf.RootFS.DiffIDs); len(chains) > 0 {
		top = chains[len(chains)-1]
	}
	final, unpacked, err := b.flatDisk(ctx, mkfs, content, top, displayName(img, h))
	if err != nil {
		return "", err
	}
	if unpacked > 0 {
		// A pulled image's layers have now been checked against its diff
		// IDs; the store records that, with their unpacked size, as a load
		// would. Failing to record it costs nothing but a size shown as
		// compressed, so the disk is returned regardless.
		_ = img.RecordUnpacked(ctx, unpacked)
	}
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

// build makes the flattened disk of content's layers at final and returns
// their unpacked size. name is how errors name the image.
func (b *Builder) build(ctx context.Context, mkfs string, content v1.Image, name, key, final string) (int64, error) {
	dir, err := os.MkdirTemp(b.tmpDir(), key+"-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	checked, err := checkDiffIDs(content, name)
	if err != nil {
		return 0, err
	}
	rc := mutate.Extract(checked)
	use, err := extractTar(ctx, rc, dir, b.maxUnpacked())
	rc.Close()
	if err != nil {
		return 0, err
	}
	unpacked, ok := checked.unpacked()
	if !ok {
		// extractTar reads mutate.Extract to its end, which reads every
		// layer to its end; a layer not read whole is a bug, not a pass.
		return 0, fmt.Errorf("image %s: not every layer was read to its end", name)
	}
	return unpacked, b.pack(ctx, mkfs, dir, use, key, final)
}

// pack makes a read-only ext4 disk of dir at final (through a temporary
// file, renamed once complete and synced).
func (b *Builder) pack(ctx context.Context, mkfs, dir string, use usage, key, final string) error {
	f, err := os.CreateTemp(b.disksDir(), "."+key+"-*.ext4")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	size, inodes := diskSize(use)
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_, h, _ := strings.Cut(key, "-")
	args := []string{
		"-q", "-F",
		"-b", strconv.Itoa(blockSize),
		"-N", strconv.FormatInt(inodes, 10),
		"-m", "0",
		"-L", "vmctl-" + h[:10],
		// A UUID derived from the key names the disk stably.
		"-U", uuidFrom(key),
		// Read-only: no journal and no room reserved for growth.
		"-O", "^has_journal,^resize_inode",
		"-E", "root_owner=0:0,nodiscard",
		"-d", dir,
		tmp,
	}
	if out, err := exec.CommandContext(ctx, mkfs, args...).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("mkfs.ext4: %w: %s", err, firstLine(out))
	}
	// The read-only feature makes the kernel refuse a read-write mount of a
	// disk that VMs share; mke2fs 1.47 cannot set it, tune2fs can.
	tune := filepath.Join(filepath.Dir(mkfs), "tune2fs")
	if out, err := exec.CommandContext(ctx, tune, "-O", "read-only", tmp).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("tune2fs: %w: %s", err, firstLine(out))
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, final)
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
