package images

import (
	"bytes"
	"context"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func gzipOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdOf(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

func TestUnpackStream(t *testing.T) {
	// Big enough for many reads through the decompressor.
	tarball := layerTar(t, map[string]string{"a": strings.Repeat("layer data ", 200_000), "b": "x"})
	gz := gzipOf(t, tarball)
	twoMembers := append(gzipOf(t, tarball[:1024]), gzipOf(t, tarball[1024:])...)
	corrupt := bytes.Clone(gz)
	corrupt[len(corrupt)/2] ^= 0xff
	for _, tc := range []struct {
		name string
		blob []byte
		want string // error text; empty for success
	}{
		{name: "gzip", blob: gz},
		{name: "gzip of two members", blob: twoMembers},
		{name: "zstd", blob: zstdOf(t, tarball)},
		{name: "uncompressed", blob: tarball},
		{name: "corrupt gzip", blob: corrupt, want: "corrupt input"},
		{name: "gzip cut short", blob: gz[:len(gz)/2], want: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, diffID, err := unpackStream(bytes.NewReader(tc.blob))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("unpackStream = %v, want an error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("unpackStream: %v", err)
			}
			if diffID != sha256Of(tarball) || n != int64(len(tarball)) {
				t.Errorf("unpackStream = %d, %s; want %d, %s", n, diffID, len(tarball), sha256Of(tarball))
			}
		})
	}
}

// wrongDiffID is img with its config's diff ID of layer i replaced by the
// digest of something else, as a corrupt or hostile image would have it.
func wrongDiffID(t *testing.T, img v1.Image, i int) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[i] = sha256Of([]byte("something else"))
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// A layer whose bytes match the manifest but not the config's diff ID is
// stored by a pull, marked unverified: the pull does not unpack layers,
// and engine/rootfs refuses the image when it unpacks it. An archive of
// it does not load, since loads check diff IDs.
func TestPullDefersDiffIDs(t *testing.T) {
	bad := wrongDiffID(t, testImage(t, "x", map[string]string{"a": "1"}, map[string]string{"b": "2"}), 1)
	reg := newTestRegistry(t, nil)
	ref := reg.host + "/x:1"
	r, _ := ParseRemoteReference(ref)
	if err := remote.Write(r, bad); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	got, err := s.Pull(context.Background(), ref, RemoteOptions{})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if got.LayersVerified {
		t.Errorf("pulled image has LayersVerified, want false until it is unpacked")
	}
	want := "the config says " + sha256Of([]byte("something else")).String()
	if _, err := openStore(t).Add(context.Background(), bad, "x:1"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Add of the image = %v, want a diff ID mismatch", err)
	}
	named, err := s.ForSave(context.Background(), []string{ref})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{FormatDocker, FormatOCI} {
		if _, err := openStore(t).Load(context.Background(), bytes.NewReader(archive(t, f, named...))); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load of a %s archive of the pulled image = %v, want a diff ID mismatch", f, err)
		}
	}
}

// A pulled image stays unverified when tagged again; a load of the same
// manifest verifies it, under every tag, and a later pull of it does not
// undo that.
func TestVerificationFollowsTheManifest(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "x", map[string]string{"a": "1"})
	reg := newTestRegistry(t, nil)
	ref := reg.host + "/x:1"
	r, _ := ParseRemoteReference(ref)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	verified := func(step string, want bool) {
		t.Helper()
		imgs, err := s.List(ctx)
		if err != nil || len(imgs) != 1 {
			t.Fatalf("%s: List = %v, %v; want one image", step, imgs, err)
		}
		for _, name := range append([]string{imgs[0].ID}, imgs[0].RepoTags...) {
			got, err := s.Resolve(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got.LayersVerified != want {
				t.Errorf("%s: %s has LayersVerified %v, want %v", step, name, got.LayersVerified, want)
			}
		}
	}
	pulled, err := s.Pull(ctx, ref, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var compressed int64
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		compressed += n
	}
	if pulled.Size != compressed {
		t.Errorf("pulled image Size = %d, want the compressed size %d until it is measured", pulled.Size, compressed)
	}
	if err := s.Tag(ctx, ref, "other:2"); err != nil {
		t.Fatal(err)
	}
	verified("after pull and tag", false)
	// An OCI archive keeps the manifest (a docker one has none of its own).
	mustLoad(t, s, archive(t, FormatOCI, NamedImage{Tag: "loaded:3", Image: img}))
	verified("after load", true)
	if _, err := s.Pull(ctx, ref, RemoteOptions{}); err != nil {
		t.Fatal(err)
	}
	verified("after a second pull", true)
}
