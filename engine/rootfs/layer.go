package rootfs

// Layer disks. A flattened disk holds a whole image, so a rebuild that
// changes one file of the last layer would rewrite all of it before the
// next run. Instead an image can be served as a stack, the guest's
// overlayfs lowers, top first:
//
//	layer-<chain n>.ext4   layer n alone, as an overlayfs lower directory
//	...
//	layer-<chain s+1>.ext4
//	flat-<chain s>.ext4    layers 1..s flattened
//
// where <chain i> is the OCI chain ID of layers 1..i. A layer disk holds
// only what its layer lists, with the layer format's whiteouts turned into
// overlayfs's (a character device 0/0 for ".wh.NAME", the
// trusted.overlay.opaque attribute for ".wh..wh..opq"), so it costs the
// size of that layer. Disks are keyed by chain ID, so an image that shares
// its lower layers with one run before (its base, or the previous build of
// the same Dockerfile) reuses their disks and writes only its own.
//
// A layer can only stand alone when it lists every directory above what it
// holds: overlayfs takes a directory's owner and mode from the topmost
// layer that has it, so a directory a layer implies without listing would
// come out root-owned 0755 over the real one. Layers that imply
// directories, or hard-link to a file of a lower layer, are flattened
// instead. Docker's layers and vmctl's own list their directories.
//
// The split s is chosen so the stack stays within the device budget the
// caller gives, and so the flattened part is one that already exists (a
// base run before) or the image's base (the newest tagged image whose
// layers the image starts with). With no such base the image gets one
// flattened disk, as a pulled image does.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/engine/images"
)

// Whiteout names of the image layer format.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// whiteoutMeta prefixes AUFS's own entries, which carry nothing a
	// file system shows.
	whiteoutMeta = ".wh..wh."
)

// overlayOpaque marks a directory that hides the layers below it.
const overlayOpaque = "trusted.overlay.opaque"

// ChainIDs returns the OCI chain ID of each prefix of diffIDs: the first
// is the first diff ID, each next one sha256 of "<previous> <diff ID>".
func ChainIDs(diffIDs []v1.Hash) []v1.Hash {
	out := make([]v1.Hash, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		s := sha256.Sum256([]byte(out[i-1].String() + " " + d.String()))
		out[i] = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
	}
	return out
}

// emptyChain keys the disk of an image with no layers.
var emptyChain = v1.Hash{Algorithm: "sha256", Hex: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}

func flatKey(chain v1.Hash) string  { return "flat-" + chain.Hex }
func layerKey(chain v1.Hash) string { return "layer-" + chain.Hex }

func (b *Builder) diskFile(key, ext string) string { return filepath.Join(b.disksDir(), key+ext) }

// Bases names the chain IDs (of their top layers) of the images that can
// serve as a base: a split of a stack is put at one of them.
type Bases func(ctx context.Context) (map[v1.Hash]bool, error)

// ImageDisks returns the disks that together hold img's root file system,
// top first, at most budget of them (see the package comment on layer
// disks), building what is missing. A budget of 1 gives ImageDisk's
// single flattened disk.
func (b *Builder) ImageDisks(ctx context.Context, img images.Image, budget int, bases Bases) ([]string, error) {
	content := img.Content()
	if content == nil {
		return nil, fmt.Errorf("image %s has no content to build a disk from", img.ID)
	}
	cf, err := content.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config of image %s: %w", img.ID, err)
	}
	chains := ChainIDs(cf.RootFS.DiffIDs)
	n := len(chains)
	whole := func() ([]string, error) {
		p, err := b.ImageDisk(ctx, img)
		if err != nil {
			return nil, err
		}
		return []string{p}, nil
	}
	if n < 2 || budget < 2 || exists(b.diskFile(flatKey(chains[n-1]), ".ext4")) {
		return whole()
	}
	var base map[v1.Hash]bool
	if bases != nil {
		if base, err = bases(ctx); err != nil {
			return nil, err
		}
	}
	s := split(chains, budget, func(c v1.Hash) bool { return exists(b.diskFile(flatKey(c), ".ext4")) }, base)
	if s == n {
		return whole()
	}
	mkfs, err := findMkfs()
	if err != nil {
		return nil, err
	}
	h, err := idHex(img.ID)
	if err != nil {
		return nil, err
	}
	name := displayName(img, h)
	checked, err := checkDiffIDs(content, name)
	if err != nil {
		return nil, err
	}
	var stack []string
	for i := n; i > s; i-- {
		p, kind, err := b.layerDisk(ctx, mkfs, checked.layers[i-1].(*checkedLayer), chains[i-1], name)
		if err != nil {
			return nil, err
		}
		if kind == layerUnfit {
			s = i // flatten through it
			break
		}
		if kind == layerMade {
			stack = append(stack, p)
		}
	}
	if s == n {
		return whole()
	}
	flat, _, err := b.flatDisk(ctx, mkfs, prefixImage{Image: content, n: s}, chains[s-1], name)
	if err != nil {
		return nil, err
	}
	return append(stack, flat), nil
}

