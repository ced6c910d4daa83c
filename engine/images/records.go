package images

// Records: the index entries grouped by image, as readers without the
// store lock see them.

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

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
