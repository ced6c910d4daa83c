package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

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
		BuildCacheKey:  desc.Annotations[annotationBuildKey],
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
