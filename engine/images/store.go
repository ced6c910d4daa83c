// Package images is vmctl's local image store: content-addressed blobs and
// an index of tagged images, kept as an OCI image layout in one directory
// (oci-layout, index.json, blobs/sha256/...), so standard tools can read it.
//
// It loads `docker save` and OCI-layout archives, verifying every blob
// against its digest and every layer against its diff ID before the store
// changes, and pulls from registries, verifying every blob against its
// digest and size as it arrives but leaving the diff IDs to be checked
// where the image is first unpacked (engine/rootfs), as containerd does;
// writes archives (save) and pushes to registries, blobs
// unchanged; lists, resolves Docker-style references (names, tags, full and
// short IDs), tags, and removes images with garbage collection of blobs
// nothing references any more.
//
// Mutations are serialised across processes by an flock on <root>/lock and
// become visible atomically: blobs are written and fsynced first, then
// index.json is replaced by rename. Readers take no lock; an image removed
// while a reader reads the blobs of the index it read is left out of what
// the reader returns. A crash can leave
// unreferenced blobs, which the next Remove collects, and staging
// directories, which the next Open removes.
//
// It has no CLI or HTTP code (progress is reported through ProgressFunc,
// errors are classified with errdefs for the edges to map), and it does not
// build disks (see engine/rootfs).
package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/internal/flock"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNotFound is returned (wrapped) when a reference names no stored image.
// It is containerd's errdefs.ErrNotFound, so transport layers classify it
// without knowing this package.
var ErrNotFound = errdefs.ErrNotFound

// annotationSize records an image's unpacked layer size, measured when the
// image was verified, so List need not decompress layers.
const annotationSize = "io.vmctl.image.unpacked-size"

// annotationUnverified marks an image whose layers have not been checked
// against its config's diff IDs (a pulled one), so that nothing reading
// the store takes them as checked.
const annotationUnverified = "io.vmctl.image.diff-ids-unverified"

// carriedAnnotations are the annotations of an index entry that describe
// the image rather than the entry, kept when the image is tagged again.
var carriedAnnotations = []string{annotationSize, annotationUnverified, annotationRepoDigests}

// Image is a stored image as users see it.
type Image struct {
	// ID is the digest of the image config ("sha256:..."), as Docker shows it.
	ID string
	// Digest is the digest of the stored manifest.
	Digest string
	// RepoTags are familiar names ("busybox:latest"), sorted.
	RepoTags []string
	// RepoDigests are the registry references ("repo@sha256:...") this
	// image was pulled by or pushed to, familiar form, sorted.
	RepoDigests []string
	Created     time.Time
	// Size is the total size of the unpacked layers in bytes, or of the
	// compressed ones while that is not measured (a pulled image).
	Size int64
	// LayersVerified says whether every layer of the manifest Content
	// reads was checked against the config's diff ID when it was stored,
	// as Load and Add do. A pulled image's layers were checked against
	// their digests only; their diff IDs are checked where they are
	// unpacked (rootfs.ImageDisk), so nothing else may take them as
	// checked while this is false.
	LayersVerified bool
	OS             string
	Architecture   string
	Config         v1.Config

	content v1.Image
	store   *Store // for RecordUnpacked
}

// Content returns the image's manifest, config and layers, for example for
// mutate.Extract. Its blobs are read lazily from the store; a concurrent
// Remove of the image makes later reads fail.
func (i Image) Content() v1.Image { return i.content }

// Store is an image store rooted at one directory. It is safe for use by
// several goroutines and several processes at once.
type Store struct {
	root  string
	blobs blobDir
}

// Open opens (creating if needed) the store at root and removes staging
// directories left by loads that died.
func Open(root string) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &Store{root: root, blobs: blobDir(filepath.Join(root, "blobs"))}
	for _, d := range []string{root, filepath.Join(root, "blobs", "sha256"), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	l, err := flock.Acquire(context.Background(), s.lockPath())
	if err != nil {
		return nil, fmt.Errorf("opening image store: %w", err)
	}
	defer l.Release()
	if _, err := os.Stat(filepath.Join(root, ocispec.ImageLayoutFile)); errors.Is(err, os.ErrNotExist) {
		layout := []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)
		if err := writeFileAtomic(filepath.Join(root, ocispec.ImageLayoutFile), layout); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	if _, err := os.Stat(s.indexPath()); errors.Is(err, os.ErrNotExist) {
		if err := s.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	s.removeStaleStages()
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) lockPath() string  { return filepath.Join(s.root, "lock") }
func (s *Store) indexPath() string { return filepath.Join(s.root, "index.json") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "tmp") }

