package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// Request types (virtio 1.2, 5.2.6).
const (
	TypeIn          uint32 = 0
	TypeOut         uint32 = 1
	TypeFlush       uint32 = 4
	TypeGetID       uint32 = 8
	TypeDiscard     uint32 = 11
	TypeWriteZeroes uint32 = 13
)

// Request status values.
const (
	StatusOK     byte = 0
	StatusIOErr  byte = 1
	StatusUnsupp byte = 2
)

// SectorSize is the virtio-blk sector: capacity and request sectors count
// 512-byte units whatever the backing file's block size.
const SectorSize = 512

// IDBytes is the size of a GET_ID answer (VIRTIO_BLK_ID_BYTES).
const IDBytes = 20

// headerSize is sizeof(struct virtio_blk_outhdr).
const headerSize = 16

// maxDataLen bounds one request's data so its used length fits in 32 bits
// with room to spare; Linux requests are far smaller.
const maxDataLen = 1 << 30

var (
	// ErrNoStatus means the chain has no writable byte for the status:
	// nothing can be reported, so the chain is returned with length 0.
	ErrNoStatus = errors.New("virtio-blk: request without a status byte")
	// ErrBadRequest marks a request that is answered with VIRTIO_BLK_S_IOERR.
	ErrBadRequest = errors.New("virtio-blk: malformed request")
)

// Request is a parsed virtio-blk request. Data and Status alias guest
// memory.
type Request struct {
	Type   uint32
	Sector uint64
	// Data are the buffers after the header (readable, for OUT) or before
	// the status byte (writable, for IN and GET_ID).
	Data    [][]byte
	DataLen uint64
	// Status is the request's last writable byte.
	Status []byte
}

// Parse splits a chain into header, data and status (virtio 1.2, 5.2.6:
// struct virtio_blk_req) without touching the disk. The header must be
// device-readable and the status device-writable; where the data lives
// depends on the type. Buffers may be framed arbitrarily (the header need
// not have a descriptor of its own). Data lengths are checked here; sector
// ranges are checked against the capacity by CheckRange.
func Parse(c *queue.Chain) (Request, error) {
	var r Request
	wlen := c.WritableLen()
	if wlen == 0 {
		return r, ErrNoStatus
	}
	r.Status = lastByte(c.Writable)
	var hdr [headerSize]byte
	if _, err := io.ReadFull(c.Reader(), hdr[:]); err != nil {
		return r, fmt.Errorf("%w: %d readable bytes, want a %d-byte header", ErrBadRequest, c.ReadableLen(), headerSize)
	}
	r.Type = binary.LittleEndian.Uint32(hdr[0:])
	r.Sector = binary.LittleEndian.Uint64(hdr[8:])
	rlen := c.ReadableLen()
	switch r.Type {
	case TypeIn, TypeGetID:
		if rlen != headerSize {
			return r, fmt.Errorf("%w: %d readable bytes after the header of a read", ErrBadRequest, rlen-headerSize)
		}
		r.Data, r.DataLen = span(c.Writable, 0, wlen-1)
	case TypeOut:
		if wlen != 1 {
			return r, fmt.Errorf("%w: %d writable bytes in a write, want only the status", ErrBadRequest, wlen)
		}
		r.Data, r.DataLen = span(c.Readable, headerSize, rlen-headerSize)
	default:
		// FLUSH carries no data; unsupported types are answered as such
		// whatever they carry.
		return r, nil
	}
	if r.DataLen > maxDataLen {
		return r, fmt.Errorf("%w: %d bytes of data", ErrBadRequest, r.DataLen)
	}
	if r.Type != TypeGetID && r.DataLen%SectorSize != 0 {
		return r, fmt.Errorf("%w: data length %d is not a multiple of %d", ErrBadRequest, r.DataLen, SectorSize)
	}
	return r, nil
}

// CheckRange verifies that the request's sectors lie inside a disk of
// capacity sectors.
func (r *Request) CheckRange(capacity uint64) error {
	n := r.DataLen / SectorSize
	if r.Sector > capacity || n > capacity-r.Sector {
		return fmt.Errorf("%w: sectors %d+%d beyond the capacity of %d", ErrBadRequest, r.Sector, n, capacity)
	}
	return nil
}

func lastByte(bufs []queue.Buffer) []byte {
	for i := len(bufs) - 1; i >= 0; i-- {
		if b := bufs[i].Data; len(b) > 0 {
			return b[len(b)-1:]
		}
	}
	return nil // unreachable for a non-empty total length
}

// span returns the n bytes of bufs starting skip bytes in, as sub-slices.
func span(bufs []queue.Buffer, skip, n uint64) ([][]byte, uint64) {
	var out [][]byte
	total := uint64(0)
	for _, b := range bufs {
		d := b.Data
		if skip >= uint64(len(d)) {
			skip -= uint64(len(d))
			continue
		}
		d, skip = d[skip:], 0
		if left := n - total; uint64(len(d)) > left {
			d = d[:left]
		}
		if len(d) > 0 {
			out = append(out, d)
			total += uint64(len(d))
		}
		if total == n {
			break
		}
	}
	return out, total
}
