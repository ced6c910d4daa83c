// Package snapshot starts VMs from a saved guest instead of booting them:
// a template VM of a given shape is booted once to the agent's readiness
// and saved (sandbox.Saver), and every later VM of that shape starts from
// the saved state with its own disks and NICs, as Firecracker's snapshots
// and Kata's VM templates do.
//
// A Store keeps one saved state per shape (driver, vCPUs, memory, number
// of disks and NICs) in its directory:
//
//	<dir>/<shape>/state      the driver's saved state (devices, CPU)
//	<dir>/<shape>/memory     the guest's RAM, a sparse file (memory.go)
//	<dir>/<shape>/meta.json  what it was saved from, sizes and CRC-32Cs
//	<dir>/<shape>/lock       held while the state is read or written
//
// A state is used only if it was saved by the same engine build from the
// same kernel, initramfs (the agent is in it), kernel arguments and driver
// identity (the VMM binary, accelerator, CPU model), all digested into
// meta.json's identity; any other is replaced by a new one. The state's CRC is checked as the driver
// reads it, and the VM is stopped before its first instruction if it does
// not match; a state that fails to load is saved again once.
//
// The package does not speak to the agent: Store.Ready does, and the
// caller tells a restored guest what it must know (the agent's Restored).
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/internal/atomicfile"
	"github.com/vmctl/vmctl/internal/filedigest"
)

// format changes whenever meta.json or the way a state is made does.
const format = 1

// File names in a shape's directory.
const (
	stateName  = "state"
	memoryName = "memory"
	metaName   = "meta.json"
	lockName   = "lock"
)

// Store keeps saved states. Its methods are safe for concurrent use, and
// several processes may share a directory.
type Store struct {
	dir string
	// build names the engine's build (its version): a state saved by
	// another build is not used.
	build string
	// ready waits until a template VM's guest can be saved, then lets go
	// of its agent channel.
	ready func(ctx context.Context, sb sandbox.Sandbox) error

	mu      sync.Mutex
	digests map[fileKey]string // guarded by mu: file digests by stat
	// memories are the sealed template memories made or loaded by this
	// process, by shape directory. Guarded by mu. A replaced one is not
	// closed: a VM may be starting from it.
	memories map[string]memoryEntry
}

// memoryEntry is a sealed template memory and the state it belongs to.
type memoryEntry struct {
	identity string
	crc      uint32
	f        *os.File
}

// New returns a store in dir (created when a state is first saved) for
// the engine build build (its version). ready waits until a template's
// guest serves requests and closes its agent channel: what a restored VM's
// caller will dial.
func New(dir, build string, ready func(ctx context.Context, sb sandbox.Sandbox) error) *Store {
	return &Store{dir: dir, build: build, ready: ready, digests: map[fileKey]string{}, memories: map[string]memoryEntry{}}
}

// Dir is where the states are kept.
func (s *Store) Dir() string { return s.dir }

// Meta is what meta.json records of a saved state.
type Meta struct {
	Format int `json:"format"`
	// Identity digests everything the state depends on (identity).
	Identity string `json:"identity"`
	// Build, Driver (sandbox.Saver's SaveIdentity), Kernel and Initrd are
	// what it was saved from: for people reading the file.
	Build  string     `json:"build"`
	Driver string     `json:"driver"`
	Kernel fileDigest `json:"kernel"`
	Initrd fileDigest `json:"initrd"`
	Size   int64      `json:"size"`
	CRC32C uint32     `json:"crc32c"`
	// MemoryMiB is the size of the template's RAM, kept apart from the
	// state in the memory file (memory.go); 0 when the state carries it.
	// MemoryBytes and MemoryCRC32C are its non-zero pages'.
	MemoryMiB    int       `json:"memory_mib,omitempty"`
	MemoryBytes  int64     `json:"memory_bytes,omitempty"`
	MemoryCRC32C uint32    `json:"memory_crc32c,omitempty"`
	Saved        time.Time `json:"saved"`
	// SaveTime is how long booting and saving the template took.
	SaveTime time.Duration `json:"save_time_ns"`
}

// fileDigest is a file's SHA-256 and the stat it was computed at, so that
// a later process need not read the file again while it is unchanged.
type fileDigest struct {
	fileKey
	SHA256 string `json:"sha256"`
}

