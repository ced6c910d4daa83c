package images

// Unpacking a stored layer, for Load's diff-ID check. A pull does not come
// here: it stores layers verified by digest and size only, and their diff
// IDs are checked where they are first unpacked (engine/rootfs), as
// containerd checks them at unpack rather than at fetch.

import (
	"bufio"
	"crypto/sha256"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

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

// copyBuffers holds 256 KiB copy buffers: fewer, larger reads and writes
// than io.Copy's 32 KiB default when a blob is stored or unpacked.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}
