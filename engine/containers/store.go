package containers

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmctl/vmctl/engine/boltfile"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/vmctl/vmctl/engine/errs"
)

// Store keeps container records in a bbolt database and one directory of
// files per container:
//
//	<root>/meta.db        records: v1/containers/<id> -> JSON, v1/names/<name> -> id
//	<root>/meta.db.lock   serialises the processes that open meta.db
//	<root>/<id>/...       files the engine keeps with the container
//	                      (writable disk, console log, output log)
//
// Every mutation is one bbolt transaction, so a record and its name entry
// change together, names are unique across processes, and a committed
// change survives a crash (bbolt fsyncs each commit).
//
// The database is opened per operation, not for the life of the Store:
// bbolt holds an flock on the file while it is open, and several processes
// share one data root (a long `vmctl run` in one terminal, `vmctl ps` in
// another, or vmctld). Opening costs well under a millisecond on a warm
// cache; a write adds bbolt's two fsyncs.
type Store struct {
	root string
	db   string // and its flock(2) queue, db + ".lock"

	// mu keeps this process's goroutines from queueing in flock(2) one
	// thread each; the flock then only orders processes.
	mu sync.RWMutex
}

var (
	bucketV1         = []byte("v1")
	bucketContainers = []byte("containers")
	bucketNames      = []byte("names")
)

// legacyRecord is the per-container JSON file of earlier versions.
const legacyRecord = "container.json"

// OpenStore opens (creating if needed) a container store, importing the
// JSON records of earlier versions once.
func OpenStore(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("container store: %w", err)
	}
	s := &Store{root: root, db: filepath.Join(root, "meta.db")}
	if err := s.update(func(*bolt.Bucket, *bolt.Bucket) error { return nil }); err != nil {
		return nil, err
	}
	if err := s.importLegacy(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the directory that holds the container's files.
func (s *Store) Dir(id string) string { return filepath.Join(s.root, id) }

// update runs fn in one read-write transaction on the v1 buckets.
func (s *Store) update(fn func(recs, names *bolt.Bucket) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			v1, err := tx.CreateBucketIfNotExists(bucketV1)
			if err != nil {
				return err
			}
			recs, err := v1.CreateBucketIfNotExists(bucketContainers)
			if err != nil {
				return err
			}
			names, err := v1.CreateBucketIfNotExists(bucketNames)
			if err != nil {
				return err
			}
			return fn(recs, names)
		})
	})
}

// view runs fn in one read-only transaction on the v1 buckets.
func (s *Store) view(fn func(recs, names *bolt.Bucket) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			v1 := tx.Bucket(bucketV1)
			if v1 == nil {
				return fmt.Errorf("container store %s: no v1 bucket: the database is not a vmctl store", s.db)
			}
			recs, names := v1.Bucket(bucketContainers), v1.Bucket(bucketNames)
			if recs == nil || names == nil {
				return fmt.Errorf("container store %s: incomplete v1 bucket", s.db)
			}
			return fn(recs, names)
		})
	})
}

// withDB opens the database for one operation (boltfile.Use).
func (s *Store) withDB(readOnly bool, fn func(*bolt.DB) error) error {
	return boltfile.Use(s.db, "container store", readOnly, fn)
}

// NewID returns a random 64-hex-digit container ID.
func NewID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // impossible on Linux
	}
	return hex.EncodeToString(b[:])
}

func putRecord(recs *bolt.Bucket, c *Container) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return recs.Put([]byte(c.ID), b)
}

// decode copies a record out of a transaction (bbolt's slices are only
// valid inside it; json.Unmarshal copies). A record must carry the ID it
// is stored under: one that claims another would be taken for that
// container (an Update of it would overwrite the other's record), and a
// short one for a valid ID.
func decode(id string, b []byte) (*Container, error) {
	var c Container
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("container %s: corrupt record: %w", id, err)
	}
	if c.ID != id {
		return nil, fmt.Errorf("container %s: corrupt record: it names container %q", id, c.ID)
	}
	return &c, nil
}

func nameConflict(name string, id []byte) error {
	short := string(id)
	if len(short) > 12 {
		short = short[:12]
	}
	return errs.New(errdefs.ErrConflict, "the container name %q is already in use by container %s", name, short)
}

// Create stores a new container and makes its directory. Its name must be
// unique; an empty name is replaced by a generated one.
func (s *Store) Create(c *Container) error {
	if len(c.ID) != 64 || strings.ContainsAny(c.ID, "/.") {
		return errs.New(errdefs.ErrInvalidArgument, "invalid container id %q", c.ID)
	}
	if err := os.Mkdir(s.Dir(c.ID), 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return errs.New(errdefs.ErrAlreadyExists, "container %s already exists", c.ShortID())
		}
		return fmt.Errorf("container %s: %w", c.ShortID(), err)
	}
	err := s.update(func(recs, names *bolt.Bucket) error {
		if recs.Get([]byte(c.ID)) != nil {
			return errs.New(errdefs.ErrAlreadyExists, "container %s already exists", c.ShortID())
		}
		if c.Name == "" {
			c.Name = generateName(c.ID, func(n string) bool { return names.Get([]byte(n)) != nil })
		}
		if id := names.Get([]byte(c.Name)); id != nil {
			return nameConflict(c.Name, id)
		}
		if err := names.Put([]byte(c.Name), []byte(c.ID)); err != nil {
			return err
		}
		return putRecord(recs, c)
	})
	if err != nil {
		os.RemoveAll(s.Dir(c.ID))
		return err
	}
	return nil
}

