package containers

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/errs"
)

// Store keeps one directory per container under root:
//
//	<root>/<id>/container.json   the record, replaced atomically
//	<root>/<id>/...              files the engine keeps with the container
//	                             (writable disk, console log)
//
// Mutations that must see every record (name uniqueness) hold an flock on
// <root>/.lock, so concurrent vmctl processes cannot create the same name.
type Store struct {
	root string
}

// OpenStore opens (creating if needed) a container store.
func OpenStore(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("container store: %w", err)
	}
	return &Store{root: root}, nil
}

// Dir is the directory that holds the container's files.
func (s *Store) Dir(id string) string { return filepath.Join(s.root, id) }

func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container store lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("container store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// NewID returns a random 64-hex-digit container ID.
func NewID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // impossible on Linux
	}
	return hex.EncodeToString(b[:])
}

// Create stores a new container. Its name must be unique; an empty name is
// replaced by a generated one.
func (s *Store) Create(c *Container) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	all, err := s.list()
	if err != nil {
		return err
	}
	if c.Name == "" {
		c.Name = generateName(c.ID, all)
	}
	for _, o := range all {
		if o.Name == c.Name {
			return errs.New(errdefs.ErrConflict, "the container name %q is already in use by container %s", c.Name, o.ShortID())
		}
	}
	if err := os.Mkdir(s.Dir(c.ID), 0o700); err != nil {
		return fmt.Errorf("container %s: %w", c.ShortID(), err)
	}
	if err := s.write(c); err != nil {
		os.RemoveAll(s.Dir(c.ID))
		return err
	}
	return nil
}

// Update replaces a stored record.
func (s *Store) Update(c *Container) error {
	if _, err := os.Stat(s.Dir(c.ID)); err != nil {
		return errs.New(errdefs.ErrNotFound, "no such container: %s", c.ID)
	}
	return s.write(c)
}

func (s *Store) write(c *Container) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir(c.ID), ".container.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("container %s: %w", c.ShortID(), err)
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir(c.ID), "container.json")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("container %s: %w", c.ShortID(), err)
	}
	return nil
}

func (s *Store) read(id string) (*Container, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir(id), "container.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errs.New(errdefs.ErrNotFound, "no such container: %s", id)
		}
		return nil, err
	}
	var c Container
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("container %s: corrupt record: %w", id, err)
	}
	return &c, nil
}

// Get finds a container by full ID, unique ID prefix or name.
func (s *Store) Get(ref string) (*Container, error) {
	if ref == "" {
		return nil, errs.New(errdefs.ErrInvalidArgument, "empty container reference")
	}
	all, err := s.list()
	if err != nil {
		return nil, err
	}
	var match *Container
	for _, c := range all {
		if c.ID == ref || c.Name == ref || strings.TrimPrefix(ref, "/") == c.Name {
			return c, nil
		}
		if strings.HasPrefix(c.ID, ref) {
			if match != nil {
				return nil, errs.New(errdefs.ErrInvalidArgument, "multiple containers match the ID prefix %q", ref)
			}
			match = c
		}
	}
	if match == nil {
		return nil, errs.New(errdefs.ErrNotFound, "no such container: %s", ref)
	}
	return match, nil
}

// List returns every container, newest first.
func (s *Store) List() ([]*Container, error) { return s.list() }

func (s *Store) list() ([]*Container, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("container store: %w", err)
	}
	var out []*Container
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		c, err := s.read(e.Name())
		if err != nil {
			// A directory without a record is a create that died half-way;
			// it is not a container. Skip it rather than fail every list.
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Delete removes the record and every file kept with the container.
func (s *Store) Delete(id string) error {
	if len(id) != 64 || strings.ContainsAny(id, "/.") {
		return errs.New(errdefs.ErrInvalidArgument, "invalid container id %q", id)
	}
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		return fmt.Errorf("remove container %s: %w", id[:12], err)
	}
	return nil
}

var adjectives = []string{"brave", "calm", "eager", "fond", "keen", "lucid", "quiet", "swift", "tidy", "vivid"}
var nouns = []string{"lovelace", "turing", "hopper", "ritchie", "thompson", "knuth", "liskov", "hamilton", "shannon", "torvalds"}

// generateName makes a Docker-style adjective_noun name that is not taken.
func generateName(id string, taken []*Container) string {
	used := map[string]bool{}
	for _, c := range taken {
		used[c.Name] = true
	}
	b, _ := hex.DecodeString(id[:8])
	for i := 0; ; i++ {
		name := adjectives[int(b[0]+byte(i))%len(adjectives)] + "_" + nouns[int(b[1]+byte(i/len(adjectives)))%len(nouns)]
		if i >= len(adjectives)*len(nouns) {
			name = fmt.Sprintf("%s%d", name, i)
		}
		if !used[name] {
			return name
		}
	}
}
