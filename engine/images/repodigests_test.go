package images

import (
	"context"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RepoDigests: a pushed image records where it went; a pulled one where it
// came from, with the registry's digest (an index's, for a multi-platform
// image); the record outlives the tag it came with and survives retagging.
func TestRepoDigests(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, nil)
	img := testImage(t, "app", map[string]string{"bin/app": "x"})
	src := openStore(t)
	local := addTagged(t, src, img, reg.host+"/team/app:1")
	if len(local.RepoDigests) != 0 {
		t.Errorf("an added image has repo digests %v", local.RepoDigests)
	}
	if _, err := src.Push(ctx, reg.host+"/team/app:1", RemoteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{reg.host + "/team/app@" + local.Digest}
	got, err := src.Resolve(ctx, reg.host+"/team/app:1")
	if err != nil || !slices.Equal(got.RepoDigests, want) {
		t.Fatalf("after push: repo digests %v (%v), want %v", got.RepoDigests, err, want)
	}

	// A multi-platform image: the record names the index.
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	r, _ := ParseRemoteReference(reg.host + "/team/multi:1")
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dst := openStore(t)
	if _, err := dst.Pull(ctx, reg.host+"/team/app:1", RemoteOptions{}); err != nil {
		t.Fatal(err)
	}
	pulled, err := dst.Pull(ctx, reg.host+"/team/multi:1", RemoteOptions{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{reg.host + "/team/app@" + local.Digest, reg.host + "/team/multi@" + idxDigest.String()}
	if !slices.Equal(pulled.RepoDigests, want) {
		t.Errorf("after two pulls: repo digests %v, want %v", pulled.RepoDigests, want)
	}
	// A new tag keeps them; removing the tags they came with does not drop them.
	if err := dst.Tag(ctx, reg.host+"/team/app:1", "mine:1"); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{reg.host + "/team/app:1", reg.host + "/team/multi:1"} {
		if _, err := dst.Remove(ctx, ref, RemoveOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kept, err := dst.Resolve(ctx, "mine:1")
	if err != nil || !slices.Equal(kept.RepoDigests, want) {
		t.Errorf("after retag and untag: repo digests %v (%v), want %v", kept.RepoDigests, err, want)
	}
}
