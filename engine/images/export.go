package images

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/vmctl/vmctl/engine/errs"
)

// ForSave resolves references for WriteArchive, all of them before
// anything is written, so that a bad one fails the save while nothing has
// been sent yet. An image named by a tag is archived under that tag, as
// `docker save busybox` records busybox:latest; one named by ID or digest
// is archived with the tags it has in the store. Naming the same image
// twice archives its blobs once.
func (s *Store) ForSave(ctx context.Context, refs []string) ([]NamedImage, error) {
	if len(refs) == 0 {
		return nil, errs.New(errdefs.ErrInvalidArgument, "no image to save: name at least one")
	}
	recs, err := s.currentRecords()
	if err != nil {
		return nil, err
	}
	var out []NamedImage
	seen := map[string]bool{}
	add := func(tag string, img Image) {
		key := tag + "\x00" + img.ID
		if !seen[key] {
			seen[key] = true
			out = append(out, NamedImage{Tag: tag, Image: img.Content()})
		}
	}
	for _, ref := range refs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := find(recs, ref)
		if err != nil {
			return nil, err
		}
		img, err := s.toImage(m.rec)
		if err != nil {
			return nil, err
		}
		// An image named by ID is saved without its tags, as dockerd
		// saves it (RepoTags null): the archive names what was asked for.
		add(m.tag, img)
	}
	return out, nil
}

// RepositoryTags returns the stored tags (fully qualified, sorted) of
// repo, a name without tag such as "busybox" or "127.0.0.1:5000/x/y": what
// `docker push` without a tag sends.
func (s *Store) RepositoryTags(ctx context.Context, repo string) ([]string, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return nil, errs.Class(errdefs.ErrInvalidArgument, fmt.Errorf("%w: %q: %w", ErrInvalidReference, repo, err))
	}
	recs, err := s.currentRecords()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rec := range recs {
		for _, t := range rec.tags {
			if tag, err := name.NewTag(t); err == nil && tag.Context().Name() == r.Name() {
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		return nil, &notFoundError{ref: strings.TrimSuffix(FamiliarName(r.Tag("latest")), ":latest")}
	}
	slices.Sort(out)
	return out, nil
}
