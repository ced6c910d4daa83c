package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/internal/atomicfile"
)

// stage is a private directory under <root>/tmp where a load writes and
// verifies blobs before any of them enter the store. Its owner holds an
// flock on stage/lock, so Open can tell an abandoned stage from a live one.
type stage struct {
	dir   string
	blobs blobDir
	lock  *flock.Lock
}

func (s *Store) newStage(ctx context.Context) (*stage, error) {
	dir, l, err := s.scratch(ctx, "stage-")
	if err != nil {
		return nil, err
	}
	return &stage{dir: dir, blobs: blobDir(filepath.Join(dir, "blobs")), lock: l}, nil
}

// scratch makes a directory in the store's scratch space, locked until
// released: one left by a process that died is unlocked, and the next Open
// removes it (removeStaleStages).
func (s *Store) scratch(ctx context.Context, prefix string) (string, *flock.Lock, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), prefix)
	if err != nil {
		return "", nil, fmt.Errorf("creating a scratch directory: %w", err)
	}
	l, err := flock.Acquire(ctx, filepath.Join(dir, "lock"))
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, l, nil
}

// Scratch makes a directory in the store's scratch space for work beside
// the store (a build's context and steps). release removes it.
func (s *Store) Scratch(ctx context.Context, prefix string) (dir string, release func(), err error) {
	dir, l, err := s.scratch(ctx, prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir); l.Release() }, nil
}

// remove deletes the stage, then drops its lock (in that order, so a
// concurrent Open never removes a stage that is still in use).
func (st *stage) remove() {
	os.RemoveAll(st.dir)
	st.lock.Release()
}

// staleStageAge is how old a stage without a lock file must be before Open
// removes it; such a stage is one whose creator died between mkdir and lock.
const staleStageAge = 10 * time.Minute

func (s *Store) removeStaleStages() {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(s.tmpDir(), e.Name())
		l, ok, err := flock.TryAcquire(filepath.Join(dir, "lock"), false)
		switch {
		case ok:
			os.RemoveAll(dir)
			l.Release()
		case errors.Is(err, os.ErrNotExist):
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleStageAge {
				os.RemoveAll(dir)
			}
		}
	}
}

// candidate is a verified image in a stage, ready to be committed.
type candidate struct {
	manifest v1.Descriptor
	config   v1.Hash  // the image's ID
	tags     []string // fully qualified
	blobs    []v1.Hash
	// repoDigests are registry references to record (see
	// annotationRepoDigests).
	repoDigests []string
}

// diffID returns the diff ID and unpacked size of a staged layer, by
// decompressing it (or, for an uncompressed layer, from its file name).
func (st *stage) diffID(ld v1.Descriptor) (int64, v1.Hash, error) {
	f, err := st.blobs.open(ld.Digest)
	if err != nil {
		return 0, v1.Hash{}, err
	}
	defer f.Close()
	head := make([]byte, 4)
	hn, _ := io.ReadFull(f, head)
	if layerMediaTypeOf(head[:hn]) == types.OCIUncompressedLayer {
		// Not compressed (as docker save writes layers): the tar is the
		// blob, whose digest its file name already is.
		fi, err := f.Stat()
		if err != nil {
			return 0, v1.Hash{}, err
		}
		return fi.Size(), ld.Digest, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, v1.Hash{}, err
	}
	n, h, err := unpackStream(f)
	if err != nil {
		return 0, v1.Hash{}, fmt.Errorf("unpacking: %w", err)
	}
	return n, h, nil
}

// diffIDCheck says whether verifyImage unpacks layers to check them
// against the config's diff IDs.
type diffIDCheck bool

const (
	checkDiffIDs diffIDCheck = true
	// deferDiffIDs leaves the check to whoever first unpacks the image
	// (engine/rootfs) and marks the image unverified: a pull, whose
	// layers were checked against their digests as they arrived.
	deferDiffIDs diffIDCheck = false
)

