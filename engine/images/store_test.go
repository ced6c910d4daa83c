package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// legacyDockerArchive writes an archive the way `docker save` did before
// Docker 25: <id>/layer.tar (uncompressed; a repeated layer is a symlink to
// the first copy), <config-hex>.json and manifest.json.
func legacyDockerArchive(t *testing.T, tag string, layers ...[]byte) []byte {
	t.Helper()
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	cfg.Config.Cmd = []string{"legacy"}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var paths []string
	first := map[v1.Hash]string{}
	for i, l := range layers {
		h := sha256Of(l)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
		p := fmt.Sprintf("layer%d/layer.tar", i)
		paths = append(paths, p)
		if prev, ok := first[h]; ok {
			tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: "../" + prev, Mode: 0o644})
			continue
		}
		first[h] = p
		tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Size: int64(len(l)), Mode: 0o644})
		tw.Write(l)
	}
	cb, _ := json.Marshal(cfg)
	cname := sha256Of(cb).Hex + ".json"
	tw.WriteHeader(&tar.Header{Name: cname, Typeflag: tar.TypeReg, Size: int64(len(cb)), Mode: 0o644})
	tw.Write(cb)
	mb, _ := json.Marshal([]map[string]any{{"Config": cname, "RepoTags": []string{tag}, "Layers": paths}})
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Size: int64(len(mb)), Mode: 0o644})
	tw.Write(mb)
	tw.Close()
	return buf.Bytes()
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestLoadFormats(t *testing.T) {
	img := testImage(t, "hello", map[string]string{"bin/hello": "hi"}, map[string]string{"etc/motd": "welcome"})
	named := NamedImage{Tag: "busybox:latest", Image: img}
	layerA := layerTar(t, map[string]string{"a": "1"})
	tests := []struct {
		name    string
		archive []byte
		wantTag string
		wantCmd string
		wantID  string
		layers  int
	}{
		{"docker", archive(t, FormatDocker, named), "busybox:latest", "hello", configDigest(t, img), 2},
		{"oci", archive(t, FormatOCI, named), "busybox:latest", "hello", configDigest(t, img), 2},
		{"docker gzipped", gzipped(archive(t, FormatDocker, named)), "busybox:latest", "hello", configDigest(t, img), 2},
		{"legacy docker with shared layer", legacyDockerArchive(t, "old/app:v1", layerA, layerA), "old/app:v1", "legacy", "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			got := mustLoad(t, s, tt.archive)
			if len(got) != 1 {
				t.Fatalf("Load returned %d images, want 1", len(got))
			}
			im := got[0]
			if !slices.Equal(im.RepoTags, []string{tt.wantTag}) {
				t.Errorf("RepoTags = %v, want [%s]", im.RepoTags, tt.wantTag)
			}
			if tt.wantID != "" && im.ID != tt.wantID {
				t.Errorf("ID = %s, want %s", im.ID, tt.wantID)
			}
			if len(im.Config.Cmd) != 1 || im.Config.Cmd[0] != tt.wantCmd {
				t.Errorf("Config.Cmd = %v, want [%s]", im.Config.Cmd, tt.wantCmd)
			}
			if im.Size <= 0 {
				t.Errorf("Size = %d, want > 0", im.Size)
			}
			layers, err := im.Content().Layers()
			if err != nil || len(layers) != tt.layers {
				t.Fatalf("Content().Layers() = %d layers, %v; want %d", len(layers), err, tt.layers)
			}
			// The stored image must be readable end to end.
			rc := mutate.Extract(im.Content())
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Errorf("extracting stored image: %v", err)
			}
			rc.Close()
			list, err := s.List(context.Background())
			if err != nil || len(list) != 1 || list[0].ID != im.ID {
				t.Errorf("List = %v, %v; want the loaded image", list, err)
			}
			if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
				t.Errorf("staging left behind: %v", entries)
			}
		})
	}
}

