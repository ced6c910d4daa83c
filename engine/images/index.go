package images

// The index (index.json): read by anyone, replaced atomically under the
// store lock.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/internal/atomicfile"
)

func (s *Store) readIndex() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(s.indexPath())
	if err != nil {
		return nil, fmt.Errorf("reading image index: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing image index %s: %w", s.indexPath(), err)
	}
	return idx, nil
}

// writeIndex replaces index.json atomically. Precondition: the store lock
// is held (or the store is being created).
func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	if idx.Manifests == nil {
		idx.Manifests = []v1.Descriptor{}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.indexPath(), b, 0o644)
}

// update runs fn on the current index under the store lock and writes the
// result if fn succeeds.
func (s *Store) update(ctx context.Context, fn func(idx *v1.IndexManifest) error) error {
	l, err := flock.Acquire(ctx, s.lockPath())
	if err != nil {
		return err
	}
	defer l.Release()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := fn(idx); err != nil {
		return err
	}
	return s.writeIndex(idx)
}
