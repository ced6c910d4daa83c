package rootfs

// Diff-ID checks at unpack. A pulled image's layers were checked against
// their digests as they were downloaded, but not against the diff IDs its
// config lists (the digests of the uncompressed tars), since that meant
// decompressing every layer during the pull. containerd makes the same
// split: content is verified by digest at fetch, diff IDs at unpack. Here
// the unpack is the disk build: each layer's uncompressed stream is hashed
// as it is extracted, to its very end (bytes after the tar's end-of-archive
// marker are part of the diff ID too), and a mismatch fails the build
// before the disk exists. The image ID is the config's digest, so a cached
// disk is the proof that the check passed for exactly these diff IDs.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CorruptLayerError says that a layer of an image does not unpack to the
// diff ID its config lists, or does not unpack at all.
type CorruptLayerError struct {
	Image  string  // the image as the user would name it
	Layer  int     // 1 for the bottom layer
	Digest v1.Hash // of the layer blob
	DiffID v1.Hash // what the config lists
	Got    v1.Hash // what the layer unpacked to; zero if it did not unpack
	Err    error   // why it did not unpack
}

func (e *CorruptLayerError) Error() string {
	what := fmt.Sprintf("does not match its diff ID %s (it unpacks to %s)", e.DiffID, e.Got)
	if e.Err != nil {
		what = fmt.Sprintf("cannot be unpacked (%s)", oneLine(e.Err))
	}
	return fmt.Sprintf("image %s: layer %d (%s) %s: the image is corrupt; remove it and pull it again",
		e.Image, e.Layer, e.Digest, what)
}

func (e *CorruptLayerError) Unwrap() error { return e.Err }

// checkedImage is an image whose layers check their diff IDs as they are
// read (mutate.Extract reads each layer's uncompressed stream to its end).
type checkedImage struct {
	v1.Image
	layers []v1.Layer // of *checkedLayer
}

func (c checkedImage) Layers() ([]v1.Layer, error) { return c.layers, nil }

// unpacked is the total size of the layers' uncompressed streams, once
// every layer was read to its end and matched its diff ID; false before.
func (c checkedImage) unpacked() (int64, bool) {
	var total int64
	for _, l := range c.layers {
		cl := l.(*checkedLayer)
		if !cl.matched {
			return 0, false
		}
		total += cl.size
	}
	return total, true
}

// checkDiffIDs wraps img so that reading a layer's uncompressed stream to
// its end fails with a *CorruptLayerError unless it had the diff ID the
// config lists for that layer. name is how errors name the image.
func checkDiffIDs(img v1.Image, name string) (checkedImage, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return checkedImage{}, fmt.Errorf("reading image config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return checkedImage{}, fmt.Errorf("reading image layers: %w", err)
	}
	if len(cf.RootFS.DiffIDs) != len(layers) {
		// Pull and load refuse such an image; this guards the index below.
		return checkedImage{}, fmt.Errorf("the config lists %d layers but the manifest has %d", len(cf.RootFS.DiffIDs), len(layers))
	}
	out := checkedImage{Image: img, layers: make([]v1.Layer, len(layers))}
	for i, l := range layers {
		out.layers[i] = &checkedLayer{Layer: l, image: name, index: i, want: cf.RootFS.DiffIDs[i]}
	}
	return out, nil
}

// checkedLayer is a layer whose Uncompressed stream checks its diff ID.
// mutate.Extract reads each layer once, from one goroutine.
type checkedLayer struct {
	v1.Layer
	image string
	index int
	want  v1.Hash

	size    int64 // bytes of the uncompressed stream read so far
	matched bool  // the stream ended and had the diff ID
}

func (l *checkedLayer) corrupt(got v1.Hash, err error) *CorruptLayerError {
	d, derr := l.Digest()
	if derr != nil {
		d = v1.Hash{}
	}
	return &CorruptLayerError{Image: l.image, Layer: l.index + 1, Digest: d, DiffID: l.want, Got: got, Err: err}
}

// readError classifies a failure to read the layer: one of the host (the
// blob file cannot be read) is not the image's fault; anything else is the
// decompressor refusing the blob, which is corruption.
func (l *checkedLayer) readError(err error) error {
	var pe *fs.PathError
	var se *os.SyscallError
	if errors.As(err, &pe) || errors.As(err, &se) {
		return fmt.Errorf("reading layer %d of image %s: %w", l.index+1, l.image, err)
	}
	return l.corrupt(v1.Hash{}, err)
}

func (l *checkedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, l.readError(err)
	}
	return &diffIDReader{rc: rc, layer: l, h: sha256.New()}, nil
}

// diffIDReader hashes what it reads and, at the end of the stream, returns
// a *CorruptLayerError instead of io.EOF unless the hash is the diff ID.
type diffIDReader struct {
	rc    io.ReadCloser
	layer *checkedLayer
	h     hash.Hash
	err   error // sticky: the end was reached or reading failed
}

func (r *diffIDReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.rc.Read(p)
	r.h.Write(p[:n])
	r.layer.size += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(r.h.Sum(nil))}
		if got != r.layer.want {
			r.err = r.layer.corrupt(got, nil)
		} else {
			r.layer.matched = true
			r.err = io.EOF
		}
		return n, r.err
	case err != nil:
		r.err = r.layer.readError(err)
		return n, r.err
	}
	return n, nil
}

func (r *diffIDReader) Close() error { return r.rc.Close() }

// oneLine is err's message on one line.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