func TestLoadMovesTag(t *testing.T) {
	s := openStore(t)
	a := testImage(t, "a", map[string]string{"a": "a"})
	b := testImage(t, "b", map[string]string{"b": "b"})
	mustLoad(t, s, archive(t, FormatOCI, NamedImage{Tag: "app", Image: a}))
	mustLoad(t, s, archive(t, FormatDocker, NamedImage{Tag: "app:latest", Image: b}))
	got, err := s.Resolve(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != configDigest(t, b) {
		t.Errorf("app resolves to %s, want the second image %s", got.ID, configDigest(t, b))
	}
	old, err := s.Resolve(context.Background(), configDigest(t, a))
	if err != nil {
		t.Fatalf("the image the tag moved away from is gone: %v", err)
	}
	if len(old.RepoTags) != 0 {
		t.Errorf("old image still tagged %v", old.RepoTags)
	}
	// Loading the same archive again changes nothing.
	before := snapshot(t, s)
	mustLoad(t, s, archive(t, FormatDocker, NamedImage{Tag: "app:latest", Image: b}))
	if after := snapshot(t, s); !mapsEqual(before, after) {
		t.Errorf("reloading an identical archive changed the store")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestLoadRejectsBadArchives(t *testing.T) {
	img := testImage(t, "x", map[string]string{"file": strings.Repeat("data", 100)})
	named := NamedImage{Tag: "bad:1", Image: img}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	flip := func(b []byte) []byte {
		c := slices.Clone(b)
		c[len(c)/2] ^= 0xff
		return c
	}
	docker := archive(t, FormatDocker, named)
	oci := archive(t, FormatOCI, named)
	random := make([]byte, 4096)
	rand.Read(random)
	textOnly := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "readme.txt", Size: 2, Mode: 0o644})
		tw.Write([]byte("hi"))
		tw.Close()
		return buf.Bytes()
	}()
	legacyGood := layerTar(t, map[string]string{"x": "y"})
	legacyTampered := rewriteTar(t, legacyDockerArchive(t, "bad:legacy", legacyGood), func(name string, b []byte) []byte {
		if strings.HasSuffix(name, "layer.tar") {
			return layerTar(t, map[string]string{"x": "evil"})
		}
		return b
	})
	missingLayer := rewriteTar(t, oci, func(name string, b []byte) []byte {
		if name == blobPath(ld) {
			return nil
		}
		return b
	})
	tests := []struct {
		name    string
		archive []byte
		want    string
	}{
		{"docker tampered layer", rewriteTar(t, docker, func(n string, b []byte) []byte {
			if n == blobPath(ld) {
				return flip(b)
			}
			return b
		}), "corrupt"},
		{"oci tampered layer", rewriteTar(t, oci, func(n string, b []byte) []byte {
			if n == blobPath(ld) {
				return flip(b)
			}
			return b
		}), "corrupt"},
		{"legacy tampered layer", legacyTampered, "corrupt"},
		{"oci layer emptied", missingLayer, "corrupt"},
		{"truncated docker", docker[:len(docker)/2], "not a valid image archive"},
		{"truncated oci", oci[:len(oci)-1500], "not a valid image archive"},
		{"random bytes", random, "not a valid image archive"},
		{"empty", nil, "not a valid image archive"},
		{"tar without image", textOnly, "neither manifest.json nor index.json"},
		{"gzip garbage", append([]byte{0x1f, 0x8b}, random[:100]...), "not a valid image archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			mustLoad(t, s, archive(t, FormatOCI, NamedImage{Tag: "keep", Image: testImage(t, "keep", map[string]string{"k": "k"})}))
			before := snapshot(t, s)
			_, err := s.Load(context.Background(), bytes.NewReader(tt.archive))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			t.Logf("Load error: %v", err)
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %q, want one line containing %q", err, tt.want)
			}
			if after := snapshot(t, s); !mapsEqual(before, after) {
				t.Errorf("failed Load changed the store:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	s := openStore(t)
	img := testImage(t, "r", map[string]string{"r": "r"})
	other := testImage(t, "o", map[string]string{"o": "o"})
	mustLoad(t, s, archive(t, FormatOCI, NamedImage{Tag: "busybox:latest", Image: img}, NamedImage{Tag: "example.test:5000/team/tool:2", Image: other}))
	id := configDigest(t, img)
	hex := strings.TrimPrefix(id, "sha256:")
	stored, err := s.Resolve(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref      string
		want     string // image ID, or "" for an error
		notFound string // expected error text
	}{
		{"busybox", id, ""},
		{"busybox:latest", id, ""},
		{"library/busybox", id, ""},
		{"library/busybox:latest", id, ""},
		{name.DefaultRegistry + "/library/busybox:latest", id, ""},
		{"busybox@" + stored.Digest, id, ""},
		{id, id, ""},
		{hex, id, ""},
		{hex[:12], id, ""},
		{"sha256:" + hex[:16], id, ""},
		{"example.test:5000/team/tool:2", configDigest(t, other), ""},
		{"nosuch", "", "No such image: nosuch:latest"},
		{"busybox:other", "", "No such image: busybox:other"},
		{"team/tool:2", "", "No such image: team/tool:2"},
		{strings.Repeat("0", 12), "", "No such image: 000000000000"},
		{"sha256:" + strings.Repeat("0", 64), "", "No such image: sha256:" + strings.Repeat("0", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := s.Resolve(context.Background(), tt.ref)
			if tt.want != "" {
				if err != nil || got.ID != tt.want {
					t.Fatalf("Resolve(%q) = %s, %v; want %s", tt.ref, got.ID, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrNotFound) || err.Error() != tt.notFound {
				t.Fatalf("Resolve(%q) error = %v; want ErrNotFound reading %q", tt.ref, err, tt.notFound)
			}
		})
	}
	if _, err := s.Resolve(context.Background(), "Bad/UPPER"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("Resolve(invalid) error = %v, want ErrInvalidReference", err)
	}
	if got, _ := s.Resolve(context.Background(), "busybox"); !slices.Equal(got.RepoTags, []string{"busybox:latest"}) {
		t.Errorf("RepoTags = %v, want the familiar name", got.RepoTags)
	}
}

func blobCount(t *testing.T, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	shared := map[string]string{"shared": "base layer"}
	a := testImage(t, "a", shared, map[string]string{"a": "only a"})
	b := testImage(t, "b", shared, map[string]string{"b": "only b"})
	s := openStore(t)
	mustLoad(t, s, archive(t, FormatOCI, NamedImage{Tag: "a", Image: a}, NamedImage{Tag: "b", Image: b}))
	if err := s.Tag(ctx, "a", "a:second"); err != nil {
		t.Fatal(err)
	}
	// manifest + config + 2 layers each, one layer shared.
	if n := blobCount(t, s); n != 7 {
		t.Fatalf("%d blobs after load, want 7", n)
	}
	steps := []struct {
		ref       string
		untagged  []string
		deleted   []string
		blobsLeft int
	}{
		{"a:second", []string{"a:second"}, nil, 7},
		{"a", []string{"a:latest"}, []string{configDigest(t, a)}, 4},
		{configDigest(t, b)[7:19], []string{"b:latest"}, []string{configDigest(t, b)}, 0},
	}
	for _, st := range steps {
		res, err := s.Remove(ctx, st.ref, RemoveOptions{})
		if err != nil {
			t.Fatalf("Remove(%q): %v", st.ref, err)
		}
		if !slices.Equal(res.Untagged, st.untagged) || !slices.Equal(res.Deleted, st.deleted) {
			t.Errorf("Remove(%q) = %+v, want untagged %v deleted %v", st.ref, res, st.untagged, st.deleted)
		}
		if n := blobCount(t, s); n != st.blobsLeft {
			t.Errorf("after Remove(%q): %d blobs, want %d", st.ref, n, st.blobsLeft)
		}
	}
	if _, err := s.Remove(ctx, "a", RemoveOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove of a removed image: %v, want ErrNotFound", err)
	}
	if list, _ := s.List(ctx); len(list) != 0 {
		t.Errorf("List after removing everything = %v", list)
	}
}

func TestConcurrentLoadsFromTwoStores(t *testing.T) {
	root := filepath.Join(t.TempDir(), "images")
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Store per goroutine stands in for separate processes.
			s, err := Open(root)
			if err != nil {
				errs <- err
				return
			}
			img := testImage(t, fmt.Sprint(i), map[string]string{"f": fmt.Sprint(i)})
			_, err = s.Load(context.Background(), bytes.NewReader(archive(t, FormatDocker, NamedImage{Tag: fmt.Sprintf("img%d", i), Image: img})))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List(context.Background())
	if err != nil || len(list) != n {
		t.Fatalf("List = %d images, %v; want %d", len(list), err, n)
	}
}

func TestOpenRemovesAbandonedStages(t *testing.T) {
	s := openStore(t)
	dead := filepath.Join(s.tmpDir(), "stage-dead")
	os.MkdirAll(filepath.Join(dead, "blobs"), 0o755)
	os.WriteFile(filepath.Join(dead, "lock"), nil, 0o600)
	live, err := s.newStage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()
	if _, err := Open(s.Root()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("abandoned stage still there: %v", err)
	}
	if _, err := os.Stat(live.dir); err != nil {
		t.Errorf("live stage was removed: %v", err)
	}
}

func TestAdd(t *testing.T) {
	s := openStore(t)
	img := testImage(t, "added", map[string]string{"x": "y"})
	got, err := s.Add(context.Background(), img, "added:1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if got.Digest != want.String() || !slices.Equal(got.RepoTags, []string{"added:1"}) {
		t.Errorf("Add = digest %s tags %v; want %s [added:1]", got.Digest, got.RepoTags, want)
	}
}

// An image a container uses is not deleted: refused without force; with
// force its tags go and it stays, untagged, resolvable by ID.
func TestRemoveInUse(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	img := testImage(t, "used", map[string]string{"a": "1"})
	added := addTagged(t, s, img, "app:1")
	addTagged(t, s, img, "app:2")
	inUse := func(id string) (string, bool) { return "web", id == added.ID }

	// Untagging one of two tags deletes nothing, so it is allowed.
	if res, err := s.Remove(ctx, "app:2", RemoveOptions{InUse: inUse}); err != nil || len(res.Deleted) != 0 {
		t.Fatalf("untag of one tag = %+v, %v", res, err)
	}
	_, err := s.Remove(ctx, "app:1", RemoveOptions{InUse: inUse})
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "container web is using it") {
		t.Fatalf("Remove of the last tag of an image in use = %v, want a conflict naming web", err)
	}
	if _, err := s.Remove(ctx, added.ID, RemoveOptions{InUse: inUse}); !errdefs.IsConflict(err) {
		t.Fatalf("Remove by ID of an image in use = %v, want a conflict", err)
	}
	res, err := s.Remove(ctx, "app:1", RemoveOptions{InUse: inUse, Force: true})
	if err != nil || len(res.Deleted) != 0 || len(res.Untagged) != 1 || res.Untagged[0] != "app:1" {
		t.Fatalf("forced Remove = %+v, %v; want app:1 untagged, nothing deleted", res, err)
	}
	kept, err := s.Resolve(ctx, added.ID)
	if err != nil || len(kept.RepoTags) != 0 {
		t.Fatalf("after the forced removal: %+v, %v; want the image, untagged", kept, err)
	}
	// Once nothing uses it, it goes.
	res, err = s.Remove(ctx, added.ID, RemoveOptions{InUse: func(string) (string, bool) { return "", false }})
	if err != nil || len(res.Deleted) != 1 {
		t.Fatalf("Remove of the unused image = %+v, %v", res, err)
	}
	if _, err := s.Resolve(ctx, added.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve after deletion = %v, want not found", err)
	}
}

// docker rmi by ID refuses an image with more than one tag unless forced
// ("image is referenced in multiple repositories"), and leaves it whole.
func TestRemoveByIDWithSeveralTags(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	img := testImage(t, "tagged twice", map[string]string{"a": "1"})
	added := addTagged(t, s, img, "a:1")
	addTagged(t, s, img, "b:1")
	for _, ref := range []string{added.ID, added.ID[7:], added.ID[7:19]} {
		_, err := s.Remove(ctx, ref, RemoveOptions{})
		if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "must be forced") {
			t.Errorf("Remove(%q) of an image with two tags = %v, want a conflict", ref, err)
		}
	}
	got, err := s.Resolve(ctx, added.ID)
	if err != nil || !slices.Equal(got.RepoTags, []string{"a:1", "b:1"}) {
		t.Fatalf("after the refused removals: %+v, %v; want the image with both tags", got.RepoTags, err)
	}
	res, err := s.Remove(ctx, added.ID[7:19], RemoveOptions{Force: true})
	if err != nil || !slices.Equal(res.Untagged, []string{"a:1", "b:1"}) || !slices.Equal(res.Deleted, []string{added.ID}) {
		t.Fatalf("forced Remove = %+v, %v; want both tags untagged and the image deleted", res, err)
	}
	if n := blobCount(t, s); n != 0 {
		t.Errorf("%d blobs left after the forced removal, want 0", n)
	}
}

// docker rmi name@digest of an image that also has tags removes that
// digest reference only; the image stays with its tags.
func TestRemoveByDigestKeepsTaggedImage(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	added := addTagged(t, s, testImage(t, "pulled", map[string]string{"p": "1"}), "app:1")
	m, err := v1.NewHash(added.Digest)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository("app")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.recordPush(ctx, m, repo, m); err != nil {
		t.Fatal(err)
	}
	ref := "app@" + added.Digest
	res, err := s.Remove(ctx, ref, RemoveOptions{})
	if err != nil || !slices.Equal(res.Untagged, []string{ref}) || len(res.Deleted) != 0 {
		t.Fatalf("Remove(%q) = %+v, %v; want only %s untagged", ref, res, err, ref)
	}
	got, err := s.Resolve(ctx, "app:1")
	if err != nil || got.ID != added.ID || len(got.RepoDigests) != 0 {
		t.Fatalf("after Remove(%q): %+v, %v; want the image, tagged, without the digest reference", ref, got, err)
	}
	// Untagged, the image goes when named by its digest.
	if _, err := s.Remove(ctx, "app:1", RemoveOptions{InUse: func(string) (string, bool) { return "c", true }, Force: true}); err != nil {
		t.Fatal(err)
	}
	res, err = s.Remove(ctx, ref, RemoveOptions{})
	if err != nil || !slices.Equal(res.Deleted, []string{added.ID}) {
		t.Fatalf("Remove(%q) of the untagged image = %+v, %v; want it deleted", ref, res, err)
	}
}