func (s *Store) readIndex() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(s.indexPath())
	if err != nil {
		return nil, fmt.Errorf("reading image index: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing image index %s: %w", s.indexPath(), err)
	}
	return idx, nil
}

// writeIndex replaces index.json atomically. Precondition: the store lock
// is held (or the store is being created).
func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	if idx.Manifests == nil {
		idx.Manifests = []v1.Descriptor{}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.indexPath(), b)
}

// writeFileAtomic writes via a temp file, fsync and rename, then fsyncs the
// directory, so a crash leaves either the old or the new file.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// update runs fn on the current index under the store lock and writes the
// result if fn succeeds.
func (s *Store) update(ctx context.Context, fn func(idx *v1.IndexManifest) error) error {
	l, err := flock.Acquire(ctx, s.lockPath())
	if err != nil {
		return err
	}
	defer l.Release()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := fn(idx); err != nil {
		return err
	}
	return s.writeIndex(idx)
}

// record groups the index entries of one image (one config digest).
type record struct {
	id        v1.Hash
	manifests []v1.Descriptor // distinct manifests, in index order
	tags      []string        // fully qualified tag names
}

// removedMeanwhile says whether manifest m, whose blobs a reader without
// the store lock found missing, is gone from the index on disk: a Remove
// took it away, and collected its blobs, between the reader's reading of
// the index and of the blobs. Under the store lock (update) the index
// cannot change, so there a missing blob is damage.
func (s *Store) removedMeanwhile(m v1.Hash) bool {
	idx, err := s.readIndex()
	if err != nil {
		return false
	}
	return !slices.ContainsFunc(idx.Manifests, func(d v1.Descriptor) bool { return d.Digest == m })
}

// currentRecords is the image grouping of the index as it is now, for the
// readers, which take no lock.
func (s *Store) currentRecords() ([]*record, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	return s.records(idx)
}

// records reads the image grouping of idx from the manifests it names.
// Entries a concurrent Remove took away meanwhile are left out.
func (s *Store) records(idx *v1.IndexManifest) ([]*record, error) {
	byID := map[v1.Hash]*record{}
	configOf := map[v1.Hash]v1.Hash{}
	var out []*record
	for _, d := range idx.Manifests {
		id, ok := configOf[d.Digest]
		if !ok {
			img, err := newBlobImage(s.blobs, d)
			if errors.Is(err, fs.ErrNotExist) {
				if s.removedMeanwhile(d.Digest) {
					continue
				}
				// Removed and added again meanwhile: read it again.
				img, err = newBlobImage(s.blobs, d)
			}
			if err != nil {
				return nil, fmt.Errorf("image store is damaged: %w", err)
			}
			id = img.parsed.Config.Digest
			configOf[d.Digest] = id
		}
		r := byID[id]
		if r == nil {
			r = &record{id: id}
			byID[id] = r
			out = append(out, r)
		}
		if !slices.ContainsFunc(r.manifests, func(m v1.Descriptor) bool { return m.Digest == d.Digest }) {
			r.manifests = append(r.manifests, d)
		}
		if t := d.Annotations[ocispec.AnnotationRefName]; t != "" && !slices.Contains(r.tags, t) {
			r.tags = append(r.tags, t)
		}
	}
	return out, nil
}

func (s *Store) toImage(r *record) (Image, error) {
	desc := r.manifests[0]
	bi, err := newBlobImage(s.blobs, desc)
	if err != nil {
		return Image{}, err
	}
	content, err := bi.image()
	if err != nil {
		return Image{}, err
	}
	cfg, err := content.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("reading config of image %s: %w", r.id, err)
	}
	img := Image{
		ID:           r.id.String(),
		Digest:       desc.Digest.String(),
		Created:      cfg.Created.Time,
		OS:           cfg.OS,
		Architecture: cfg.Architecture,
		Config:       cfg.Config,
		content:      content,
		store:        s,
		// Every entry of a record has the annotation or none: it is
		// set per manifest, and the entries share this manifest.
		LayersVerified: desc.Annotations[annotationUnverified] == "",
	}
	for _, t := range r.tags {
		img.RepoTags = append(img.RepoTags, familiarString(t))
	}
	img.RepoDigests = repoDigests(r.manifests)
	slices.Sort(img.RepoTags)
	if n, err := strconv.ParseInt(desc.Annotations[annotationSize], 10, 64); err == nil {
		img.Size = n
	} else {
		for _, l := range bi.parsed.Layers {
			img.Size += l.Size
		}
	}
	return img, nil
}

