package memory

import (
	"bytes"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NewGuestFromFile maps guest RAM from f, the ranges back to back from
// offset 0 (the layout SaveTo writes). Private, it is copy-on-write: the
// guest reads the file's pages through the page cache, and a page it
// writes becomes its own, so any number of VMs can map one file and share
// its unchanged pages. Shared, the guest's writes go to the file (a memfd
// that is then the saved RAM). f may be closed once this returns.
func NewGuestFromFile(ranges []Range, f *os.File, shared bool) (*Guest, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, r := range ranges {
		total += r.Size
	}
	if uint64(fi.Size()) != total {
		return nil, fmt.Errorf("guest RAM file %s holds %d bytes, the VM has %d", f.Name(), fi.Size(), total)
	}
	page := uint64(unix.Getpagesize())
	g := &Guest{owned: true}
	var off int64
	for _, r := range ranges {
		if r.Size == 0 || r.Size%page != 0 || r.GPA%page != 0 {
			g.Close()
			return nil, fmt.Errorf("guest RAM at %#x size %#x: not page-aligned and non-empty", r.GPA, r.Size)
		}
		flags := unix.MAP_PRIVATE | unix.MAP_NORESERVE
		if shared {
			flags = unix.MAP_SHARED
		}
		// Unmapped by Close with MunmapPtr, as NewGuest's mappings are.
		p, err := unix.MmapPtr(int(f.Fd()), off, nil, uintptr(r.Size), unix.PROT_READ|unix.PROT_WRITE, flags)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("map %d MiB of guest RAM at %#x from %s: %w", r.Size>>20, r.GPA, f.Name(), err)
		}
		g.regions = append(g.regions, Region{GPA: r.GPA, Host: unsafe.Slice((*byte)(p), r.Size)})
		off += int64(r.Size)
	}
	if err := g.sortAndCheck(); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// SaveTo writes guest RAM to f, regions back to back from offset 0 in
// address order, leaving pages of zeros as holes: a file of the RAM's size
// whose blocks are the pages the guest used. f must be empty.
// Preconditions: nothing writes guest RAM meanwhile (the vCPUs are paused
// and the devices stopped). It returns the bytes written.
func (g *Guest) SaveTo(f *os.File) (written int64, err error) {
	page := unix.Getpagesize()
	zero := make([]byte, page)
	var off int64
	for i, r := range g.regions {
		for p := 0; p < len(r.Host); {
			if bytes.Equal(r.Host[p:p+page], zero) {
				p += page
				continue
			}
			end := p + page
			for end < len(r.Host) && !bytes.Equal(r.Host[end:end+page], zero) {
				end += page
			}
			n, err := f.WriteAt(r.Host[p:end], off+int64(p))
			written += int64(n)
			if err != nil {
				return written, fmt.Errorf("write guest RAM at %#x: %w", r.GPA+uint64(p), err)
			}
			p = end
		}
		off += int64(len(r.Host))
		if i == len(g.regions)-1 {
			// The file ends where RAM does, even after a hole. A write,
			// not a truncate, so a confined VMM needs no more calls.
			last := len(r.Host) - page
			if _, err := f.WriteAt(r.Host[last:], off-int64(page)); err != nil {
				return written, fmt.Errorf("write guest RAM's last page: %w", err)
			}
		}
	}
	return written, nil
}