// fileKey identifies a file's content without reading it: a change of
// content changes its change time.
type fileKey struct {
	Path  string `json:"path"`
	Size  int64  `json:"size"`
	Inode uint64 `json:"inode"`
	MTime int64  `json:"mtime_ns"`
	CTime int64  `json:"ctime_ns"`
}

func statKey(path string) (fileKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileKey{}, err
	}
	k := fileKey{Path: path, Size: st.Size(), MTime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		k.Inode, k.CTime = sys.Ino, sys.Ctim.Nano()
	}
	return k, nil
}

// digest returns path's SHA-256, from the store's cache or known (a meta
// of the same file) when its stat has not changed.
func (s *Store) digest(path string, known ...fileDigest) (fileDigest, error) {
	if path == "" {
		return fileDigest{}, nil
	}
	k, err := statKey(path)
	if err != nil {
		return fileDigest{}, err
	}
	s.mu.Lock()
	d, ok := s.digests[k]
	s.mu.Unlock()
	if ok {
		return fileDigest{k, d}, nil
	}
	for _, kd := range known {
		if kd.fileKey == k && kd.SHA256 != "" {
			s.remember(k, kd.SHA256)
			return kd, nil
		}
	}
	sum, err := filedigest.SHA256(path)
	if err != nil {
		return fileDigest{}, err
	}
	s.remember(k, sum)
	return fileDigest{k, sum}, nil
}

func (s *Store) remember(k fileKey, sum string) {
	s.mu.Lock()
	s.digests[k] = sum
	s.mu.Unlock()
}

// Shape names the saved state cfg's VM can start from.
func Shape(driver string, cfg sandbox.Config) string {
	return fmt.Sprintf("%s-%dcpu-%dm-%ddisk-%dnic", driver, cfg.VCPUs, cfg.MemoryMiB, len(cfg.Disks), len(cfg.NICs))
}

// identity digests everything a state of cfg's shape depends on.
func identity(build, driver, shape string, cfg sandbox.Config, kernel, initrd fileDigest) string {
	h := sha256.New()
	fmt.Fprintf(h, "format %d\nbuild %q\nshape %s\ndriver %s\nkernel %s\ninitrd %s\nargs %q\n",
		format, build, shape, driver, kernel.SHA256, initrd.SHA256, cfg.KernelArgs)
	return hex.EncodeToString(h.Sum(nil))
}

// Eligible says why cfg's VM cannot start from a saved state under drv,
// or nil.
func Eligible(drv sandbox.Driver, cfg sandbox.Config) error {
	saver, ok := drv.(sandbox.Saver)
	if !ok {
		return fmt.Errorf("the %s driver cannot save VMs", drv.Name())
	}
	return saver.CanRestore(cfg)
}

// Start starts cfg's VM under drv from the saved state of its shape, saving
// one first if there is none (or none that matches). restored reports
// whether it did; when drv cannot save VMs or cfg's cannot be restored
// (Eligible), or when no state can be saved (logged), the VM boots. A
// caller given restored must tell the guest (the agent's Restored call)
// before anything else.
func (s *Store) Start(ctx context.Context, drv sandbox.Driver, cfg sandbox.Config) (_ sandbox.Sandbox, restored bool, _ error) {
	if Eligible(drv, cfg) != nil {
		sb, err := drv.Start(ctx, cfg)
		return sb, false, err
	}
	saver := drv.(sandbox.Saver)
	shape := Shape(drv.Name(), cfg)
	dir := filepath.Join(s.dir, shape)
	for attempt := 0; ; attempt++ {
		f, mem, meta, err := s.open(ctx, drv, saver, dir, cfg, attempt > 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, err
			}
			// No saved guest to start from: this run boots; the next
			// one tries to save again.
			slog.Warn("cannot save a VM to start others from; booting", "shape", shape, "error", err)
			sb, err := drv.Start(ctx, cfg)
			return sb, false, err
		}
		// The lock is not held while the VM starts: f stays valid should
		// another process replace the state meanwhile.
		cfg.Memory = mem
		sb, bad, err := restore(ctx, drv, f, meta, cfg)
		f.Close()
		if err == nil {
			return sb, true, nil
		}
		if !bad || attempt > 0 {
			return nil, false, err
		}
		slog.Warn("saved VM state refused, saving it again", "shape", shape, "error", err)
	}
}