// List returns every stored image, newest first.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	recs, err := s.currentRecords()
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(recs))
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		img, err := s.toImage(r)
		if errors.Is(err, fs.ErrNotExist) {
			if s.removedMeanwhile(r.manifests[0].Digest) {
				continue // see records
			}
			img, err = s.toImage(r)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	slices.SortStableFunc(out, func(a, b Image) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Tag points target (a name with optional tag) at the image source
// resolves to, moving target away from any other image.
func (s *Store) Tag(ctx context.Context, source, target string) error {
	t, err := ParseTag(target)
	if err != nil {
		return err
	}
	return s.update(ctx, func(idx *v1.IndexManifest) error {
		recs, err := s.records(idx)
		if err != nil {
			return err
		}
		m, err := find(recs, source)
		if err != nil {
			return err
		}
		setTag(idx, t.Name(), m.rec.manifests[0])
		return nil
	})
}

// setTag makes tag name desc's manifest. An image the tag moves away from
// stays in the store untagged (Docker's dangling image) until removed.
func setTag(idx *v1.IndexManifest, tag string, desc v1.Descriptor) {
	var moved []v1.Descriptor
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d v1.Descriptor) bool {
		if d.Annotations[ocispec.AnnotationRefName] == tag {
			moved = append(moved, d)
			return true
		}
		// An untagged entry for the same manifest is replaced by the tagged one.
		return d.Digest == desc.Digest && d.Annotations[ocispec.AnnotationRefName] == ""
	})
	for _, d := range moved {
		if d.Digest != desc.Digest {
			addUntagged(idx, d)
		}
	}
	d := desc
	d.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	carryAnnotations(d.Annotations, desc)
	idx.Manifests = append(idx.Manifests, d)
}

// addUntagged keeps desc's manifest in the index if nothing else does.
func addUntagged(idx *v1.IndexManifest, desc v1.Descriptor) {
	if slices.ContainsFunc(idx.Manifests, func(d v1.Descriptor) bool { return d.Digest == desc.Digest }) {
		return
	}
	d := desc
	d.Annotations = map[string]string{}
	carryAnnotations(d.Annotations, desc)
	if len(d.Annotations) == 0 {
		d.Annotations = nil
	}
	idx.Manifests = append(idx.Manifests, d)
}

// carryAnnotations copies desc's carriedAnnotations into to.
func carryAnnotations(to map[string]string, desc v1.Descriptor) {
	for _, k := range carriedAnnotations {
		if v, ok := desc.Annotations[k]; ok {
			to[k] = v
		}
	}
}

// RemoveResult says what Remove did, in the shape of Docker's image delete
// response: familiar names untagged and image IDs deleted.
type RemoveResult struct {
	Untagged []string
	Deleted  []string
}

// RemoveOptions are docker rmi's.
type RemoveOptions struct {
	// InUse names a container that uses the image with this ID, if any.
	// An image in use is not deleted: without Force the removal is refused
	// (ErrConflict), with Force only its tags go and it stays, untagged,
	// for the containers that use it (Docker's behaviour).
	InUse func(imageID string) (container string, used bool)
	Force bool
}

