package images

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// notFoundError reads like Docker's message and classifies as ErrNotFound.
type notFoundError struct{ ref string }

func (e *notFoundError) Error() string        { return "No such image: " + e.ref }
func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }

// ambiguousError is a short ID that matches more than one image.
type ambiguousError struct{ ref string }

func (e *ambiguousError) Error() string {
	return fmt.Sprintf("short image ID %q matches more than one image: give more of it", e.ref)
}

// Is makes it a client error for the edges (errdefs.IsInvalidArgument).
func (e *ambiguousError) Is(target error) bool { return target == errdefs.ErrInvalidArgument }

// match is how a reference was resolved, which Remove needs.
type match struct {
	rec *record
	tag string // set when the reference named a tag
}

// find resolves ref against recs: a full ID ("sha256:<hex>" or 64 hex), a
// name with optional tag or digest, or a short ID of at least 12 hex digits.
// A name is tried before a short ID, as Docker does, because "abcdef123456"
// is a valid repository name too.
func find(recs []*record, ref string) (match, error) {
	idStr := strings.TrimPrefix(ref, "sha256:")
	if hexID.MatchString(idStr) {
		for _, r := range recs {
			if r.id.Hex == idStr {
				return match{rec: r}, nil
			}
		}
		return match{}, &notFoundError{ref: ref}
	}
	if strings.HasPrefix(ref, "sha256:") {
		if shortHexID.MatchString(idStr) {
			return findShort(recs, ref, idStr)
		}
		return match{}, fmt.Errorf("%w: %q", ErrInvalidReference, ref)
	}
	parsed, perr := parseReference(ref)
	if perr == nil {
		switch p := parsed.(type) {
		case name.Tag:
			for _, r := range recs {
				if slices.Contains(r.tags, p.Name()) {
					return match{rec: r, tag: p.Name()}, nil
				}
			}
		case name.Digest:
			for _, r := range recs {
				for _, m := range r.manifests {
					if m.Digest.String() == p.DigestStr() {
						return match{rec: r}, nil
					}
				}
			}
		}
	}
	if shortHexID.MatchString(ref) {
		return findShort(recs, ref, ref)
	}
	if perr != nil {
		return match{}, perr
	}
	return match{}, &notFoundError{ref: FamiliarName(parsed)}
}

func findShort(recs []*record, ref, prefix string) (match, error) {
	var found *record
	for _, r := range recs {
		if strings.HasPrefix(r.id.Hex, prefix) {
			if found != nil {
				return match{}, &ambiguousError{ref: ref}
			}
			found = r
		}
	}
	if found == nil {
		return match{}, &notFoundError{ref: ref}
	}
	return match{rec: found}, nil
}

// Resolve finds the image ref names: "busybox", "busybox:latest",
// "library/busybox", "busybox@sha256:<manifest>", a full or short (12 or
// more hex digits) image ID, or "sha256:<id>". An unknown reference gives an
// error for which errors.Is(err, ErrNotFound) holds.
func (s *Store) Resolve(ctx context.Context, ref string) (Image, error) {
	recs, err := s.currentRecords()
	if err != nil {
		return Image{}, err
	}
	m, err := find(recs, ref)
	if err != nil {
		return Image{}, err
	}
	return s.toImage(m.rec)
}

// byManifest returns the image whose manifest has digest h.
func (s *Store) byManifest(h v1.Hash) (Image, error) {
	recs, err := s.currentRecords()
	if err != nil {
		return Image{}, err
	}
	for _, r := range recs {
		for _, m := range r.manifests {
			if m.Digest == h {
				return s.toImage(r)
			}
		}
	}
	return Image{}, &notFoundError{ref: h.String()}
}
