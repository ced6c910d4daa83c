package ringidx

import (
	"sync"
	"testing"
)

func TestLoadStore(t *testing.T) {
	b := bytesOfWords(4)
	for _, tc := range []struct {
		off int
		ok  bool
	}{
		{0, true}, {2, true}, {4, true}, {14, true},
		{1, false}, {15, false}, {16, false}, {-2, false},
	} {
		if ok := Store(b, tc.off, 0xbeef); ok != tc.ok {
			t.Errorf("Store(b, %d) = %v, want %v", tc.off, ok, tc.ok)
			continue
		}
		got, ok := Load(b, tc.off)
		if ok != tc.ok {
			t.Errorf("Load(b, %d) ok = %v, want %v", tc.off, ok, tc.ok)
		}
		if tc.ok && got != 0xbeef {
			t.Errorf("Load(b, %d) = %#x, want 0xbeef", tc.off, got)
		}
		if tc.ok && (b[tc.off] != 0xef || b[tc.off+1] != 0xbe) {
			t.Errorf("bytes at %d = % x, want little-endian ef be", tc.off, b[tc.off:tc.off+2])
		}
	}
}

// A field whose aligned word reaches past the slice is refused, never read.
func TestWordOutsideSlice(t *testing.T) {
	b := bytesOfWords(2)
	if _, ok := Load(b[2:4], 0); ok {
		t.Error("Load of a field whose word starts before the slice succeeded")
	}
	if _, ok := Load(b[:6], 4); ok {
		t.Error("Load of a field whose word ends after the slice succeeded")
	}
}

// Store must leave the other half of the word alone even while another
// goroutine keeps changing it.
func TestStorePreservesOtherHalf(t *testing.T) {
	b := bytesOfWords(1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 10000 {
			Store(b, 0, uint16(i))
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 10000 {
			Store(b, 2, uint16(i))
		}
	}()
	wg.Wait()
	lo, _ := Load(b, 0)
	hi, _ := Load(b, 2)
	if lo != 9999 || hi != 9999 {
		t.Fatalf("after concurrent stores: halves = %d, %d, want 9999, 9999", lo, hi)
	}
}

func TestAligned(t *testing.T) {
	b := bytesOfWords(2)
	if !Aligned(b) || Aligned(b[1:]) || Aligned(b[2:]) || !Aligned(b[4:]) || !Aligned(nil) {
		t.Error("Aligned gave a wrong answer")
	}
}

// bytesOfWords returns n*4 zero bytes starting at a 4-byte aligned address.
func bytesOfWords(n int) []byte {
	b := make([]byte, n*4+4)
	for off := 0; ; off++ {
		if Aligned(b[off:]) {
			return b[off : off+n*4]
		}
	}
}