// split picks s, the number of bottom layers to flatten; the layers above
// it get a disk each. It prefers the highest existing flattened prefix
// that leaves the stack within budget, then the newest base (capped so
// the stack fits), and otherwise flattens everything (s = n).
func split(chains []v1.Hash, budget int, flat func(v1.Hash) bool, bases map[v1.Hash]bool) int {
	n := len(chains)
	for k := n - 1; k >= 1 && n-k <= budget-1; k-- {
		if flat(chains[k-1]) {
			return k
		}
	}
	for k := n - 1; k >= 1; k-- {
		if bases[chains[k-1]] {
			return max(k, n-budget+1)
		}
	}
	return n
}

// prefixImage is an image cut to its first n layers.
type prefixImage struct {
	v1.Image
	n int
}

func (p prefixImage) Layers() ([]v1.Layer, error) {
	l, err := p.Image.Layers()
	if err != nil {
		return nil, err
	}
	if len(l) < p.n {
		return nil, fmt.Errorf("the image has %d layers, not %d", len(l), p.n)
	}
	return l[:p.n], nil
}

func (p prefixImage) ConfigFile() (*v1.ConfigFile, error) {
	cf, err := p.Image.ConfigFile()
	if err != nil {
		return nil, err
	}
	if len(cf.RootFS.DiffIDs) < p.n {
		return nil, fmt.Errorf("the image lists %d layers, not %d", len(cf.RootFS.DiffIDs), p.n)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = cf.RootFS.DiffIDs[:p.n]
	return cf, nil
}

// flatDisk returns the flattened disk of content's layers, keyed by the
// chain ID of the top one, building it on first use; concurrent callers
// (in any process) wait for one build. unpacked is the layers' unpacked
// size when this call built it, 0 when it was there.
func (b *Builder) flatDisk(ctx context.Context, mkfs string, content v1.Image, chain v1.Hash, name string) (path string, unpacked int64, err error) {
	key := flatKey(chain)
	final := b.diskFile(key, ".ext4")
	if exists(final) {
		return final, 0, nil
	}
	l, err := flock.Acquire(ctx, b.lockPath(key))
	if err != nil {
		return "", 0, err
	}
	defer l.Release()
	// Someone else may have built it while we waited.
	if exists(final) {
		return final, 0, nil
	}
	if unpacked, err = b.build(ctx, mkfs, content, name, key, final); err != nil {
		return "", 0, diskError(err, name, chain)
	}
	return final, unpacked, nil
}

// layerKind says what became of a layer: a disk, nothing (an empty
// layer needs none), or nothing because it cannot stand alone.
type layerKind int

const (
	layerMade layerKind = iota
	layerEmpty
	layerUnfit
)

// layerDisk returns the disk of one layer (the top of chain), building it
// on first use. What a layer turns out to be (empty, unfit) is kept as a
// marker file, so it is unpacked once.
func (b *Builder) layerDisk(ctx context.Context, mkfs string, layer *checkedLayer, chain v1.Hash, name string) (string, layerKind, error) {
	key := layerKey(chain)
	final := b.diskFile(key, ".ext4")
	known := func() (layerKind, bool) {
		switch {
		case exists(final):
			return layerMade, true
		case exists(b.diskFile(key, ".empty")):
			return layerEmpty, true
		case exists(b.diskFile(key, ".unfit")):
			return layerUnfit, true
		}
		return 0, false
	}
	if k, ok := known(); ok {
		return final, k, nil
	}
	l, err := flock.Acquire(ctx, b.lockPath(key))
	if err != nil {
		return "", 0, err
	}
	defer l.Release()
	if k, ok := known(); ok {
		return final, k, nil
	}
	k, err := b.buildLayer(ctx, mkfs, layer, key, final)
	if err != nil {
		return "", 0, diskError(err, name, chain)
	}
	if k != layerMade {
		ext := map[layerKind]string{layerEmpty: ".empty", layerUnfit: ".unfit"}[k]
		if err := os.WriteFile(b.diskFile(key, ext), nil, 0o644); err != nil {
			return "", 0, err
		}
	}
	return final, k, nil
}

// buildLayer unpacks one layer as an overlayfs lower directory and packs
// it, unless it is empty or cannot stand alone.
func (b *Builder) buildLayer(ctx context.Context, mkfs string, layer *checkedLayer, key, final string) (layerKind, error) {
	dir, err := os.MkdirTemp(b.tmpDir(), key+"-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	rc, err := layer.Uncompressed()
	if err != nil {
		return 0, err
	}
	x, err := extractLayer(ctx, rc, dir, b.maxUnpacked())
	if err == nil {
		// The diff ID is checked at the stream's end, past the tar's.
		_, err = io.Copy(io.Discard, rc)
	}
	rc.Close()
	if err != nil {
		return 0, err
	}
	if !layer.matched {
		return 0, fmt.Errorf("layer %d was not read to its end", layer.index+1)
	}
	switch {
	case !x.standsAlone():
		return layerUnfit, nil
	case x.entries == 0:
		return layerEmpty, nil
	}
	x.use.inodes++ // the root directory
	return layerMade, b.pack(ctx, mkfs, dir, x.use, key, final)
}

// extractLayer unpacks one layer tar into the empty directory dir in
// overlayfs's format (see extractor.overlay).
func extractLayer(ctx context.Context, r io.Reader, dir string, limit int64) (*extractor, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	x := &extractor{root: root, limit: limit, overlay: true, listed: map[string]bool{}, whiteouts: map[string]bool{}}
	if err := x.unpack(ctx, r); err != nil {
		return nil, err
	}
	return x, nil
}

// standsAlone reports whether the layer listed every directory it holds
// something in and linked only to its own files.
func (x *extractor) standsAlone() bool {
	if x.unlinked {
		return false
	}
	for d := range x.seenDirs {
		if !x.listed[d] {
			return false
		}
	}
	return true
}

// whiteout makes overlayfs's form of a ".wh." entry at name.
func (x *extractor) whiteout(name string) error {
	base := path.Base(name)
	parent := path.Dir(name)
	if err := x.mkParents(name); err != nil {
		return err
	}
	if base == whiteoutOpaque {
		return x.setOpaque(parent)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("%w: whiteout %q", errUnsafePath, name)
	}
	target = path.Join(parent, target)
	if _, err := x.root.Lstat(target); err == nil {
		// The layer also has something there: a whiteout hides only
		// what the layers below have, and this entry does that already.
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	err := x.inParent(target, func(dirfd int, base string) error {
		return unix.Mknodat(dirfd, base, unix.S_IFCHR, 0)
	})
	if err != nil {
		return err
	}
	x.whiteouts[target] = true
	x.use.bytes += direntBytes(target)
	x.use.inodes++
	return nil
}

// setOpaque marks the directory name (made if need be) as hiding what the
// layers below have in it.
func (x *extractor) setOpaque(name string) error {
	if name != "." {
		if err := x.root.MkdirAll(name, 0o755); err != nil {
			return err
		}
		x.countDir(name)
	}
	d, err := x.root.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Fsetxattr(int(d.Fd()), overlayOpaque, []byte("y"), 0); err != nil {
		return fmt.Errorf("marking %q opaque: %w", name, err)
	}
	return nil
}

// diskError names the image in a disk build's failure, keeping a corrupt
// layer's own message (one line that says what to do).
func diskError(err error, name string, chain v1.Hash) error {
	if cl, ok := errors.AsType[*CorruptLayerError](err); ok {
		return errs.Class(errdefs.ErrDataLoss, cl)
	}
	return fmt.Errorf("building disk for image %s (layers up to %s): %w", name, chain.Hex[:12], err)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
