package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// A template's RAM is a memfd (sandbox.Config.Memory): the template VM
// writes it, the store seals it (no write, no resize, no more seals) and
// every VM restored from the template maps it copy-on-write. The sealed
// memfd lives as long as the process that made or loaded it (a daemon:
// for good); the store also keeps its non-zero pages in <shape>/memory, a
// sparse file, with their CRC in meta.json, for the next process.

// pageSize is the unit of the memory file's CRC and sparseness.
const pageSize = 4096

// memorySeals make a template's memory immutable: no write through any
// descriptor or shared mapping, no resize, no seal ever removed.
const memorySeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL

// newMemory returns an empty memfd of size bytes that can be sealed.
func newMemory(name string, size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd: %w", err)
	}
	return f, nil
}

// seal makes f immutable. It fails while a writable shared mapping of f
// exists (a template VM still running).
func seal(f *os.File) error {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, memorySeals); err != nil {
		return fmt.Errorf("seal the template's memory: %w", err)
	}
	return nil
}

// sealed says whether f carries every seal.
func sealed(f *os.File) bool {
	s, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	return err == nil && s&memorySeals == memorySeals
}

// copyPages copies the non-zero pages of src's first size bytes to the
// same offsets of dst and returns the CRC-32C of their (page index, page)
// pairs and how many bytes that was. Holes (SEEK_DATA/SEEK_HOLE) are not
// read, and zero pages are skipped, so the result is the same whatever the
// two files' layouts.
func copyPages(dst io.WriterAt, src *os.File, size int64) (crc uint32, copied int64, err error) {
	h := crc32.New(castagnoli)
	buf := make([]byte, 1<<20)
	zero := make([]byte, pageSize)
	var idx [8]byte
	fd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return 0, 0, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return 0, 0, fmt.Errorf("seek hole: %w", err)
		}
		hole = min(hole, size)
		for pos := data &^ (pageSize - 1); pos < hole; {
			n := min(int64(len(buf)), hole-pos)
			n = (n + pageSize - 1) &^ (pageSize - 1)
			got, err := src.ReadAt(buf[:n], pos)
			if err != nil && err != io.EOF {
				return 0, 0, err
			}
			// Runs of non-zero pages go out in one write each.
			run := -1 // start of the current run in buf, or -1
			flush := func(end int) error {
				if run < 0 {
					return nil
				}
				_, err := dst.WriteAt(buf[run:end], pos+int64(run))
				copied += int64(end - run)
				run = -1
				return err
			}
			for p := 0; p < got; p += pageSize {
				page := buf[p:min(p+pageSize, got)]
				if bytes.Equal(page, zero[:len(page)]) {
					if err := flush(p); err != nil {
						return 0, 0, err
					}
					continue
				}
				binary.LittleEndian.PutUint64(idx[:], uint64(pos+int64(p))/pageSize)
				h.Write(idx[:])
				h.Write(page)
				if run < 0 {
					run = p
				}
			}
			if err := flush(got); err != nil {
				return 0, 0, err
			}
			if got == 0 {
				break
			}
			pos += int64(got)
		}
		off = hole
	}
	return h.Sum32(), copied, nil
}

// saveMemory writes mem's non-zero pages to path (a sparse file of mem's
// size) and returns their CRC and size.
func saveMemory(path string, mem *os.File, size int64) (uint32, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, 0, err
	}
	crc, n, err := copyPages(f, mem, size)
	if err != nil {
		return 0, 0, fmt.Errorf("save the template's memory: %w", err)
	}
	return crc, n, f.Sync()
}

// loadMemory makes a sealed memfd of the memory file at path, checking its
// size and CRC against meta's.
func loadMemory(path, name string, meta Meta) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := int64(meta.MemoryMiB) << 20
	if st, err := f.Stat(); err != nil || st.Size() != size {
		return nil, errDamaged
	}
	mem, err := newMemory(name, size)
	if err != nil {
		return nil, err
	}
	crc, n, err := copyPages(mem, f, size)
	if err == nil && (crc != meta.MemoryCRC32C || n != meta.MemoryBytes) {
		err = errDamaged
	}
	if err == nil {
		err = seal(mem)
	}
	if err != nil {
		mem.Close()
		return nil, err
	}
	return mem, nil
}