// open returns dir's state, opened, its sealed memory (nil when the state
// carries the RAM) and its meta, under the shape's lock. It saves a new
// state first when there is none, when the one there has another identity
// or size, when its memory file is damaged, or when renew is set (the last
// one was refused).
func (s *Store) open(ctx context.Context, drv sandbox.Driver, saver sandbox.Saver, dir string, cfg sandbox.Config, renew bool) (*os.File, *os.File, Meta, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, Meta{}, fmt.Errorf("snapshots: %w", err)
	}
	lock, err := flock.Acquire(ctx, filepath.Join(dir, lockName))
	if err != nil {
		return nil, nil, Meta{}, fmt.Errorf("snapshots: %w", err)
	}
	defer lock.Release()

	meta, metaErr := readMeta(dir)
	kernel, err := s.digest(cfg.Kernel, meta.Kernel)
	if err != nil {
		return nil, nil, Meta{}, fmt.Errorf("snapshots: kernel: %w", err)
	}
	initrd, err := s.digest(cfg.Initrd, meta.Initrd)
	if err != nil {
		return nil, nil, Meta{}, fmt.Errorf("snapshots: initrd: %w", err)
	}
	driver := saver.SaveIdentity()
	id := identity(s.build, driver, filepath.Base(dir), cfg, kernel, initrd)
	var mem *os.File
	if !renew && metaErr == nil && meta.Identity == id && stateMatches(dir, meta) {
		if mem, err = s.memory(dir, meta); err != nil {
			slog.Warn("saved VM memory refused, saving it again", "shape", filepath.Base(dir), "error", err)
			renew = true
		}
	} else {
		renew = true
	}
	if renew {
		meta = Meta{Identity: id, Build: s.build, Driver: driver, Kernel: kernel, Initrd: initrd}
		if mem, err = s.save(ctx, saver, drv, dir, cfg, &meta); err != nil {
			return nil, nil, Meta{}, err
		}
	}
	f, err := os.Open(filepath.Join(dir, stateName))
	if err != nil {
		return nil, nil, Meta{}, fmt.Errorf("snapshots: %w", err)
	}
	return f, mem, meta, nil
}

// memory returns the sealed memory of dir's state: this process's copy,
// or one loaded from the memory file. nil when the state carries the RAM.
func (s *Store) memory(dir string, meta Meta) (*os.File, error) {
	if meta.MemoryMiB == 0 {
		return nil, nil
	}
	s.mu.Lock()
	e, ok := s.memories[dir]
	s.mu.Unlock()
	if ok && e.identity == meta.Identity && e.crc == meta.MemoryCRC32C && sealed(e.f) {
		return e.f, nil
	}
	mem, err := loadMemory(filepath.Join(dir, memoryName), memfdName(dir), meta)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.memories[dir] = memoryEntry{identity: meta.Identity, crc: meta.MemoryCRC32C, f: mem}
	s.mu.Unlock()
	return mem, nil
}

// memfdName names a template's memory in /proc/*/maps: the shape.
func memfdName(dir string) string { return "vmctl-guest-" + filepath.Base(dir) }

// stateMatches checks the state file's size against its meta: a truncated
// or replaced state is saved again without being read.
func stateMatches(dir string, meta Meta) bool {
	st, err := os.Stat(filepath.Join(dir, stateName))
	return err == nil && st.Mode().IsRegular() && st.Size() == meta.Size && meta.Format == format
}

func readMeta(dir string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("%s: %w", filepath.Join(dir, metaName), err)
	}
	return m, nil
}

