package containers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// importLegacy moves the per-container JSON records of earlier versions
// (<root>/<id>/container.json) into the database, in one transaction, and
// renames each imported file to container.json.imported so that it is
// imported once. A record whose name is taken meanwhile keeps its ID and
// gets a generated name; an unreadable file is left where it is. Processes
// that open the store at once may all import: the database transaction
// keeps each record single, and the renames tolerate one another.
func (s *Store) importLegacy() error {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("container store: %w", err)
	}
	var found []*Container
	var files []string
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		path := filepath.Join(s.root, e.Name(), legacyRecord)
		b, err := os.ReadFile(path)
		if err != nil {
			continue // no legacy record: a current container, or a half-made one
		}
		var c Container
		if err := json.Unmarshal(b, &c); err != nil || c.ID != e.Name() {
			continue
		}
		found = append(found, &c)
		files = append(files, path)
	}
	if len(found) == 0 {
		return nil
	}
	err = s.update(func(recs, names *bolt.Bucket) error {
		for i, c := range found {
			if recs.Get([]byte(c.ID)) != nil {
				continue // imported by a process that died before the rename
			}
			if _, err := os.Stat(files[i]); err != nil {
				// Imported and renamed by another process since the
				// directory was read (the record may since have been
				// removed): not to be brought back.
				continue
			}
			taken := func(n string) bool { return names.Get([]byte(n)) != nil }
			if c.Name == "" || taken(c.Name) {
				c.Name = generateName(c.ID, taken)
			}
			if err := names.Put([]byte(c.Name), []byte(c.ID)); err != nil {
				return err
			}
			if err := putRecord(recs, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("container store: import records of an earlier version: %w", err)
	}
	for _, f := range files {
		// Several processes may import at once; one rename wins.
		if err := os.Rename(f, f+".imported"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("container store: %w", err)
		}
	}
	return nil
}
