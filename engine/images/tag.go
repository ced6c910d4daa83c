package images

import (
	"context"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

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
