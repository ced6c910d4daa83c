package rootfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vmctl/vmctl/engine/images"
)

func digestOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawLayer is one layer as a registry serves it: blob is the compressed
// bytes, diffID what the image's config lists for it.
type rawLayer struct {
	blob   []byte
	diffID v1.Hash
}

// pulledImage pushes an image made of layers to an in-process registry and
// pulls it into a fresh store, as `vmctl pull` would.
func pulledImage(t testing.TB, layers ...rawLayer) (images.Image, *images.Store) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	img := empty.Image
	var diffIDs []v1.Hash
	for _, l := range layers {
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer(l.blob, types.OCILayer)); err != nil {
			t.Fatal(err)
		}
		diffIDs = append(diffIDs, l.diffID)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.RootFS.DiffIDs = diffIDs
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/pulled:1"
	r, err := images.ParseRemoteReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	s, err := images.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := s.Pull(context.Background(), ref, images.RemoteOptions{})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if pulled.LayersVerified {
		t.Fatalf("pulled image has LayersVerified; the test means to exercise the check at unpack")
	}
	return pulled, s
}

// A pulled image's layers are checked against its config's diff IDs as the
// disk is built: a mismatch anywhere in a layer's uncompressed stream,
// including after the tar's end-of-archive marker, fails the build with
// one line, leaves nothing behind, and fails again on every later try.
func TestImageDiskChecksDiffIDs(t *testing.T) {
	needTools(t)
	baseTar := tarOf(t, dirEnt("bin", 0o755), reg("bin/sh", "shell", 0o755))
	base, baseSize := rawLayer{gzipped(t, baseTar), digestOf(baseTar)}, int64(len(baseTar))
	top := tarOf(t, reg("etc/motd", "hello", 0o644))
	trailing := append(bytes.Clone(top), []byte("bytes after the end-of-archive marker")...)
	corruptGzip := gzipped(t, top)
	corruptGzip[len(corruptGzip)/2] ^= 0xff
	otherDiffID := digestOf([]byte("something else"))
	for _, tc := range []struct {
		name     string
		layers   []rawLayer
		layer    int // the layer the error names; 0 for success
		want     string
		unpacked int64 // for success: the layers' uncompressed size
	}{
		{name: "good", layers: []rawLayer{base, {gzipped(t, top), digestOf(top)}}, unpacked: baseSize + int64(len(top))},
		{name: "trailing bytes in the diff ID", layers: []rawLayer{base, {gzipped(t, trailing), digestOf(trailing)}},
			unpacked: baseSize + int64(len(trailing))},
		{name: "wrong diff ID of the top layer", layers: []rawLayer{base, {gzipped(t, top), otherDiffID}},
			layer: 2, want: "does not match its diff ID " + otherDiffID.String() + " (it unpacks to " + digestOf(top).String() + ")"},
		{name: "wrong diff ID of the bottom layer", layers: []rawLayer{{base.blob, otherDiffID}, {gzipped(t, top), digestOf(top)}},
			layer: 1, want: "does not match its diff ID " + otherDiffID.String()},
		{name: "bytes after the tar not in the diff ID", layers: []rawLayer{base, {gzipped(t, trailing), digestOf(top)}},
			layer: 2, want: "(it unpacks to " + digestOf(trailing).String() + ")"},
		{name: "blob does not decompress", layers: []rawLayer{base, {corruptGzip, digestOf(top)}},
			layer: 2, want: "cannot be unpacked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, store := pulledImage(t, tc.layers...)
			b := newBuilder(t)
			for try := 1; try <= 2; try++ {
				disk, err := b.ImageDisk(context.Background(), img)
				if l := leftovers(t, b); len(l) != 0 {
					t.Errorf("try %d: leftovers: %v", try, l)
				}
				if tc.layer == 0 {
					if err != nil {
						t.Fatalf("ImageDisk: %v", err)
					}
					if out := debugfs(t, disk, "cat /bin/sh"); out != "shell" {
						t.Errorf("/bin/sh on the disk = %q", out)
					}
					// The store now knows the layers were checked, and
					// their unpacked size, as if the image was loaded.
					got, err := store.Resolve(context.Background(), img.ID)
					if err != nil {
						t.Fatal(err)
					}
					if !got.LayersVerified || got.Size != tc.unpacked {
						t.Errorf("after the build: LayersVerified %v, Size %d; want true, %d", got.LayersVerified, got.Size, tc.unpacked)
					}
					return
				}
				cl, ok := errors.AsType[*CorruptLayerError](err)
				if !ok {
					t.Fatalf("try %d: ImageDisk = %q, %v; want a *CorruptLayerError", try, disk, err)
				}
				digest := digestOf(tc.layers[tc.layer-1].blob)
				prefix := fmt.Sprintf("image %s: layer %d (%s) ", img.RepoTags[0], tc.layer, digest)
				suffix := ": the image is corrupt; remove it and pull it again"
				msg := err.Error()
				if !strings.HasPrefix(msg, prefix) || !strings.HasSuffix(msg, suffix) || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
					t.Errorf("try %d: error\n%s\nwant one line %q...%q containing %q", try, msg, prefix, suffix, tc.want)
				}
				if cl.Layer != tc.layer || !errdefs.IsDataLoss(err) {
					t.Errorf("try %d: error names layer %d (want %d), data loss %v", try, cl.Layer, tc.layer, errdefs.IsDataLoss(err))
				}
				p := flatPath(t, b, img)
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("try %d: a disk was cached for the corrupt image (%v)", try, err)
				}
				if got, err := store.Resolve(context.Background(), img.ID); err != nil || got.LayersVerified {
					t.Errorf("try %d: after a failed build the store says LayersVerified %v (%v)", try, got.LayersVerified, err)
				}
			}
		})
	}
}

// checkDiffIDs refuses an image whose config does not list one diff ID per
// layer before reading any layer.
func TestCheckDiffIDsCountsLayers(t *testing.T) {
	l := static.NewLayer(tarOf(t, reg("a", "a", 0o644)), types.OCIUncompressedLayer)
	img, err := mutate.AppendLayers(empty.Image, l, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = cf.RootFS.DiffIDs[:1]
	img, _ = mutate.ConfigFile(img, cf)
	_, err = checkDiffIDs(img, "x")
	if err == nil || !strings.Contains(err.Error(), "config lists 1 layers but the manifest has 2") {
		t.Errorf("checkDiffIDs = %v, want a layer count mismatch", err)
	}
}
