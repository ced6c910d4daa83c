package images

import (
	"context"
	"fmt"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RecordUnpacked records that the layers of i's manifest (i.Digest) were
// unpacked and each matched the diff ID i's config lists, and what they
// unpacked to in bytes: what a load measures before it stores an image,
// and a pull leaves to the first unpack. From then on the image has
// LayersVerified and its Size is the unpacked one. engine/rootfs calls it
// once it has checked the layers; nothing else may.
//
// An image removed meanwhile, or already recorded, is left alone.
func (i Image) RecordUnpacked(ctx context.Context, unpacked int64) error {
	if i.LayersVerified || i.store == nil {
		return nil
	}
	h, err := v1.NewHash(i.Digest)
	if err != nil {
		return fmt.Errorf("image %s: %w", i.ID, err)
	}
	idx, err := i.store.readIndex()
	if err != nil {
		return err
	}
	if !hasUnverified(idx, h) {
		return nil // saves a locked rewrite of the index
	}
	return i.store.update(ctx, func(idx *v1.IndexManifest) error {
		for n, d := range idx.Manifests {
			if d.Digest != h || d.Annotations[annotationUnverified] == "" {
				continue
			}
			delete(d.Annotations, annotationUnverified)
			d.Annotations[annotationSize] = strconv.FormatInt(unpacked, 10)
			idx.Manifests[n] = d
		}
		return nil
	})
}

func hasUnverified(idx *v1.IndexManifest, h v1.Hash) bool {
	for _, d := range idx.Manifests {
		if d.Digest == h && d.Annotations[annotationUnverified] != "" {
			return true
		}
	}
	return false
}
