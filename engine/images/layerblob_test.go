package images

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// failingReader returns its data, then err instead of io.EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestWriteLayer(t *testing.T) {
	// Big enough for many pipe hand-offs between writer and decompressor.
	tarball := layerTar(t, map[string]string{"a": strings.Repeat("layer data ", 200_000), "b": "x"})
	gz := gzipOf(t, tarball)
	twoMembers := append(gzipOf(t, tarball[:1024]), gzipOf(t, tarball[1024:])...)
	corrupt := bytes.Clone(gz)
	corrupt[len(corrupt)/2] ^= 0xff
	errSource := errors.New("connection reset")
	for _, tc := range []struct {
		name     string
		blob     []byte
		src      func([]byte) io.Reader
		verified bool
		want     string // error text; empty for success
	}{
		{name: "gzip", blob: gz},
		{name: "gzip of two members", blob: twoMembers},
		{name: "zstd", blob: zstdOf(t, tarball)},
		{name: "uncompressed", blob: tarball},
		{name: "verified by its source", blob: gz, verified: true},
		{name: "corrupt gzip", blob: corrupt, want: "unpacking"},
		{name: "gzip cut short", blob: gz[:len(gz)/2], want: "unpacking"},
		{name: "source fails", blob: gz, want: errSource.Error(),
			src: func(b []byte) io.Reader { return &failingReader{bytes.NewReader(b[:len(b)/3]), errSource} }},
		{name: "source fails at the end", blob: gz, want: errSource.Error(),
			src: func(b []byte) io.Reader { return &failingReader{bytes.NewReader(b), errSource} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := blobDir(t.TempDir())
			var src io.Reader = bytes.NewReader(tc.blob)
			if tc.src != nil {
				src = tc.src(tc.blob)
			}
			want := sha256Of(tc.blob)
			var verified = want
			if !tc.verified {
				verified.Hex, verified.Algorithm = "", ""
			}
			sums, err := d.writeLayer(src, verified)
			files, _ := filepath.Glob(filepath.Join(string(d), "sha256", "*"))
			hidden, _ := filepath.Glob(filepath.Join(string(d), "sha256", ".*"))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("writeLayer = %v, want an error containing %q", err, tc.want)
				}
				if len(files)+len(hidden) != 0 {
					t.Errorf("failed writeLayer left %v %v", files, hidden)
				}
				return
			}
			if err != nil {
				t.Fatalf("writeLayer: %v", err)
			}
			if sums.digest != want || sums.size != int64(len(tc.blob)) {
				t.Errorf("digest, size = %s, %d; want %s, %d", sums.digest, sums.size, want, len(tc.blob))
			}
			if sums.diffID != sha256Of(tarball) || sums.unpacked != int64(len(tarball)) {
				t.Errorf("diff ID, unpacked = %s, %d; want %s, %d", sums.diffID, sums.unpacked, sha256Of(tarball), len(tarball))
			}
			got, err := os.ReadFile(d.path(want))
			if err != nil || !bytes.Equal(got, tc.blob) {
				t.Errorf("stored blob differs from the input (err %v)", err)
			}
			if len(files) != 1 || len(hidden) != 0 {
				t.Errorf("blob directory holds %v %v, want the blob alone", files, hidden)
			}
		})
	}
}

// A layer whose bytes match the manifest but not the config's diff ID is
// refused although the pull checks both in one pass.
func TestPullChecksDiffIDs(t *testing.T) {
	img := testImage(t, "x", map[string]string{"a": "1"}, map[string]string{"b": "2"})
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = sha256Of([]byte("something else"))
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	reg := newTestRegistry(t, nil)
	ref := reg.host + "/x:1"
	r, _ := ParseRemoteReference(ref)
	if err := remote.Write(r, bad); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	before := snapshot(t, s)
	_, err = s.Pull(context.Background(), ref, RemoteOptions{})
	if err == nil || !strings.Contains(err.Error(), "the config says "+cf.RootFS.DiffIDs[1].String()) {
		t.Fatalf("Pull = %v, want a diff ID mismatch", err)
	}
	if after := snapshot(t, s); !mapsEqual(before, after) {
		t.Errorf("failed pull changed the store:\nbefore %v\nafter  %v", before, after)
	}
}
