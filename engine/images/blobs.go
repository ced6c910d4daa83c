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
	"golang.org/x/sys/unix"
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
	return d.writeBlobTo(r, nil, v1.Hash{})
}

// writeBlobTo is writeBlob that also copies every byte to also, when it is
// not nil; an error from also fails the write.
//
// verified, when set, is a digest that r checks by itself: r returns an
// error instead of io.EOF unless what it delivered has that digest and its
// expected size. The blob is then stored under verified without being
// hashed a second time, which would cost as much CPU time as the check.
func (d blobDir) writeBlobTo(r io.Reader, also io.Writer, verified v1.Hash) (v1.Hash, int64, error) {
	if verified != (v1.Hash{}) && !validHash(verified) {
		return v1.Hash{}, 0, fmt.Errorf("unsupported digest %q", verified.String())
	}
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
	ws := []io.Writer{&writeBehind{f: f}}
	var h hash.Hash
	if verified == (v1.Hash{}) {
		h = sha256.New()
		ws = append(ws, h)
	}
	if also != nil {
		ws = append(ws, also)
	}
	w := io.MultiWriter(ws...)
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	n, err := io.CopyBuffer(w, r, *buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, 0, err
	}
	digest := verified
	if h != nil {
		digest = hashOf(h)
	}
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

// writeBehindChunk is how much written data writeBehind lets accumulate
// before it starts its writeback.
const writeBehindChunk = 8 << 20

// writeBehind writes to a file and starts the kernel's writeback of each
// chunk as soon as it is complete (sync_file_range(2) with
// SYNC_FILE_RANGE_WRITE, which does not wait), so the fsync that makes the
// blob durable finds most of it on disk already instead of waiting for all
// of it after the last byte arrived. Measured on a 40 MB layer: the fsync
// at the end took 40-50 ms without it.
type writeBehind struct {
	f       *os.File
	off     int64 // bytes written
	flushed int64 // bytes whose writeback was started
}

func (w *writeBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= writeBehindChunk {
		// Only a hint: on a file system without it, fsync does all the work.
		unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.off-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.off
	}
	return n, err
}