// Remove untags ref if it names a tag, and deletes the image when that was
// its last tag. A digest reference ("name@sha256:...") of an image that has
// tags is removed from its repository digests only; of an untagged one, it
// deletes the image. A reference by ID deletes the image with all its tags,
// except that, as in Docker, an ID of an image with several tags is refused
// (ErrConflict) unless opts.Force. Blobs no other image uses are then
// deleted.
func (s *Store) Remove(ctx context.Context, ref string, opts RemoveOptions) (RemoveResult, error) {
	var res RemoveResult
	err := s.update(ctx, func(idx *v1.IndexManifest) error {
		recs, err := s.records(idx)
		if err != nil {
			return err
		}
		m, err := find(recs, ref)
		if err != nil {
			return err
		}
		if m.tag != "" && len(m.rec.tags) > 1 {
			idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d v1.Descriptor) bool {
				return d.Annotations[ocispec.AnnotationRefName] == m.tag
			})
			res.Untagged = append(res.Untagged, familiarString(m.tag))
			return nil
		}
		// A digest reference of an image that has tags goes alone, as in
		// Docker: the image stays for its tags.
		if m.tag == "" && strings.Contains(ref, "@") && len(m.rec.tags) > 0 {
			if d, err := name.NewDigest(ref); err == nil {
				dropRepoDigest(idx, m.rec, d.Name())
				res.Untagged = append(res.Untagged, FamiliarName(d))
				return nil
			}
		}
		// An image ID (find matches no tag, and a digest reference has an
		// "@") names every tag at once; dockerd refuses to drop more than
		// one that way unless forced.
		if m.tag == "" && !strings.Contains(ref, "@") && len(m.rec.tags) > 1 && !opts.Force {
			short := m.rec.id.Hex
			if len(short) > 12 {
				short = short[:12]
			}
			return errs.New(errdefs.ErrConflict, "conflict: unable to delete %s (must be forced) - image is referenced in multiple repositories", short)
		}
		if opts.InUse != nil {
			if c, used := opts.InUse(m.rec.id.String()); used {
				if !opts.Force {
					return errs.New(errdefs.ErrConflict, "conflict: unable to remove image %s (must be forced): container %s is using it", ref, c)
				}
				return untagInUse(idx, m, &res)
			}
		}
		ids := map[v1.Hash]bool{}
		for _, d := range m.rec.manifests {
			ids[d.Digest] = true
		}
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d v1.Descriptor) bool { return ids[d.Digest] })
		for _, t := range m.rec.tags {
			res.Untagged = append(res.Untagged, familiarString(t))
		}
		slices.Sort(res.Untagged)
		res.Deleted = append(res.Deleted, m.rec.id.String())
		return nil
	})
	if err != nil {
		return RemoveResult{}, err
	}
	if len(res.Deleted) > 0 {
		if err := s.collectGarbage(ctx); err != nil {
			return res, fmt.Errorf("image removed, but freeing its blobs failed: %w", err)
		}
	}
	return res, nil
}

// dropRepoDigest removes the repository digest ref (fully qualified) from
// the entries of rec. Precondition: the store lock is held.
func dropRepoDigest(idx *v1.IndexManifest, rec *record, ref string) {
	for i, d := range idx.Manifests {
		if !slices.ContainsFunc(rec.manifests, func(m v1.Descriptor) bool { return m.Digest == d.Digest }) {
			continue
		}
		v, ok := d.Annotations[annotationRepoDigests]
		if !ok {
			continue
		}
		kept := slices.DeleteFunc(splitRepoDigests(v), func(s string) bool { return s == ref })
		if len(kept) == 0 {
			delete(d.Annotations, annotationRepoDigests)
		} else {
			d.Annotations[annotationRepoDigests] = strings.Join(kept, ",")
		}
		idx.Manifests[i] = d
	}
}

// untagInUse removes the tags of a forced removal of an image that a
// container uses (all of them for a reference by ID) and keeps the image
// as an untagged entry. Precondition: the store lock is held.
func untagInUse(idx *v1.IndexManifest, m match, res *RemoveResult) error {
	drop := func(t string) bool { return m.tag == "" || t == m.tag }
	keep := m.rec.manifests[0]
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d v1.Descriptor) bool {
		t := d.Annotations[ocispec.AnnotationRefName]
		return t != "" && drop(t) && slices.Contains(m.rec.tags, t)
	})
	for _, t := range m.rec.tags {
		if drop(t) {
			res.Untagged = append(res.Untagged, familiarString(t))
		}
	}
	slices.Sort(res.Untagged)
	addUntagged(idx, keep)
	return nil
}

// collectGarbage deletes blobs that no manifest in the index references.
// It deletes nothing if any referenced manifest cannot be read, since then
// it cannot know what is still in use.
func (s *Store) collectGarbage(ctx context.Context) error {
	l, err := flock.Acquire(ctx, s.lockPath())
	if err != nil {
		return err
	}
	defer l.Release()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, d := range idx.Manifests {
		img, err := newBlobImage(s.blobs, d)
		if err != nil {
			return err
		}
		keep[d.Digest.Hex] = true
		keep[img.parsed.Config.Digest.Hex] = true
		for _, l := range img.parsed.Layers {
			keep[l.Digest.Hex] = true
		}
	}
	dir := filepath.Join(string(s.blobs), "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
