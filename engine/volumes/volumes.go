// Package volumes manages named volumes: each volume is a sparse ext4 disk
// image of its own under <data-root>/volumes/<name>/, with its metadata
// beside it, and it outlives the containers that use it.
//
// It creates, lists, inspects and removes volumes, refuses to remove one
// that a container references, and serialises all of that across processes
// sharing a data root with one flock. It does not know how a volume reaches
// a guest (containersvc passes the disk to the VM and the agent mounts it),
// nor which containers exist: the Users callback tells it. It reports no
// events: its methods say what they created and removed, and the volume
// service (engine/services/volumesvc) reports that.
package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/internal/atomicfile"
)

// DriverLocal is the only volume driver: a disk image on this host.
const DriverLocal = "local"

// DefaultSize is a volume's disk size unless the size option says
// otherwise. The disk is sparse, so unused space costs nothing.
const DefaultSize int64 = 8 << 30

// MinSize is the smallest disk ext4 with a journal is useful on.
const MinSize int64 = 16 << 20

// MaxSize bounds the size option so that a typo cannot ask for an absurd
// disk; 16 TiB is ext4's file size limit with 4 KiB blocks.
const MaxSize int64 = 16 << 40

const (
	metaFile = "volume.json"
	diskFile = "disk.ext4"
	lockFile = ".lock"
	// Directories being removed are renamed to this prefix first, so a
	// crash halfway leaves nothing that looks like a volume. Volume names
	// cannot start with a dot.
	trashPrefix = ".removing-"
)

// Volume is one named volume.
type Volume struct {
	Name      string            `json:"name"`
	Driver    string            `json:"driver"`
	CreatedAt time.Time         `json:"createdAt"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Options are the driver options the volume was created with.
	Options map[string]string `json:"options,omitempty"`
	// Size is the disk's size in bytes.
	Size int64 `json:"size"`
	// Anonymous volumes were made for one container (docker run -v /path)
	// and go away with it when it was run with --rm.
	Anonymous bool `json:"anonymous,omitempty"`
	// Disk is the path of the volume's disk image; set on load, not stored.
	Disk string `json:"-"`
}

// CreateOptions is what a user asks for (docker volume create).
type CreateOptions struct {
	Name       string
	Driver     string
	DriverOpts map[string]string
	Labels     map[string]string
	Anonymous  bool
}

// Config wires a Store.
type Config struct {
	// Root is the directory of all volumes, <data-root>/volumes.
	Root string
	// NewDisk creates an empty ext4 disk of size bytes at path, refusing
	// to overwrite a file (rootfs.Builder.WritableDisk).
	NewDisk func(ctx context.Context, path string, size int64) error
	// Users returns, for each volume name, the names of the containers
	// that reference it, running or not. Nil means no container ever does.
	Users func() (map[string][]string, error)
}

// Store keeps the volumes under one root.
type Store struct {
	cfg Config
}

// Open returns the Store over cfg.Root, creating the directory.
func Open(cfg Config) (*Store, error) {
	if cfg.Root == "" || cfg.NewDisk == nil {
		return nil, errors.New("volumes: root and disk maker must be set")
	}
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	return &Store{cfg: cfg}, nil
}

// validName is docker's rule for volume names (at least two characters);
// the length cap keeps the name a valid file name.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}$`)

// ValidateName checks a volume name.
func ValidateName(name string) error {
	if !validName.MatchString(name) {
		return errs.New(errdefs.ErrInvalidArgument, "invalid volume name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters", name)
	}
	return nil
}

// parseOptions checks driver options and returns the disk size.
func parseOptions(opts map[string]string) (int64, error) {
	size := DefaultSize
	for k, v := range opts {
		if k != "size" {
			return 0, errs.New(errdefs.ErrInvalidArgument, "invalid volume option %q: only size is supported", k)
		}
		n, err := units.RAMInBytes(v)
		if err != nil || n < MinSize || n > MaxSize {
			return 0, errs.New(errdefs.ErrInvalidArgument, "invalid volume size %q: want a size from 16m to 16t, like 1g", v)
		}
		size = n
	}
	return size, nil
}

func (s *Store) dir(name string) string { return filepath.Join(s.cfg.Root, name) }
func (s *Store) lock(ctx context.Context) (*flock.Lock, error) {
	return flock.Acquire(ctx, filepath.Join(s.cfg.Root, lockFile))
}

// Create makes a volume. A volume of that name that exists already is
// returned as it is, whatever the options (docker's behaviour); created
// says whether this call made it.
func (s *Store) Create(ctx context.Context, o CreateOptions) (v *Volume, created bool, err error) {
	if err := s.validate(o); err != nil {
		return nil, false, err
	}
	l, err := s.lock(ctx)
	if err != nil {
		return nil, false, err
	}
	defer l.Release()
	return s.createLocked(ctx, o)
}

