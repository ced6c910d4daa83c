package images

// Removal (docker rmi) and the garbage collection of blobs it leaves.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/flock"
)

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