// restore starts cfg's VM from the state in f. bad reports that the state
// itself is at fault: its CRC did not match, or it was read whole and the
// VM still did not start.
func restore(ctx context.Context, drv sandbox.Driver, f *os.File, meta Meta, cfg sandbox.Config) (_ sandbox.Sandbox, bad bool, _ error) {
	r := &checkedReader{r: io.LimitReader(f, meta.Size+1), h: crc32.New(castagnoli), want: meta.CRC32C, size: meta.Size}
	cfg.Restore = r
	sb, err := drv.Start(ctx, cfg)
	if err != nil {
		return nil, r.mismatch || r.atEnd, err
	}
	return sb, false, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errDamaged is what a checkedReader returns at the end of a state whose
// size or CRC is not the recorded one.
var errDamaged = errors.New("saved VM state damaged (size or CRC-32C differ from its record)")

// checkedReader passes a state through and fails at its end if its size
// or CRC differs from the record: the driver then stops the VM before it
// runs.
type checkedReader struct {
	r        io.Reader
	h        hash.Hash32
	n, size  int64
	want     uint32
	atEnd    bool
	mismatch bool
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF {
		c.atEnd = true
		if c.n != c.size || c.h.Sum32() != c.want {
			c.mismatch = true
			return n, errDamaged
		}
	}
	return n, err
}

// save boots a template VM of cfg's shape, waits for its guest, saves it
// into dir and records meta.
func (s *Store) save(ctx context.Context, saver sandbox.Saver, drv sandbox.Driver, dir string, cfg sandbox.Config, meta *Meta) (_ *os.File, err error) {
	start := time.Now()
	os.Remove(filepath.Join(dir, metaName))
	// The template's RAM in a memfd of its own, which its restored VMs
	// share (memory.go); without a size to make it, the state carries it.
	var mem *os.File
	if cfg.MemoryMiB > 0 {
		if mem, err = newMemory(memfdName(dir), int64(cfg.MemoryMiB)<<20); err != nil {
			return nil, fmt.Errorf("snapshots: %w", err)
		}
		defer func() {
			if err != nil {
				mem.Close()
			}
		}()
	}
	tmpl := sandbox.Config{
		ID:         "template-" + filepath.Base(dir),
		Kernel:     cfg.Kernel,
		Initrd:     cfg.Initrd,
		KernelArgs: cfg.KernelArgs,
		VCPUs:      cfg.VCPUs,
		MemoryMiB:  cfg.MemoryMiB,
		Disks:      make([]sandbox.Disk, len(cfg.Disks)),
		NICs:       make([]sandbox.NIC, len(cfg.NICs)),
		NetNS:      cfg.NetNS,
		StateDir:   cfg.StateDir + ".t",
		ConsoleLog: filepath.Join(dir, "console.log"),
		Template:   true,
		Memory:     mem,
	}
	sb, err := drv.Start(ctx, tmpl)
	if err != nil {
		return nil, fmt.Errorf("snapshots: boot the template VM: %w", err)
	}
	defer sb.Destroy()
	if err := s.ready(ctx, sb); err != nil {
		return nil, fmt.Errorf("snapshots: the template VM's guest: %w", err)
	}
	tmp := filepath.Join(dir, stateName+".tmp")
	memTmp := filepath.Join(dir, memoryName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(tmp)
			os.Remove(memTmp)
		}
	}()
	h := crc32.New(castagnoli)
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	if err := saver.Save(ctx, sb, cw); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	// Destroy reaps QEMU: no writable mapping of mem is left to refuse
	// the seals.
	sb.Destroy()
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	if mem != nil {
		if err := seal(mem); err != nil {
			return nil, fmt.Errorf("snapshots: %w", err)
		}
		crc, n, err := saveMemory(memTmp, mem, int64(cfg.MemoryMiB)<<20)
		if err != nil {
			return nil, fmt.Errorf("snapshots: %w", err)
		}
		meta.MemoryMiB, meta.MemoryBytes, meta.MemoryCRC32C = cfg.MemoryMiB, n, crc
		if err := os.Rename(memTmp, filepath.Join(dir, memoryName)); err != nil {
			return nil, fmt.Errorf("snapshots: %w", err)
		}
	} else {
		os.Remove(filepath.Join(dir, memoryName))
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateName)); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	meta.Format, meta.Size, meta.CRC32C = format, cw.n, h.Sum32()
	meta.Saved, meta.SaveTime = time.Now().UTC(), time.Since(start)
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, metaName), append(b, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	if mem != nil {
		s.mu.Lock()
		s.memories[dir] = memoryEntry{identity: meta.Identity, crc: meta.MemoryCRC32C, f: mem}
		s.mu.Unlock()
	}
	slog.Debug("saved a VM state to start VMs from", "shape", filepath.Base(dir), "bytes", cw.n,
		"memory_bytes", meta.MemoryBytes, "took", meta.SaveTime.Round(time.Millisecond))
	return mem, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Saved is one saved state, for `vmctl info`.
type Saved struct {
	Shape string
	Meta  Meta
}

// List returns the saved states, by shape.
func (s *Store) List() ([]Saved, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Saved
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		m, err := readMeta(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue
		}
		out = append(out, Saved{Shape: e.Name(), Meta: m})
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Shape, out[j].Shape) < 0 })
	return out, nil
}
