package containers

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestSweepOrphans(t *testing.T) {
	root := filepath.Join(t.TempDir(), "containers")
	s, err := OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	kept := &Container{ID: NewID(), Name: "kept"}
	if err := s.Create(kept); err != nil {
		t.Fatal(err)
	}
	old, fresh := NewID(), NewID()
	for _, id := range []string{old, fresh} {
		if err := os.MkdirAll(filepath.Join(root, id), 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, id, "rw.ext4"), []byte("disk"), 0o600)
	}
	// Other entries of the root are none of the sweep's business.
	os.Mkdir(filepath.Join(root, "not-a-container"), 0o700)
	past := time.Now().Add(-time.Hour)
	for _, p := range []string{filepath.Join(root, old), filepath.Join(root, kept.ID), filepath.Join(root, "not-a-container")} {
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.SweepOrphans(10 * time.Minute)
	if err != nil || !slices.Equal(removed, []string{old}) {
		t.Fatalf("SweepOrphans = %v, %v; want only the old orphan %s", removed, err, old[:12])
	}
	for _, p := range []string{kept.ID, fresh, "not-a-container"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s was swept: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, old)); !os.IsNotExist(err) {
		t.Errorf("the old orphan is still there: %v", err)
	}
}
