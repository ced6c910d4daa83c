package memory

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestGuestAccess(t *testing.T) {
	g, err := NewGuest([]Range{{GPA: 0x100000, Size: 0x2000}, {GPA: 0, Size: 0x1000}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Size() != 0x3000 {
		t.Errorf("Size() = %#x, want 0x3000", g.Size())
	}
	if r := g.Regions(); len(r) != 2 || r[0].GPA != 0 || r[1].GPA != 0x100000 {
		t.Errorf("Regions() not sorted: %+v", r)
	}
	tests := []struct {
		name string
		gpa  uint64
		n    uint64
		ok   bool
	}{
		{"start of low region", 0, 16, true},
		{"end of low region", 0xff8, 8, true},
		{"straddles low end", 0xffc, 8, false},
		{"in the gap", 0x2000, 1, false},
		{"whole high region", 0x100000, 0x2000, true},
		{"one past high region", 0x100000, 0x2001, false},
		{"huge length wraps", 0x100000, ^uint64(0), false},
		{"address near max", ^uint64(0) - 3, 4, false},
		{"zero length inside", 0x10, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := g.Slice(tt.gpa, tt.n)
			if tt.ok != (err == nil) {
				t.Fatalf("Slice(%#x, %#x) error = %v, want ok %v", tt.gpa, tt.n, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrOutOfRange) {
				t.Errorf("error %v is not ErrOutOfRange", err)
			}
			if err == nil && uint64(len(b)) != tt.n {
				t.Errorf("len = %d, want %d", len(b), tt.n)
			}
		})
	}
	if err := g.WriteUint32(0x100ffc, 0xdeadbeef); err != nil {
		t.Fatal(err)
	}
	if v, err := g.ReadUint16(0x100ffe); err != nil || v != 0xdead {
		t.Errorf("ReadUint16 = %#x, %v; want 0xdead (little-endian)", v, err)
	}
	if err := g.WriteUint64(0x101ff9, 1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("WriteUint64 straddling the end = %v, want ErrOutOfRange", err)
	}
	if err := g.WriteAt([]byte("hello"), 0x10); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if err := g.ReadAt(p, 0x10); err != nil || string(p) != "hello" {
		t.Errorf("ReadAt = %q, %v", p, err)
	}
	if v, err := g.ReadUint64(0x10); err != nil || v != 0x6f6c6c6568 {
		t.Errorf("ReadUint64 = %#x, %v", v, err)
	}
}

func TestNewGuestRejects(t *testing.T) {
	for _, rs := range [][]Range{
		{{GPA: 0, Size: 0}},
		{{GPA: 0x10, Size: 0x1000}},
		{{GPA: 0, Size: 0x1001}},
		{{GPA: 0, Size: 0x2000}, {GPA: 0x1000, Size: 0x1000}},
	} {
		if g, err := NewGuest(rs); err == nil {
			g.Close()
			t.Errorf("NewGuest(%+v) succeeded", rs)
		}
	}
}

func FuzzSlice(f *testing.F) {
	f.Add(uint64(0), uint64(1))
	f.Add(uint64(0xfff), uint64(2))
	f.Fuzz(func(t *testing.T, gpa, n uint64) {
		g, err := FromRegions([]Region{{GPA: 0x1000, Host: make([]byte, 0x1000)}, {GPA: 0x4000, Host: make([]byte, 0x100)}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := g.Slice(gpa, n)
		if err == nil && (uint64(len(b)) != n || gpa < 0x1000 || gpa+n > 0x4100) {
			t.Errorf("Slice(%#x, %#x) returned %d bytes", gpa, n, len(b))
		}
	})
}

// Guest RAM starts on a huge-page boundary, is advised for transparent huge
// pages, is mapped exactly (the alignment slack is unmapped), and is gone
// from the address space after Close.
func TestNewGuestHugePages(t *testing.T) {
	g, err := NewGuest([]Range{{GPA: 0, Size: 6 << 20}, {GPA: 1 << 32, Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	_, thp := os.Stat("/sys/kernel/mm/transparent_hugepage")
	var starts []uintptr
	for _, r := range g.regions {
		start := uintptr(unsafe.Pointer(unsafe.SliceData(r.Host)))
		if start%hugePage != 0 {
			t.Errorf("region at GPA %#x mapped at %#x: not 2 MiB aligned", r.GPA, start)
		}
		m, ok := mappingAt(t, start)
		if !ok {
			t.Fatalf("no mapping at %#x in /proc/self/smaps", start)
		}
		if thp == nil && !slices.Contains(m.flags, "hg") {
			t.Errorf("mapping at %#x has VmFlags %v, want hg (MADV_HUGEPAGE)", start, m.flags)
		}
		// Other mappings may be adjacent, but not merged: the advice
		// sets this one apart.
		if thp == nil && (m.start != start || m.end != start+uintptr(len(r.Host))) {
			t.Errorf("region at GPA %#x is mapping %#x-%#x, want exactly %#x-%#x", r.GPA, m.start, m.end, start, start+uintptr(len(r.Host)))
		}
		starts = append(starts, start)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range starts {
		if m, ok := mappingAt(t, s); ok && slices.Contains(m.flags, "hg") {
			t.Errorf("mapping at %#x still there after Close", s)
		}
	}
}

type mapping struct {
	start, end uintptr
	flags      []string
}

// mappingAt returns the mapping of this process that contains addr.
func mappingAt(t *testing.T, addr uintptr) (mapping, bool) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var m mapping
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if span, _, _ := strings.Cut(line, " "); strings.Contains(span, "-") && !strings.HasSuffix(span, ":") {
			lo, hi, _ := strings.Cut(span, "-")
			s, _ := strconv.ParseUint(lo, 16, 64)
			e, _ := strconv.ParseUint(hi, 16, 64)
			in = uint64(addr) >= s && uint64(addr) < e
			m = mapping{start: uintptr(s), end: uintptr(e)}
			continue
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && in {
			m.flags = strings.Fields(rest)
			return m, true
		}
	}
	return mapping{}, false
}

// mapHuge leaves nothing of its alignment slack mapped after the mapping:
// that slack is at least a page, so the page just after the mapping is
// free. (The page just before may be another mapping's when the kernel
// happened to place the span on a 2 MiB boundary: it is not checked.)
func TestMapHugeTrims(t *testing.T) {
	free := func(addr uintptr) bool {
		p, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, 4096, unix.PROT_NONE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
		if errno != 0 {
			return false
		}
		unix.Syscall(unix.SYS_MUNMAP, p, 4096, 0)
		return p == addr
	}
	for i := range 8 {
		size := uint64(4<<20 + i*4096*3)
		size -= size % 4096
		b, err := mapHuge(size)
		if err != nil {
			t.Fatal(err)
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		end := start + uintptr(size)
		if !free(end) {
			t.Errorf("size %#x: the page after the mapping (%#x) is mapped: slack left behind", size, end)
		}
		if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(size)); err != nil {
			t.Fatal(err)
		}
	}
}