// verifyImage checks that the manifest desc names, its config and all its
// layers are in the stage with the sizes the manifest states, that the
// config lists one diff ID per layer, and, with checkDiffIDs, that each
// layer unpacks to the diff ID the config lists. Blob digests need no
// re-check: a stage holds each blob under the digest of its content. It
// records on the descriptor the unpacked size, or that the diff IDs are
// not checked yet.
func (st *stage) verifyImage(ctx context.Context, desc v1.Descriptor, diffIDs diffIDCheck) (candidate, error) {
	if !desc.MediaType.IsImage() {
		return candidate{}, fmt.Errorf("%s is a %q, not an image manifest", desc.Digest, desc.MediaType)
	}
	if err := st.checkBlob(desc, "manifest"); err != nil {
		return candidate{}, err
	}
	bi, err := newBlobImage(st.blobs, desc)
	if err != nil {
		return candidate{}, err
	}
	m := bi.parsed
	if err := st.checkBlob(m.Config, "config"); err != nil {
		return candidate{}, err
	}
	raw, err := st.blobs.readSmall(m.Config.Digest)
	if err != nil {
		return candidate{}, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return candidate{}, fmt.Errorf("image config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return candidate{}, fmt.Errorf("image %s: config lists %d layers but the manifest has %d",
			m.Config.Digest, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	c := candidate{manifest: desc, config: m.Config.Digest, blobs: []v1.Hash{desc.Digest, m.Config.Digest}}
	var unpacked int64
	for i, ld := range m.Layers {
		if err := ctx.Err(); err != nil {
			return candidate{}, err
		}
		if !ld.MediaType.IsLayer() {
			return candidate{}, fmt.Errorf("layer %s has unsupported media type %q", ld.Digest, ld.MediaType)
		}
		if err := st.checkBlob(ld, "layer"); err != nil {
			return candidate{}, err
		}
		c.blobs = append(c.blobs, ld.Digest)
		if !diffIDs {
			continue
		}
		n, diffID, err := st.diffID(ld)
		if err != nil {
			return candidate{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		if diffID != cfg.RootFS.DiffIDs[i] {
			return candidate{}, fmt.Errorf("layer %s is corrupt: it unpacks to %s, the config says %s",
				ld.Digest, diffID, cfg.RootFS.DiffIDs[i])
		}
		unpacked += n
	}
	if !diffIDs {
		c.manifest.Annotations = map[string]string{annotationUnverified: "true"}
		return c, nil
	}
	c.manifest.Annotations = map[string]string{annotationSize: strconv.FormatInt(unpacked, 10)}
	return c, nil
}

// checkBlob says whether the blob desc names is in the stage, whole.
func (st *stage) checkBlob(desc v1.Descriptor, what string) error {
	if !validHash(desc.Digest) {
		return fmt.Errorf("%s has unsupported digest %q", what, desc.Digest)
	}
	fi, err := os.Stat(st.blobs.path(desc.Digest))
	if err != nil {
		return fmt.Errorf("%s %s is missing from the archive", what, desc.Digest)
	}
	if fi.Size() != desc.Size {
		return fmt.Errorf("%s %s is %d bytes, its descriptor says %d", what, desc.Digest, fi.Size(), desc.Size)
	}
	return nil
}

// commit moves verified candidates into the store and tags them, under the
// store lock, then returns them as Images.
func (s *Store) commit(ctx context.Context, st *stage, cands []candidate) ([]Image, error) {
	err := s.update(ctx, func(idx *v1.IndexManifest) error {
		for _, c := range cands {
			for _, h := range c.blobs {
				err := os.Link(st.blobs.path(h), s.blobs.path(h))
				if err != nil && !errors.Is(err, os.ErrExist) {
					return fmt.Errorf("adding blob %s to the store: %w", h, err)
				}
			}
		}
		if err := atomicfile.SyncDir(filepath.Join(string(s.blobs), "sha256")); err != nil {
			return err
		}
		for _, c := range cands {
			c.manifest = mergeVerification(idx, c.manifest)
			if len(c.tags) == 0 {
				addUntagged(idx, c.manifest)
			}
			for _, t := range c.tags {
				setTag(idx, t, c.manifest)
			}
			addRepoDigests(idx, c.manifest.Digest, c.repoDigests...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Image
	seen := map[v1.Hash]bool{}
	for _, c := range cands {
		if seen[c.manifest.Digest] {
			continue
		}
		seen[c.manifest.Digest] = true
		img, err := s.byManifest(c.manifest.Digest)
		if errors.Is(err, ErrNotFound) {
			// Removed by a concurrent process between commit and now.
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// mergeVerification makes all index entries of desc's manifest agree on
// whether its layers were checked against the diff IDs: an entry that
// records a check (made by a load of the same manifest, earlier or now)
// outranks one that records none (a pull), since the blobs are the same.
// It returns desc with the annotations all entries now carry.
//
// Precondition: the store lock is held.
func mergeVerification(idx *v1.IndexManifest, desc v1.Descriptor) v1.Descriptor {
	checked := desc
	if checked.Annotations[annotationUnverified] != "" {
		for _, d := range idx.Manifests {
			if d.Digest == desc.Digest && d.Annotations[annotationUnverified] == "" {
				checked.Annotations = map[string]string{}
				carryAnnotations(checked.Annotations, d)
				break
			}
		}
	}
	if checked.Annotations[annotationUnverified] != "" {
		return checked
	}
	for i, d := range idx.Manifests {
		if d.Digest != desc.Digest || d.Annotations[annotationUnverified] == "" {
			continue
		}
		delete(d.Annotations, annotationUnverified)
		carryAnnotations(d.Annotations, checked)
		idx.Manifests[i] = d
	}
	return checked
}

// Add stores img (for example one fetched from a registry) under the given
// tags, verifying every blob against the manifest and the layers against
// the config's diff IDs first.
func (s *Store) Add(ctx context.Context, img v1.Image, tags ...string) (Image, error) {
	return s.add(ctx, img, nil, tags)
}

// add is Add, with annotations for the image's index entries.
func (s *Store) add(ctx context.Context, img v1.Image, annotations map[string]string, tags []string) (Image, error) {
	var full []string
	for _, t := range tags {
		tag, err := ParseTag(t)
		if err != nil {
			return Image{}, err
		}
		full = append(full, tag.Name())
	}
	st, err := s.newStage(ctx)
	if err != nil {
		return Image{}, err
	}
	defer st.remove()
	desc, err := stageImage(ctx, st, img)
	if err != nil {
		return Image{}, err
	}
	c, err := st.verifyImage(ctx, desc, checkDiffIDs)
	if err != nil {
		return Image{}, err
	}
	c.tags = full
	c.manifest = annotate(c.manifest, annotations)
	imgs, err := s.commit(ctx, st, []candidate{c})
	if err != nil {
		return Image{}, err
	}
	if len(imgs) == 0 {
		return Image{}, fmt.Errorf("image %s was removed while it was being added", desc.Digest)
	}
	return imgs[0], nil
}

// stageImage copies img's blobs into st and checks each against the digest
// its manifest gives.
func stageImage(ctx context.Context, st *stage, img v1.Image) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading manifest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("parsing manifest: %w", err)
	}
	mh, err := st.blobs.writeBytes(raw)
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading config: %w", err)
	}
	if h, err := st.blobs.writeBytes(cfg); err != nil {
		return v1.Descriptor{}, err
	} else if h != m.Config.Digest {
		return v1.Descriptor{}, fmt.Errorf("config is corrupt: digest %s, manifest says %s", h, m.Config.Digest)
	}
	for _, ld := range m.Layers {
		if err := ctx.Err(); err != nil {
			return v1.Descriptor{}, err
		}
		if err := stageLayer(st, img, ld); err != nil {
			return v1.Descriptor{}, err
		}
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: mh}, nil
}

func stageLayer(st *stage, img v1.Image, ld v1.Descriptor) error {
	l, err := img.LayerByDigest(ld.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", ld.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("reading layer %s: %w", ld.Digest, err)
	}
	defer rc.Close()
	h, _, err := st.blobs.writeBlob(rc)
	if err != nil {
		return fmt.Errorf("reading layer %s: %w", ld.Digest, err)
	}
	if h != ld.Digest {
		return fmt.Errorf("layer %s is corrupt: its content has digest %s", ld.Digest, h)
	}
	return nil
}

// layerMediaTypeOf names the compression a layer starts with.
func layerMediaTypeOf(head []byte) types.MediaType {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return types.OCILayer
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return types.OCILayerZStd
	default:
		return types.OCIUncompressedLayer
	}
}