func (s *Store) validate(o CreateOptions) error {
	if err := ValidateName(o.Name); err != nil {
		return err
	}
	if o.Driver != "" && o.Driver != DriverLocal {
		// dockerd's words and status for a driver it has no plugin for.
		return errs.New(errdefs.ErrNotFound, "error looking up volume plugin %s: plugin %q not found (the local driver is the only one)", o.Driver, o.Driver)
	}
	_, err := parseOptions(o.DriverOpts)
	return err
}

// createLocked returns the volume o names, making it if it does not
// exist (created). Preconditions: the lock is held, o is valid.
func (s *Store) createLocked(ctx context.Context, o CreateOptions) (v *Volume, created bool, err error) {
	if v, err := s.load(o.Name); err == nil {
		return v, false, nil
	} else if !errdefs.IsNotFound(err) {
		return nil, false, err
	}
	size, _ := parseOptions(o.DriverOpts)
	dir := s.dir(o.Name)
	// A directory without metadata is a create that died: start over.
	if err := os.RemoveAll(dir); err != nil {
		return nil, false, fmt.Errorf("create volume %s: %w", o.Name, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create volume %s: %w", o.Name, err)
	}
	v = &Volume{
		Name: o.Name, Driver: DriverLocal, CreatedAt: time.Now().UTC().Truncate(time.Second),
		Labels: o.Labels, Options: o.DriverOpts, Size: size, Anonymous: o.Anonymous,
		Disk: filepath.Join(dir, diskFile),
	}
	if err := s.cfg.NewDisk(ctx, v.Disk, size); err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, syscall.EFBIG) {
			// The size passed parseOptions but not the host's file system
			// (ext4 with 4 KiB blocks stops 4 KiB short of 16 TiB).
			return nil, false, errs.New(errdefs.ErrInvalidArgument, "invalid volume size %q: larger than a file can be on this host's file system", o.DriverOpts["size"])
		}
		return nil, false, fmt.Errorf("create volume %s: %w", o.Name, err)
	}
	// The metadata is written last: it is what makes the volume exist. So
	// the disk (NewDisk does not sync it) and the directory entries must
	// be on stable storage first, or a crash could leave a volume whose
	// disk has no file system, which no guest can mount.
	if err := syncPaths(v.Disk, dir, s.cfg.Root); err != nil {
		os.RemoveAll(dir)
		return nil, false, fmt.Errorf("create volume %s: %w", o.Name, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, metaFile), v); err != nil {
		os.RemoveAll(dir)
		return nil, false, fmt.Errorf("create volume %s: %w", o.Name, err)
	}
	return v, true, nil
}

// Get returns a volume by name.
func (s *Store) Get(name string) (*Volume, error) {
	if err := ValidateName(name); err != nil {
		return nil, errs.New(errdefs.ErrNotFound, "no such volume: %s", name)
	}
	return s.load(name)
}

// errDamaged marks a volume whose metadata exists but cannot be read as a
// volume: it is left out of listings and may still be removed.
var errDamaged = errors.New("damaged volume metadata")

func (s *Store) load(name string) (*Volume, error) {
	b, err := os.ReadFile(filepath.Join(s.dir(name), metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errs.New(errdefs.ErrNotFound, "no such volume: %s", name)
	}
	if err != nil {
		return nil, fmt.Errorf("read volume %s: %w", name, err)
	}
	var v Volume
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("read volume %s: %w: %w", name, errDamaged, err)
	}
	if v.Name != name {
		return nil, fmt.Errorf("read volume %s: %w: it names %q", name, errDamaged, v.Name)
	}
	v.Disk = filepath.Join(s.dir(name), diskFile)
	return &v, nil
}

