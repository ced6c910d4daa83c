package memory

import (
	"encoding/binary"
	"fmt"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is one contiguous range of guest RAM and its host mapping.
type Region struct {
	// GPA is the guest physical address of the first byte.
	GPA uint64
	// Host is the host mapping; len(Host) is the region's size.
	Host []byte
}

// End is the first guest physical address after the region.
func (r Region) End() uint64 { return r.GPA + uint64(len(r.Host)) }

// Range is a guest physical range to back with RAM.
type Range struct {
	GPA  uint64
	Size uint64
}

// Guest is guest RAM made of anonymous host mappings, one per range. It
// implements Memory.
type Guest struct {
	regions []Region // sorted by GPA, non-overlapping
	owned   bool     // the mappings were made by NewGuest and are unmapped by Close
}

var _ Memory = (*Guest)(nil)

// NewGuest maps anonymous, zero-filled host memory for each range. Sizes
// and addresses must be page-aligned and ranges must not overlap. Pages are
// reserved lazily (MAP_NORESERVE): the guest's untouched RAM costs nothing.
// Each mapping starts on a huge-page boundary and asks for transparent huge
// pages (MADV_HUGEPAGE, as QEMU does for guest RAM): a guest's first touch
// of 2 MiB is then one host fault and one nested page fault instead of 512,
// and KVM maps it with a single large page. Where the host's THP setting is
// "never" the advice does nothing.
func NewGuest(ranges []Range) (*Guest, error) {
	page := uint64(unix.Getpagesize())
	g := &Guest{owned: true}
	for _, r := range ranges {
		if r.Size == 0 || r.Size%page != 0 || r.GPA%page != 0 {
			g.Close()
			return nil, fmt.Errorf("guest RAM at %#x size %#x: not page-aligned and non-empty", r.GPA, r.Size)
		}
		if r.GPA+r.Size < r.GPA {
			g.Close()
			return nil, fmt.Errorf("guest RAM at %#x size %#x wraps the address space", r.GPA, r.Size)
		}
		host, err := mapHuge(r.Size)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("map %d MiB of guest RAM at %#x: %w", r.Size>>20, r.GPA, err)
		}
		g.regions = append(g.regions, Region{GPA: r.GPA, Host: host})
	}
	if err := g.sortAndCheck(); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// hugePage is the size of an x86-64 transparent huge page (a PMD).
const hugePage = 2 << 20

// mapHuge maps size bytes of anonymous memory at a hugePage-aligned
// address, advised for transparent huge pages.
func mapHuge(size uint64) ([]byte, error) {
	span := uintptr(size) + hugePage
	p, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	head := (hugePage - uintptr(p)%hugePage) % hugePage
	start := unsafe.Add(p, head)
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			unix.MunmapPtr(p, span)
			return nil, err
		}
	}
	if tail := span - head - uintptr(size); tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(start, size), tail); err != nil {
			unix.MunmapPtr(start, uintptr(size)+tail)
			return nil, err
		}
	}
	// EINVAL means a kernel without THP: the mapping works as it is.
	_ = unix.Madvise(unsafe.Slice((*byte)(start), size), unix.MADV_HUGEPAGE)
	return unsafe.Slice((*byte)(start), size), nil
}

// FromRegions wraps host buffers the caller owns (tests, or memory mapped
// elsewhere). Close does not unmap them.
func FromRegions(regions []Region) (*Guest, error) {
	g := &Guest{regions: append([]Region(nil), regions...)}
	return g, g.sortAndCheck()
}

func (g *Guest) sortAndCheck() error {
	sort.Slice(g.regions, func(i, j int) bool { return g.regions[i].GPA < g.regions[j].GPA })
	for i, r := range g.regions {
		if len(r.Host) == 0 || r.End() < r.GPA {
			return fmt.Errorf("guest RAM region at %#x is empty or wraps", r.GPA)
		}
		if i > 0 && g.regions[i-1].End() > r.GPA {
			return fmt.Errorf("guest RAM regions at %#x and %#x overlap", g.regions[i-1].GPA, r.GPA)
		}
	}
	return nil
}

// Regions returns the regions in GPA order, for registration as KVM memory
// slots. The slices alias guest RAM.
func (g *Guest) Regions() []Region { return append([]Region(nil), g.regions...) }

// Size is the total RAM in bytes.
func (g *Guest) Size() uint64 {
	var n uint64
	for _, r := range g.regions {
		n += uint64(len(r.Host))
	}
	return n
}

// Close unmaps memory made by NewGuest. Preconditions: the VM no longer
// runs and no device holds a Slice.
func (g *Guest) Close() error {
	var first error
	if g.owned {
		for _, r := range g.regions {
			if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(r.Host)), uintptr(len(r.Host))); err != nil && first == nil {
				first = fmt.Errorf("unmap guest RAM at %#x: %w", r.GPA, err)
			}
		}
	}
	g.regions = nil
	return first
}

// Slice returns the host view of [gpa, gpa+n). The whole range must lie in
// one region; n may be 0 only at an address inside a region.
func (g *Guest) Slice(gpa, n uint64) ([]byte, error) {
	// Regions are few (two on x86: below and above the PCI hole), so a
	// linear scan beats a search.
	for _, r := range g.regions {
		if gpa < r.GPA || gpa >= r.End() {
			continue
		}
		off := gpa - r.GPA
		if n > uint64(len(r.Host))-off {
			break
		}
		return r.Host[off : off+n : off+n], nil
	}
	return nil, fmt.Errorf("%w: %#x bytes at %#x", ErrOutOfRange, n, gpa)
}

// ReadAt copies len(p) bytes at gpa into p.
func (g *Guest) ReadAt(p []byte, gpa uint64) error {
	b, err := g.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, b)
	return nil
}

// WriteAt copies p into guest memory at gpa.
func (g *Guest) WriteAt(p []byte, gpa uint64) error {
	b, err := g.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(b, p)
	return nil
}

func (g *Guest) ReadUint16(gpa uint64) (uint16, error) {
	b, err := g.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (g *Guest) ReadUint32(gpa uint64) (uint32, error) {
	b, err := g.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (g *Guest) ReadUint64(gpa uint64) (uint64, error) {
	b, err := g.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (g *Guest) WriteUint16(gpa uint64, v uint16) error {
	b, err := g.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(b, v)
	return nil
}

func (g *Guest) WriteUint32(gpa uint64, v uint32) error {
	b, err := g.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b, v)
	return nil
}

func (g *Guest) WriteUint64(gpa uint64, v uint64) error {
	b, err := g.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(b, v)
	return nil
}
