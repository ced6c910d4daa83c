package images

import (
	"bytes"
	"context"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load. Whatever the input, Load must
// not panic, and when it fails the store must be exactly as it was.
// Seeds in testdata/fuzz/FuzzLoad are small docker, OCI and legacy archives.
// Each run fsyncs, so keep minimisation short:
//
//	go test -run '^$' -fuzz FuzzLoad -fuzzminimizetime 2s ./engine/images
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		s := openStore(t)
		before := snapshot(t, s)
		imgs, err := s.Load(context.Background(), bytes.NewReader(data))
		if err != nil {
			if after := snapshot(t, s); !mapsEqual(before, after) {
				t.Fatalf("failed Load (%v) changed the store", err)
			}
			return
		}
		list, err := s.List(context.Background())
		if err != nil {
			t.Fatalf("List after a successful Load: %v", err)
		}
		if len(list) < len(imgs) {
			t.Fatalf("Load returned %d images, List shows %d", len(imgs), len(list))
		}
	})
}