// List returns every volume, by name.
func (s *Store) List() ([]*Volume, error) {
	entries, err := os.ReadDir(s.cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := []*Volume{}
	for _, e := range entries {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		v, err := s.load(e.Name())
		if errdefs.IsNotFound(err) {
			continue // being created or removed
		}
		if errors.Is(err, errDamaged) {
			// One damaged record must not hide every other volume (the
			// container store skips such records too); Remove takes it.
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RefCount returns how many containers reference each volume.
func (s *Store) RefCount() (map[string]int, error) {
	users, err := s.users()
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for name, cs := range users {
		out[name] = len(cs)
	}
	return out, nil
}

func (s *Store) users() (map[string][]string, error) {
	if s.cfg.Users == nil {
		return map[string][]string{}, nil
	}
	u, err := s.cfg.Users()
	if err != nil {
		return nil, fmt.Errorf("find the containers using volumes: %w", err)
	}
	return u, nil
}

// Remove deletes a volume and its data. A volume that any container
// references, running or stopped, is refused (ErrConflict); with force, a
// missing volume is not an error. A volume with damaged metadata can be
// removed, so that it can be got rid of at all. removed says whether the
// volume is gone, which it can be with an error: when its data could not
// all be deleted (the next removal deletes the rest).
func (s *Store) Remove(ctx context.Context, name string, force bool) (removed bool, err error) {
	l, err := s.lock(ctx)
	if err != nil {
		return false, err
	}
	defer l.Release()
	if _, err := s.Get(name); err != nil && !errors.Is(err, errDamaged) {
		if force && errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	users, err := s.users()
	if err != nil {
		return false, err
	}
	if cs := users[name]; len(cs) > 0 {
		return false, errs.New(errdefs.ErrConflict, "volume %s is in use by container %s: remove the container first", name, strings.Join(cs, ", "))
	}
	return s.removeLocked(name)
}

// removeLocked deletes a volume's directory; removed as for Remove.
// Precondition: the lock is held.
func (s *Store) removeLocked(name string) (removed bool, err error) {
	s.removeTrash()
	trash, err := os.MkdirTemp(s.cfg.Root, trashPrefix)
	if err != nil {
		return false, fmt.Errorf("remove volume %s: %w", name, err)
	}
	// Renamed first, so the volume is gone at once even if the delete of
	// its data is cut short.
	dst := filepath.Join(trash, name)
	if err := os.Rename(s.dir(name), dst); err != nil {
		os.Remove(trash)
		return false, fmt.Errorf("remove volume %s: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return true, fmt.Errorf("remove volume %s: %w", name, err)
	}
	return true, nil
}

// Prune removes every volume that no container references and that keep
// does not want kept (nil keeps none), and returns the names removed and
// the disk space freed; with an error, those removed before it (and the
// one it cut short, if that is gone).
func (s *Store) Prune(ctx context.Context, keep func(*Volume) bool) ([]string, uint64, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer l.Release()
	list, err := s.List()
	if err != nil {
		return nil, 0, err
	}
	users, err := s.users()
	if err != nil {
		return nil, 0, err
	}
	removed := []string{}
	var freed uint64
	for _, v := range list {
		if len(users[v.Name]) > 0 || (keep != nil && keep(v)) {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(v.Disk, &st); err == nil {
			freed += uint64(st.Blocks) * 512
		}
		gone, err := s.removeLocked(v.Name)
		if gone {
			removed = append(removed, v.Name)
		}
		if err != nil {
			return removed, freed, err
		}
	}
	return removed, freed, nil
}

// removeTrash deletes what removals that died halfway left. Precondition:
// the lock is held, so no removal is in progress.
func (s *Store) removeTrash() {
	entries, _ := os.ReadDir(s.cfg.Root)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			os.RemoveAll(filepath.Join(s.cfg.Root, e.Name()))
		}
	}
}

// Use makes sure the volumes exist, creating the missing ones, and calls
// record with them while holding the lock that Remove takes: a volume
// cannot be removed between this check and the container record that
// references it, which record writes. Volumes created here are removed
// again if record fails; created names those that record was called with
// and that did not exist before.
func (s *Store) Use(ctx context.Context, reqs []CreateOptions, record func(map[string]*Volume) error) (created []string, err error) {
	for _, o := range reqs {
		if err := s.validate(o); err != nil {
			return nil, err
		}
	}
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	vols := map[string]*Volume{}
	undo := func() {
		for _, name := range created {
			os.RemoveAll(s.dir(name))
		}
	}
	for _, o := range reqs {
		if vols[o.Name] != nil {
			continue
		}
		v, isNew, err := s.createLocked(ctx, o)
		if err != nil {
			undo()
			return nil, err
		}
		if isNew {
			created = append(created, o.Name)
		}
		vols[o.Name] = v
	}
	if err := record(vols); err != nil {
		undo()
		return nil, err
	}
	return created, nil
}

// Claim takes, in a fixed order, one lock per named volume and returns
// their release. A container start holds the claims of its volumes from
// its in-use check until it is recorded as running, so that two starts
// (in any processes) cannot both find a volume free.
func (s *Store) Claim(ctx context.Context, names []string) (release func(), err error) {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	var held []*flock.Lock
	release = func() {
		for _, l := range held {
			l.Release()
		}
	}
	for _, name := range names {
		v, err := s.Get(name)
		if err != nil {
			release()
			return nil, err
		}
		l, err := flock.Acquire(ctx, filepath.Join(s.dir(v.Name), "run.lock"))
		if err != nil {
			release()
			return nil, err
		}
		held = append(held, l)
	}
	return release, nil
}

// syncPaths fsyncs each file or directory.
func syncPaths(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
	}
	return nil
}

// writeFileAtomic writes v as JSON to path (atomicfile.Write), readable
// by root only.
func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
