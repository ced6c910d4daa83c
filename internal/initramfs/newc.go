package initramfs

import (
	"fmt"
	"io"
)

// The archive is encoded here rather than with github.com/cavaliergopher/cpio
// because that writer always leaves rdevmajor/rdevminor at zero, so it cannot
// produce /dev/console (5,1). The tests read the output back with that
// library as an independent parser.

// trailerName marks the end of a newc archive.
const trailerName = "TRAILER!!!"

// newcHeaderLen is the fixed part of a newc header: the magic "070701" and 13
// fields of 8 ASCII hex digits (Linux Documentation/driver-api/
// early-userspace/buffer-format.rst).
const newcHeaderLen = 6 + 13*8

var zeros [4]byte

// pad4 is the number of bytes that bring n to a multiple of 4.
func pad4(n int) int { return (4 - n%4) % 4 }

// writeEntry writes one member: header, NUL-terminated name padded to 4
// bytes, then data padded to 4 bytes. mtime, uid, gid, the archive's own
// device numbers and the checksum are zero, which keeps the output
// deterministic.
func writeEntry(w io.Writer, ino uint32, e entry) error {
	if uint64(len(e.data)) > 0xffffffff {
		return fmt.Errorf("%s is larger than a newc archive can hold (4 GiB)", e.name)
	}
	fields := [13]uint32{
		ino,
		e.mode,
		0, // uid
		0, // gid
		e.nlink,
		0, // mtime
		uint32(len(e.data)),
		0, // devmajor
		0, // devminor
		e.rdevMajor,
		e.rdevMinor,
		uint32(len(e.name) + 1), // namesize, including the NUL
		0,                       // check (only used by the "070702" format)
	}
	hdr := make([]byte, 0, newcHeaderLen+len(e.name)+1+3)
	hdr = append(hdr, "070701"...)
	for _, f := range fields {
		hdr = fmt.Appendf(hdr, "%08X", f)
	}
	hdr = append(hdr, e.name...)
	hdr = append(hdr, 0)
	hdr = append(hdr, zeros[:pad4(len(hdr))]...)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if len(e.data) == 0 {
		return nil
	}
	if _, err := w.Write(e.data); err != nil {
		return err
	}
	_, err := w.Write(zeros[:pad4(len(e.data))])
	return err
}
