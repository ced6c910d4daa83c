package memory

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// RAM saved to a file maps back with the same contents, copy-on-write:
// a write through one mapping changes neither the file nor another VM's
// view, and the file's zero pages are holes.
func TestSaveToAndMapBack(t *testing.T) {
	page := uint64(unix.Getpagesize())
	ranges := []Range{{GPA: 0, Size: 16 * page}, {GPA: 64 * page, Size: 8 * page}}
	g, err := NewGuest(ranges)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.WriteAt([]byte("first"), 3*page+10); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteAt([]byte("second"), 64*page+5*page); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mem")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	written, err := g.SaveTo(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if written != int64(2*page) {
		t.Errorf("SaveTo wrote %d bytes, want the 2 pages in use (%d)", written, 2*page)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(24*page) {
		t.Errorf("file size %d, want %d", st.Size, 24*page)
	}
	if blocks := uint64(st.Blocks) * 512; blocks > 4*page {
		t.Errorf("file uses %d bytes of disk, want its 3 written pages at most (zero pages are holes)", blocks)
	}

	open := func() *Guest {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		g, err := NewGuestFromFile(ranges, f, false)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	a, b := open(), open()
	defer a.Close()
	defer b.Close()
	read := func(g *Guest, gpa uint64, n int) string {
		p := make([]byte, n)
		if err := g.ReadAt(p, gpa); err != nil {
			t.Fatal(err)
		}
		return string(p)
	}
	if got := read(a, 3*page+10, 5); got != "first" {
		t.Fatalf("mapped RAM reads %q at the first write, want first", got)
	}
	if got := read(a, 69*page, 6); got != "second" {
		t.Fatalf("mapped RAM reads %q in the second region, want second", got)
	}
	if err := a.WriteAt([]byte("FIRST"), 3*page+10); err != nil {
		t.Fatal(err)
	}
	if got := read(b, 3*page+10, 5); got != "first" {
		t.Fatalf("a write through one mapping shows in another: %q", got)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data[3*page+10:3*page+15]) != "first" {
		t.Fatal("a write through a mapping reached the file")
	}

	// Shared, a write reaches the file.
	rw, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := NewGuestFromFile(ranges, rw, true)
	rw.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.WriteAt([]byte("SHARE"), 3*page+10); err != nil {
		t.Fatal(err)
	}
	sh.Close()
	if data, _ := os.ReadFile(path); string(data[3*page+10:3*page+15]) != "SHARE" {
		t.Fatal("a write through a shared mapping did not reach the file")
	}

	short, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	if _, err := NewGuestFromFile(append(ranges, Range{GPA: 128 * page, Size: page}), short, false); err == nil {
		t.Fatal("a file smaller than the RAM was mapped")
	}
}
