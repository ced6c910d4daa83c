package images

// Build cache entries: the image each step of a build made, found again by
// the step's cache key (engine/build computes it from the parent image, the
// instruction and the content it adds). They are ordinary images in the
// store, kept by their index entry like any other, so their blobs survive
// garbage collection; an untagged one is an intermediate image (docker
// images -a shows those, docker images does not).

import (
	"context"
	"errors"
	"fmt"
	"maps"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// annotationBuildKey records the cache key of the build step that made an
// image.
const annotationBuildKey = "io.vmctl.build.cache-key"

// AddBuilt stores img, made by a build step with cache key key, under the
// given tags (none for an intermediate image), verifying it as Add does.
func (s *Store) AddBuilt(ctx context.Context, img v1.Image, key string, tags ...string) (Image, error) {
	if key == "" {
		return Image{}, fmt.Errorf("a build step's image needs its cache key")
	}
	return s.add(ctx, img, map[string]string{annotationBuildKey: key}, tags)
}

// BuildCache returns the image a build step with cache key key made, if
// the store still has it (ErrNotFound otherwise).
func (s *Store) BuildCache(ctx context.Context, key string) (Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	for _, d := range idx.Manifests {
		if key != "" && d.Annotations[annotationBuildKey] == key {
			img, err := s.byManifest(d.Digest)
			if err == nil || !errors.Is(err, ErrNotFound) {
				return img, err
			}
		}
	}
	return Image{}, fmt.Errorf("%w: no build cache entry %s", ErrNotFound, key)
}

// annotate adds annotations to a manifest descriptor, copying its map.
func annotate(d v1.Descriptor, a map[string]string) v1.Descriptor {
	if len(a) == 0 {
		return d
	}
	m := maps.Clone(d.Annotations)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, a)
	d.Annotations = m
	return d
}
