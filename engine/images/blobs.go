package images

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxJSONBlob bounds manifests, indexes and configs read into memory, so a
// hostile archive cannot make the store allocate without limit.
const maxJSONBlob = 8 << 20

// blobDir is a directory holding content-addressed blobs as
// <dir>/sha256/<hex>, the layout of an OCI image layout's blobs/ directory.
// A file's name is always the digest of its content: blobs are only placed
// there by writeBlob, which hashes what it writes.
type blobDir string

func (d blobDir) path(h v1.Hash) string {
	return filepath.Join(string(d), h.Algorithm, h.Hex)
}

func (d blobDir) has(h v1.Hash) bool {
	fi, err := os.Lstat(d.path(h))
	return err == nil && fi.Mode().IsRegular()
}

func (d blobDir) open(h v1.Hash) (*os.File, error) {
	if !validHash(h) {
		return nil, fmt.Errorf("unsupported digest %q", h.String())
	}
	return os.Open(d.path(h))
}

// readJSON reads a small blob, refusing oversized ones.
func (d blobDir) readSmall(h v1.Hash) ([]byte, error) {
	f, err := d.open(h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSONBlob+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJSONBlob {
		return nil, fmt.Errorf("blob %s is larger than %d bytes", h, maxJSONBlob)
	}
	return b, nil
}

func validHash(h v1.Hash) bool {
	return h.Algorithm == "sha256" && hexID.MatchString(h.Hex)
}

// writeBlob copies r into d under the digest of what it read, durably
// (fsync before rename), and returns that digest and size. The caller checks
// them against what it expected.
func (d blobDir) writeBlob(r io.Reader) (v1.Hash, int64, error) {
	dir := filepath.Join(string(d), "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return v1.Hash{}, 0, err
	}
	f, err := os.CreateTemp(dir, ".incoming-")
	if err != nil {
		return v1.Hash{}, 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, 0, err
	}
	digest := hashOf(h)
	if err := os.Rename(tmp, d.path(digest)); err != nil {
		return v1.Hash{}, 0, err
	}
	return digest, n, nil
}

func (d blobDir) writeBytes(b []byte) (v1.Hash, error) {
	h, _, err := d.writeBlob(bytes.NewReader(b))
	return h, err
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

func sha256Of(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// blobImage is a v1.Image whose manifest, config and layers are files in a
// blobDir. It trusts the blobs: they were verified when they were written.
type blobImage struct {
	dir      blobDir
	desc     v1.Descriptor
	manifest []byte
	parsed   *v1.Manifest
}

var _ partial.CompressedImageCore = (*blobImage)(nil)

func newBlobImage(dir blobDir, desc v1.Descriptor) (*blobImage, error) {
	raw, err := dir.readSmall(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", desc.Digest, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing manifest %s: %w", desc.Digest, err)
	}
	return &blobImage{dir: dir, desc: desc, manifest: raw, parsed: m}, nil
}

func (i *blobImage) image() (v1.Image, error) { return partial.CompressedToImage(i) }

func (i *blobImage) RawManifest() ([]byte, error) { return i.manifest, nil }

func (i *blobImage) MediaType() (types.MediaType, error) {
	if i.parsed.MediaType != "" {
		return i.parsed.MediaType, nil
	}
	return i.desc.MediaType, nil
}

func (i *blobImage) RawConfigFile() ([]byte, error) {
	return i.dir.readSmall(i.parsed.Config.Digest)
}

func (i *blobImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.parsed.Config.Digest {
		return &blobLayer{dir: i.dir, desc: i.parsed.Config}, nil
	}
	for _, l := range i.parsed.Layers {
		if l.Digest == h {
			return &blobLayer{dir: i.dir, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("layer %s not in manifest %s", h, i.desc.Digest)
}

// blobLayer is one layer (or the config) of a blobImage.
type blobLayer struct {
	dir  blobDir
	desc v1.Descriptor
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *blobLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	f, err := l.dir.open(l.desc.Digest)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s is missing from the image store: %w", l.desc.Digest, err)
	}
	return f, err
}