// Update replaces a stored record. A changed name must still be unique.
func (s *Store) Update(c *Container) error {
	return s.update(func(recs, names *bolt.Bucket) error {
		b := recs.Get([]byte(c.ID))
		if b == nil {
			return errs.New(errdefs.ErrNotFound, "no such container: %s", c.ID)
		}
		old, err := decode(c.ID, b)
		if err != nil {
			return err
		}
		if old.Name != c.Name {
			if id := names.Get([]byte(c.Name)); id != nil {
				return nameConflict(c.Name, id)
			}
			if err := names.Delete([]byte(old.Name)); err != nil {
				return err
			}
			if err := names.Put([]byte(c.Name), []byte(c.ID)); err != nil {
				return err
			}
		}
		return putRecord(recs, c)
	})
}

// Get finds a container by full ID, name ("/name" too) or unique ID prefix.
func (s *Store) Get(ref string) (*Container, error) {
	if ref == "" {
		return nil, errs.New(errdefs.ErrInvalidArgument, "empty container reference")
	}
	var found *Container
	err := s.view(func(recs, names *bolt.Bucket) error {
		id := []byte(ref)
		if recs.Get(id) == nil {
			id = nil
			if byName := names.Get([]byte(strings.TrimPrefix(ref, "/"))); byName != nil {
				id = byName
			} else {
				cur := recs.Cursor()
				for k, _ := cur.Seek([]byte(ref)); k != nil && strings.HasPrefix(string(k), ref); k, _ = cur.Next() {
					if id != nil {
						return errs.New(errdefs.ErrInvalidArgument, "multiple containers match the ID prefix %q", ref)
					}
					id = append([]byte(nil), k...)
				}
			}
		}
		if id == nil {
			return errs.New(errdefs.ErrNotFound, "no such container: %s", ref)
		}
		b := recs.Get(id)
		if b == nil {
			return fmt.Errorf("container store: name %q points at missing record %s", ref, id)
		}
		c, err := decode(string(id), b)
		found = c
		return err
	})
	return found, err
}

// List returns every container, newest first. A record that cannot be
// decoded is skipped rather than failing every listing; Get reports it.
func (s *Store) List() ([]*Container, error) {
	var out []*Container
	err := s.view(func(recs, _ *bolt.Bucket) error {
		return recs.ForEach(func(k, v []byte) error {
			if c, err := decode(string(k), v); err == nil {
				out = append(out, c)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Delete removes the record and every file kept with the container. The
// record goes first: a crash in between leaves a directory that no record
// names, which is harmless, rather than a record without its disk.
func (s *Store) Delete(id string) error {
	if len(id) != 64 || strings.ContainsAny(id, "/.") {
		return errs.New(errdefs.ErrInvalidArgument, "invalid container id %q", id)
	}
	err := s.update(func(recs, names *bolt.Bucket) error {
		b := recs.Get([]byte(id))
		if b == nil {
			return nil
		}
		if c, err := decode(id, b); err == nil {
			if string(names.Get([]byte(c.Name))) == id {
				if err := names.Delete([]byte(c.Name)); err != nil {
					return err
				}
			}
		} else if err := deleteNamesOf(names, id); err != nil {
			// A corrupt record does not say its name: free every name
			// that points at it, or the name stays taken for good.
			return err
		}
		return recs.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("remove container %s: %w", id[:12], err)
	}
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		return fmt.Errorf("remove container %s: %w", id[:12], err)
	}
	return nil
}

// deleteNamesOf removes the name entries that point at id.
func deleteNamesOf(names *bolt.Bucket, id string) error {
	var taken [][]byte
	err := names.ForEach(func(k, v []byte) error {
		if string(v) == id {
			taken = append(taken, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range taken {
		if err := names.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

var adjectives = []string{"brave", "calm", "eager", "fond", "keen", "lucid", "quiet", "swift", "tidy", "vivid"}
var nouns = []string{"lovelace", "turing", "hopper", "ritchie", "thompson", "knuth", "liskov", "hamilton", "shannon", "torvalds"}

// generateName makes a Docker-style adjective_noun name that is not taken.
func generateName(id string, taken func(string) bool) string {
	b, err := hex.DecodeString(id[:8])
	if err != nil {
		b = []byte{0, 0} // an imported record's odd ID still gets a name
	}
	for i := 0; ; i++ {
		name := adjectives[int(b[0]+byte(i))%len(adjectives)] + "_" + nouns[int(b[1]+byte(i/len(adjectives)))%len(nouns)]
		if i >= len(adjectives)*len(nouns) {
			name = fmt.Sprintf("%s%d", name, i)
		}
		if !taken(name) {
			return name
		}
	}
}

// SweepOrphans removes the container directories that no record names and
// that have not changed for grace: what a process that died between making
// a container's directory and committing its record (or between deleting a
// record and its directory) left, possibly with a large writable disk. The
// grace keeps a create in progress in another process safe. It returns the
// IDs of the directories removed.
func (s *Store) SweepOrphans(grace time.Duration) ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("container store: %w", err)
	}
	known := map[string]bool{}
	err = s.view(func(recs, _ *bolt.Bucket) error {
		return recs.ForEach(func(k, _ []byte) error {
			known[string(k)] = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" || known[id] {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < grace {
			continue
		}
		if err := os.RemoveAll(s.Dir(id)); err != nil {
			return removed, fmt.Errorf("container store: remove orphaned %s: %w", id[:12], err)
		}
		removed = append(removed, id)
	}
	return removed, nil
}
