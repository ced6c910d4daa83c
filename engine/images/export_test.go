package images

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
)

func TestForSaveAndRepositoryTags(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	a := addTagged(t, s, testImage(t, "a", map[string]string{"a": "1"}), "app:1")
	if err := s.Tag(ctx, "app:1", "app:2"); err != nil {
		t.Fatal(err)
	}
	addTagged(t, s, testImage(t, "b", map[string]string{"b": "1"}), "127.0.0.1:5000/x/b:1")
	tags := func(named []NamedImage) []string {
		var out []string
		for _, n := range named {
			out = append(out, n.Tag)
		}
		return out
	}
	for _, tc := range []struct {
		refs []string
		want []string // fully qualified tags archived; "" for an untagged entry
		err  error
	}{
		{refs: []string{"app:1"}, want: []string{"index.docker.io/library/app:1"}},
		// By ID: the image without its tags (RepoTags null), as dockerd saves it.
		{refs: []string{a.ID}, want: []string{""}},
		{refs: []string{"app:1", "app:1"}, want: []string{"index.docker.io/library/app:1"}},
		{refs: []string{"app:2", "127.0.0.1:5000/x/b:1"}, want: []string{"index.docker.io/library/app:2", "127.0.0.1:5000/x/b:1"}},
		{refs: []string{"app:1", "nope"}, err: ErrNotFound},
		{refs: []string{"Bad:Ref:x"}, err: ErrInvalidReference},
		{refs: nil, err: errdefs.ErrInvalidArgument},
	} {
		named, err := s.ForSave(ctx, tc.refs)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ForSave(%q) = %v, want %v", tc.refs, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(tags(named), tc.want) {
			t.Errorf("ForSave(%q) = %q, %v; want %q", tc.refs, tags(named), err, tc.want)
		}
	}

	for _, tc := range []struct {
		repo string
		want []string
		err  error
	}{
		{"app", []string{"index.docker.io/library/app:1", "index.docker.io/library/app:2"}, nil},
		{"127.0.0.1:5000/x/b", []string{"127.0.0.1:5000/x/b:1"}, nil},
		{"127.0.0.1:5000/x/none", nil, ErrNotFound},
		{"Bad Repo", nil, ErrInvalidReference},
	} {
		got, err := s.RepositoryTags(ctx, tc.repo)
		if (tc.err != nil && !errors.Is(err, tc.err)) || (tc.err == nil && err != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("RepositoryTags(%q) = %q, %v; want %q, %v", tc.repo, got, err, tc.want, tc.err)
		}
	}
}
