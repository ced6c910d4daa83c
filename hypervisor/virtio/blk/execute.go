package blk

import (
	"fmt"
	"io"

	"github.com/vmctl/vmctl/hypervisor/virtio"
)

// execute runs a parsed request against the backing file and writes its
// status. It returns the used length: every byte written into the guest's
// writable buffers, status included.
func (d *Device) execute(r *Request) uint32 {
	status, written := d.run(r)
	r.Status[0] = status
	return written + 1
}

func (d *Device) run(r *Request) (status byte, written uint32) {
	switch r.Type {
	case TypeIn:
		if err := r.CheckRange(d.capacity); err != nil {
			return d.fail(r, err), 0
		}
		off := int64(r.Sector * SectorSize)
		for _, b := range r.Data {
			n, err := d.file.ReadAt(b, off)
			if err == io.EOF {
				// The file shrank under us: what it no longer has reads
				// as zeros rather than stale guest memory.
				clear(b[n:])
				err = nil
			}
			if err != nil {
				return d.fail(r, err), 0
			}
			off += int64(len(b))
		}
		return StatusOK, uint32(r.DataLen)
	case TypeOut:
		if d.readOnly {
			return d.fail(r, fmt.Errorf("write to a read-only disk")), 0
		}
		if err := r.CheckRange(d.capacity); err != nil {
			return d.fail(r, err), 0
		}
		off := int64(r.Sector * SectorSize)
		for _, b := range r.Data {
			if _, err := d.file.WriteAt(b, off); err != nil {
				return d.fail(r, err), 0
			}
			off += int64(len(b))
		}
		return StatusOK, 0
	case TypeFlush:
		if d.readOnly {
			return StatusOK, 0 // nothing was written
		}
		if err := d.file.Sync(); err != nil {
			return d.fail(r, err), 0
		}
		return StatusOK, 0
	case TypeGetID:
		var id [IDBytes]byte
		copy(id[:], d.serial)
		w := 0
		for _, b := range r.Data {
			w += copy(b, id[w:])
		}
		return StatusOK, uint32(w)
	}
	return StatusUnsupp, 0
}

func (d *Device) fail(r *Request, err error) byte {
	// Mostly guest-caused (ranges, read-only), so rate-limited.
	virtio.LogGuestError("virtio-blk: request failed", "type", r.Type, "sector", r.Sector, "bytes", r.DataLen, "err", err)
	return StatusIOErr
}
