package snapshot

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// BenchmarkLoadMemory loads a saved guest's RAM as an in-process run does
// (the daemon keeps it): 256 MiB with ~40 MiB of non-zero pages in runs,
// roughly a booted guest's.
func BenchmarkLoadMemory(b *testing.B) {
	const size = 256 << 20
	src, err := newMemory("bench-src", size)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	r := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, pageSize)
	for written := 0; written < 40<<20; {
		at := r.IntN(size/pageSize-64) * pageSize
		n := 1 + r.IntN(32)
		for i := range n {
			for j := range page {
				page[j] = byte(r.Uint32() | 1)
			}
			if _, err := src.WriteAt(page, int64(at+i*pageSize)); err != nil {
				b.Fatal(err)
			}
		}
		written += n * pageSize
	}
	path := filepath.Join(b.TempDir(), "memory")
	crc, n, err := saveMemory(path, src, size)
	if err != nil {
		b.Fatal(err)
	}
	meta := Meta{MemoryMiB: size >> 20, MemoryBytes: n, MemoryCRC32C: crc}
	b.SetBytes(n)
	b.ResetTimer()
	for range b.N {
		mem, err := loadMemory(path, "bench", meta)
		if err != nil {
			b.Fatal(err)
		}
		mem.Close()
	}
}
