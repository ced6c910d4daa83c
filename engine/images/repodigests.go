package images

import (
	"context"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// annotationRepoDigests records where an image is known to live in
// registries: "repository@digest" references (comma-separated, fully
// qualified) for each pull and push, what docker shows as RepoDigests. The
// digest is the registry's: for a pull of a multi-platform image, the
// index's, so that pulling by it gets the same image back.
const annotationRepoDigests = "io.vmctl.image.repo-digests"

// addRepoDigests records refs for every index entry of manifest m, merged
// with what the entries record already, so that each entry carries the
// whole set (an entry can go with its tag while the image stays).
//
// Precondition: the store lock is held.
func addRepoDigests(idx *v1.IndexManifest, m v1.Hash, refs ...string) {
	set := slices.Clone(refs)
	for _, d := range idx.Manifests {
		if d.Digest == m {
			set = append(set, splitRepoDigests(d.Annotations[annotationRepoDigests])...)
		}
	}
	slices.Sort(set)
	set = slices.Compact(set)
	if len(set) == 0 {
		return
	}
	joined := strings.Join(set, ",")
	for i, d := range idx.Manifests {
		if d.Digest != m {
			continue
		}
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[annotationRepoDigests] = joined
		idx.Manifests[i] = d
	}
}

func splitRepoDigests(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// repoDigests returns the familiar forms of the repo digests recorded on
// an image's index entries, sorted; unparsable ones are left out.
func repoDigests(entries []v1.Descriptor) []string {
	var out []string
	for _, d := range entries {
		for _, s := range splitRepoDigests(d.Annotations[annotationRepoDigests]) {
			if ref, err := name.NewDigest(s); err == nil {
				out = append(out, FamiliarName(ref))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// recordPush notes that the image with manifest m is now in repo under
// digest pushed.
func (s *Store) recordPush(ctx context.Context, m v1.Hash, repo name.Repository, pushed v1.Hash) error {
	return s.update(ctx, func(idx *v1.IndexManifest) error {
		addRepoDigests(idx, m, repo.Digest(pushed.String()).String())
		return nil
	})
}
