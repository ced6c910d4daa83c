package images

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/vmctl/vmctl/engine/errs"
)

// Names are normalised the way Docker does it: "busybox" is the same image
// as "<default registry>/library/busybox:latest". The store keeps the fully
// qualified form (what name.Tag.Name returns) and shows the familiar form.

// ErrInvalidReference classifies a string that is neither an image name nor
// an ID. It is bad input (errdefs.ErrInvalidArgument) wherever it is wrapped,
// so the edges map it without knowing this package.
var ErrInvalidReference = errs.New(errdefs.ErrInvalidArgument, "invalid reference format")

var (
	hexID      = regexp.MustCompile(`^[0-9a-f]{64}$`)
	shortHexID = regexp.MustCompile(`^[0-9a-f]{12,64}$`)
)

// ParseTag normalises an image name with an optional tag ("busybox",
// "library/busybox:1.36", "registry.example:5000/x/y:z") to a fully
// qualified tag. A digest reference is rejected: only tags name images in
// the store.
func ParseTag(s string) (name.Tag, error) {
	if strings.Contains(s, "@") {
		return name.Tag{}, fmt.Errorf("%w: %q: a tag is required here, not a digest", ErrInvalidReference, s)
	}
	t, err := name.NewTag(s)
	if err != nil {
		return name.Tag{}, fmt.Errorf("%w: %q: %w", ErrInvalidReference, s, err)
	}
	if err := checkPath(t.Context()); err != nil {
		return name.Tag{}, fmt.Errorf("%w: %q: %w", ErrInvalidReference, s, err)
	}
	// As Docker: a name that looks like an image ID would make references
	// ambiguous ("is it the image with this ID or the repository?").
	if repo := strings.TrimPrefix(t.RepositoryStr(), "library/"); isFullHexID(repo) {
		return name.Tag{}, fmt.Errorf("%w: %q: a repository name cannot be a 64-digit hexadecimal string", ErrInvalidReference, s)
	}
	return t, nil
}

func isFullHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// parseReference accepts a tag or a digest reference.
func parseReference(s string) (name.Reference, error) {
	r, err := name.ParseReference(s)
	if err == nil {
		err = checkPath(r.Context())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrInvalidReference, s, err)
	}
	return r, nil
}

// pathComponent is the distribution spec's grammar of one component of a
// repository path: lowercase alphanumerics joined by single separators
// ("." "_" "__" or dashes). go-containerregistry is laxer ("..", "-x").
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// checkPath refuses a repository path that the distribution spec does not
// allow, as dockerd does ("../evil" would name no repository anyone can
// address again).
func checkPath(r name.Repository) error {
	for _, c := range strings.Split(r.RepositoryStr(), "/") {
		if !pathComponent.MatchString(c) {
			return fmt.Errorf("repository path component %q is not lowercase letters and digits joined by '.', '_', '__' or '-'", c)
		}
	}
	return nil
}

// FamiliarName returns the short form users type and Docker prints:
// "busybox:latest" for the default registry's library namespace,
// "user/app:1" for other default-registry repositories, and the full
// name for any other registry.
func FamiliarName(r name.Reference) string {
	repo := r.Context()
	var n string
	if repo.RegistryStr() == name.DefaultRegistry {
		n = strings.TrimPrefix(repo.RepositoryStr(), "library/")
	} else {
		n = repo.Name()
	}
	switch r := r.(type) {
	case name.Tag:
		return n + ":" + r.TagStr()
	case name.Digest:
		return n + "@" + r.DigestStr()
	}
	return n
}

// familiarString is FamiliarName for a stored (fully qualified) tag string;
// it returns s unchanged if it does not parse.
func familiarString(s string) string {
	t, err := name.NewTag(s)
	if err != nil {
		return s
	}
	return FamiliarName(t)
}
