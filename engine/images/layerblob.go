package images

// One pass over a layer. A pulled layer is checked twice: its compressed
// bytes against the manifest's digest and its uncompressed tar against the
// config's diff ID. Reading the blob back from disk to decompress it after
// the download doubled the I/O and serialised the decompression behind the
// transfer; here the decompressor reads the same bytes as they are written,
// in a goroutine of its own, so both sums are ready when the blob is.

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// layerSums are what one pass over a layer blob measures.
type layerSums struct {
	digest   v1.Hash // of the blob as stored (compressed)
	size     int64
	diffID   v1.Hash // of the uncompressed tar
	unpacked int64
}

// writeLayer is writeBlob for a layer: it also decompresses the stream
// (gzip, zstd or none, detected from its first bytes) as it goes by and
// measures the diff ID. A stream that does not decompress fails the write,
// early, without reading the rest of r. verified is as for writeBlobTo.
func (d blobDir) writeLayer(r io.Reader, verified v1.Hash) (layerSums, error) {
	pr, pw := io.Pipe()
	type unpacked struct {
		n      int64
		diffID v1.Hash
		err    error
	}
	done := make(chan unpacked, 1)
	go func() {
		n, h, err := unpackStream(pr)
		if err != nil {
			// Stops the writer: its next Write returns err.
			pr.CloseWithError(fmt.Errorf("unpacking: %w", err))
		} else {
			// Bytes after the end of the compressed stream are left
			// unread by some decompressors; the writer must not block on them.
			io.Copy(io.Discard, pr)
		}
		done <- unpacked{n, h, err}
	}()
	digest, size, err := d.writeBlobTo(r, pw, verified)
	pw.CloseWithError(err) // nil: the decompressor sees EOF
	u := <-done
	if err != nil {
		// Either the source failed (and the decompressor saw that), or the
		// decompressor failed first and its error stopped the copy.
		return layerSums{}, err
	}
	if u.err != nil {
		os.Remove(d.path(digest))
		return layerSums{}, fmt.Errorf("unpacking: %w", u.err)
	}
	return layerSums{digest: digest, size: size, diffID: u.diffID, unpacked: u.n}, nil
}

// unpackStream decompresses r, whose compression is detected from its
// first bytes, and returns the size and digest of the result.
func unpackStream(r io.Reader) (int64, v1.Hash, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return 0, v1.Hash{}, err
	}
	var src io.Reader = br
	switch layerMediaTypeOf(head) {
	case types.OCILayer:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return 0, v1.Hash{}, err
		}
		defer zr.Close()
		src = zr
	case types.OCILayerZStd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return 0, v1.Hash{}, err
		}
		defer zr.Close()
		src = zr
	}
	h := sha256.New()
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	n, err := io.CopyBuffer(h, src, *buf)
	if err != nil {
		return 0, v1.Hash{}, err
	}
	return n, hashOf(h), nil
}

// copyBuffers holds 256 KiB copy buffers: io.Copy's 32 KiB default makes
// eight times as many pipe hand-offs between writer and decompressor.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}
