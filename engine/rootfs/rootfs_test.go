package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/engine/images"
)

func needTools(t testing.TB) {
	t.Helper()
	needRoot(t)
	if _, err := findMkfs(); err != nil {
		t.Skip("e2fsprogs is not installed (mkfs.ext4 missing)")
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		if _, err := os.Stat("/usr/sbin/debugfs"); err != nil {
			t.Skip("e2fsprogs is not installed (debugfs missing)")
		}
	}
}

// storedImage builds an image from layers, adds it to a fresh store and
// returns it as the store hands it out.
func storedImage(t testing.TB, layers ...[]ent) images.Image {
	t.Helper()
	img, _ := storedImageIn(t, layers...)
	return img
}

// storedImageIn is storedImage that also returns the store's directory.
func storedImageIn(t testing.TB, layers ...[]ent) (images.Image, string) {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		b := tarOf(t, l...)
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	s, err := images.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.Add(context.Background(), img, "test:latest")
	if err != nil {
		t.Fatal(err)
	}
	return stored, s.Root()
}

func newBuilder(t testing.TB) *Builder {
	t.Helper()
	b, err := NewBuilder(filepath.Join(t.TempDir(), "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// debugfs runs one debugfs request against a disk image, read-only.
func debugfs(t testing.TB, disk, req string) string {
	t.Helper()
	out, err := debugfsCmd(disk, req).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(out)
}

func debugfsCmd(disk, req string) *exec.Cmd {
	bin, err := exec.LookPath("debugfs")
	if err != nil {
		bin = "/usr/sbin/debugfs"
	}
	return exec.Command(bin, "-R", req, disk)
}

// leftovers lists what the builder's directories hold besides cached disks
// and lock files: after any build, successful or not, it must be empty.
func leftovers(t testing.TB, b *Builder) []string {
	t.Helper()
	var out []string
	for _, d := range []string{b.tmpDir(), b.disksDir()} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			n := e.Name()
			if d == b.disksDir() && !strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".ext4") || strings.HasSuffix(n, ".lock") ||
				strings.HasSuffix(n, ".empty") || strings.HasSuffix(n, ".unfit")) {
				continue
			}
			out = append(out, filepath.Join(filepath.Base(d), n))
		}
	}
	return out
}

func TestImageDiskContents(t *testing.T) {
	needTools(t)
	suid := reg("bin/su", "su", 0o4755)
	owned := reg("home/user/notes", "mine", 0o640)
	owned.hdr.Uid, owned.hdr.Gid = 1000, 1001
	lower := []ent{
		dirEnt("bin", 0o755), reg("bin/busybox", "busybox binary", 0o755), suid,
		dirEnt("etc", 0o755), reg("etc/old", "removed above", 0o644), reg("etc/kept", "kept", 0o644),
		dirEnt("opaque", 0o755), reg("opaque/hidden", "hidden", 0o644),
		dirEnt("tmp", 0o1777),
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
	}
	upper := []ent{
		reg("etc/.wh.old", "", 0o644),
		reg("opaque/.wh..wh..opq", "", 0o644),
		reg("opaque/new", "new", 0o644),
		hardlink("bin/ls", "bin/busybox"),
		symlink("bin/sh", "busybox"),
		owned,
	}
	img := storedImage(t, lower, upper)
	b := newBuilder(t)
	disk, err := b.ImageDisk(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if want := flatPath(t, b, img); disk != want {
		t.Errorf("disk at %s, want %s", disk, want)
	}
	tests := []struct {
		req  string
		want []string // substrings of debugfs output
		not  []string
	}{
		{"ls /etc", []string{"kept"}, []string{"old"}},
		{"ls /opaque", []string{"new"}, []string{"hidden"}},
		{"stat /bin/su", []string{"Mode:  04755", "User:     0   Group:     0"}, nil},
		{"stat /home/user/notes", []string{"Mode:  0640", "User:  1000   Group:  1001"}, nil},
		{"stat /tmp", []string{"Mode:  01777"}, nil},
		{"stat /dev/null", []string{"Type: character special", "01:03"}, nil},
		{"stat /bin/sh", []string{"Type: symlink", `Fast link dest: "busybox"`}, nil},
		{"stat /bin/busybox", []string{"Links: 2"}, nil},
		{"stat /etc/kept", []string{"mtime: 0x" + fmt.Sprintf("%08x", testMtime.Unix())}, nil},
		{"cat /bin/busybox", []string{"busybox binary"}, nil},
		{"stat /", []string{"User:     0   Group:     0"}, nil},
	}
	for _, tt := range tests {
		out := debugfs(t, disk, tt.req)
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("debugfs %q: no %q in\n%s", tt.req, w, out)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(out, n) {
				t.Errorf("debugfs %q: unexpected %q in\n%s", tt.req, n, out)
			}
		}
	}
	if out := debugfs(t, disk, "features"); !strings.Contains(out, "read-only") || strings.Contains(out, "has_journal") {
		t.Errorf("features = %s; want read-only and no journal", out)
	}
	if l := leftovers(t, b); len(l) != 0 {
		t.Errorf("leftovers after a build: %v", l)
	}
	// A second call returns the cached disk without rebuilding it.
	before, _ := os.Stat(disk)
	again, err := b.ImageDisk(context.Background(), img)
	after, _ := os.Stat(disk)
	if err != nil || again != disk || !os.SameFile(before, after) {
		t.Errorf("second ImageDisk = %s, %v; want the cached %s", again, err, disk)
	}
	if n, err := b.Prune(context.Background(), nil); err != nil || n != 1 {
		t.Fatalf("Prune with no image = %d, %v; want the one disk removed", n, err)
	}
	if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk still there after Prune")
	}
}

// TestImageDiskSizing checks that the size estimate leaves mkfs enough
// room (blocks and inodes) for differently shaped trees.
func TestImageDiskSizing(t *testing.T) {
	needTools(t)
	many := func(n int, f func(i int) ent) []ent {
		var out []ent
		for i := range n {
			out = append(out, f(i))
		}
		return out
	}
	long := strings.Repeat("t", 200)
	tests := []struct {
		name string
		ents []ent
	}{
		{"empty", []ent{dirEnt("x", 0o755)}},
		{"many small files in one directory", many(1500, func(i int) ent { return reg(fmt.Sprintf("d/file-with-a-longish-name-%05d", i), "x", 0o644) })},
		{"one large file", []ent{reg("big", strings.Repeat("0123456789abcdef", 1<<20), 0o644)}},
		// Layers need not list directories (mutate.Extract passes on what
		// the layer has): the ones made implicitly need inodes and blocks too.
		{"files in unlisted directories", many(2000, func(i int) ent { return reg(fmt.Sprintf("d%04d/f", i), "x", 0o644) })},
		{"deep tree", many(100, func(i int) ent { return dirEnt(strings.Repeat("d/", i+1), 0o755) })},
		{"long symlinks", many(500, func(i int) ent { return symlink(fmt.Sprintf("l%04d", i), long) })},
		{"many hard links", append([]ent{reg("bin/busybox", "b", 0o755)}, many(500, func(i int) ent { return hardlink(fmt.Sprintf("bin/a%04d", i), "bin/busybox") })...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBuilder(t)
			disk, err := b.ImageDisk(context.Background(), storedImage(t, tt.ents))
			if err != nil {
				t.Fatal(err)
			}
			fsck := filepath.Join(filepath.Dir(mustMkfs(t)), "e2fsck")
			if out, err := exec.Command(fsck, "-fn", disk).CombinedOutput(); err != nil {
				t.Errorf("e2fsck: %v\n%s", err, out)
			}
		})
	}
}

func mustMkfs(t testing.TB) string {
	p, err := findMkfs()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImageDiskConcurrentCallersBuildOnce(t *testing.T) {
	needTools(t)
	img := storedImage(t, []ent{reg("f", "data", 0o644)})
	root := filepath.Join(t.TempDir(), "rootfs")
	const n = 4
	paths := make([]string, n)
	infos := make([]os.FileInfo, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := NewBuilder(root) // one Builder each, as separate processes would have
			if err != nil {
				errs[i] = err
				return
			}
			paths[i], errs[i] = b.ImageDisk(context.Background(), img)
			infos[i], _ = os.Stat(paths[i])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if paths[i] != paths[0] || !os.SameFile(infos[i], infos[0]) {
			t.Errorf("caller %d got %s, a different disk than caller 0", i, paths[i])
		}
	}
	b, _ := NewBuilder(root)
	if l := leftovers(t, b); len(l) != 0 {
		t.Errorf("leftovers: %v", l)
	}
}

func TestImageDiskFailuresLeaveNothing(t *testing.T) {
	needTools(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	// truncateLayer damages the stored layer blob after the store verified it.
	truncateLayer := func(t *testing.T, img images.Image, storeRoot string) {
		layers, _ := img.Content().Layers()
		d, _ := layers[0].Digest()
		p := filepath.Join(storeRoot, "blobs", d.Algorithm, d.Hex)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	big := strings.Repeat("incompressible? no, but long enough ", 4000)
	tests := []struct {
		name   string
		ctx    context.Context
		ents   []ent
		damage func(*testing.T, images.Image, string)
	}{
		// mutate.Extract refuses this entry; its error must not be lost.
		{"hostile layer", context.Background(), []ent{reg("ok", "x", 0o644), reg("../escape", "x", 0o644)}, nil},
		{"layer damaged in the store", context.Background(), []ent{reg("a", big, 0o644), reg("b", big+"b", 0o644)}, truncateLayer},
		{"cancelled", cancelled, []ent{reg("f", "x", 0o644)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder(t)
			img, storeRoot := storedImageIn(t, tt.ents)
			if tt.damage != nil {
				tt.damage(t, img, storeRoot)
			}
			_, err := b.ImageDisk(tt.ctx, img)
			t.Logf("ImageDisk error: %v", err)
			if err == nil {
				t.Fatal("ImageDisk succeeded, want an error")
			} else if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			p := flatPath(t, b, img)
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a disk was left at %s", p)
			}
			if l := leftovers(t, b); len(l) != 0 {
				t.Errorf("leftovers: %v", l)
			}
		})
	}
}

func TestNewBuilderRemovesStaleScratch(t *testing.T) {
	b := newBuilder(t)
	h := strings.Repeat("ab", 32)
	os.MkdirAll(filepath.Join(b.tmpDir(), h+"-123", "etc"), 0o755)
	os.WriteFile(filepath.Join(b.disksDir(), "."+h+"-456.ext4"), []byte("half"), 0o644)
	// A build of another image holds its lock: its scratch must survive.
	busy := strings.Repeat("cd", 32)
	l, err := flock.Acquire(context.Background(), b.lockPath(busy))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	os.Mkdir(filepath.Join(b.tmpDir(), busy+"-789"), 0o755)
	if _, err := NewBuilder(b.root); err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t, b); len(got) != 1 || got[0] != filepath.Join("tmp", busy+"-789") {
		t.Errorf("after NewBuilder: %v; want only the busy build's scratch", got)
	}
}

func TestWritableDisk(t *testing.T) {
	needTools(t)
	b := newBuilder(t)
	makers := []struct {
		name string
		make func(path string, size int64) error
	}{
		{"mkfs", NewWritableDisk},
		{"template first use", func(p string, size int64) error { return b.WritableDisk(context.Background(), p, size) }},
		{"template copy", func(p string, size int64) error { return b.WritableDisk(context.Background(), p, size) }},
	}
	const size = 10 << 30
	for _, m := range makers {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			disk := filepath.Join(dir, "rw.ext4")
			start := time.Now()
			if err := m.make(disk, size); err != nil {
				t.Fatal(err)
			}
			t.Logf("10 GiB writable disk in %v", time.Since(start))
			fi, err := os.Stat(disk)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != size {
				t.Errorf("size %d, want %d", fi.Size(), size)
			}
			if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 16<<20 {
				t.Errorf("writable disk uses %d bytes of real space, want it sparse", used)
			}
			if out := debugfs(t, disk, "features"); !strings.Contains(out, "has_journal") || strings.Contains(out, "read-only") {
				t.Errorf("features = %s; want a journal and not read-only", out)
			}
			fsck := filepath.Join(filepath.Dir(mustMkfs(t)), "e2fsck")
			if out, err := exec.Command(fsck, "-fn", disk).CombinedOutput(); err != nil {
				t.Errorf("e2fsck: %v\n%s", err, out)
			}
			tests := []struct {
				name string
				path string
				size int64
				want string
			}{
				{"exists", disk, size, "file exists"},
				{"too small", filepath.Join(dir, "small"), 1 << 20, "too small"},
				{"no directory", filepath.Join(dir, "missing", "rw.ext4"), size, "no such file"},
			}
			for _, tt := range tests {
				err := m.make(tt.path, tt.size)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.want)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("failed calls left files: %v", entries)
			}
		})
	}
}

func TestMissingMkfs(t *testing.T) {
	t.Setenv("PATH", "")
	saved := mkfsFallbacks
	mkfsFallbacks = nil
	defer func() { mkfsFallbacks = saved }()
	err := NewWritableDisk(filepath.Join(t.TempDir(), "d"), 64<<20)
	if !errors.Is(err, ErrNoMkfs) || !strings.Contains(err.Error(), "install e2fsprogs") {
		t.Errorf("NewWritableDisk without mkfs.ext4 = %v, want ErrNoMkfs naming e2fsprogs", err)
	}
	_, err = newBuilder(t).ImageDisk(context.Background(), images.Image{ID: "sha256:" + strings.Repeat("0", 64)})
	if !errors.Is(err, ErrNoMkfs) {
		t.Errorf("ImageDisk without mkfs.ext4 = %v, want ErrNoMkfs", err)
	}
}

// BenchmarkWritableDisk compares making a 10 GiB writable disk with
// mkfs.ext4 each time and by copying a cached template.
func BenchmarkWritableDisk(b *testing.B) {
	needTools(b)
	builder := newBuilder(b)
	dir := b.TempDir()
	makers := []struct {
		name string
		make func(path string, size int64) error
	}{
		{"mkfs", NewWritableDisk},
		{"template", func(p string, size int64) error { return builder.WritableDisk(context.Background(), p, size) }},
	}
	for _, m := range makers {
		b.Run(m.name, func(b *testing.B) {
			for i := range b.N {
				p := filepath.Join(dir, fmt.Sprint(i))
				if err := m.make(p, 10<<30); err != nil {
					b.Fatal(err)
				}
				os.Remove(p)
			}
		})
	}
}

// flatPath is where the flattened disk of img is cached.
func flatPath(t testing.TB, b *Builder, img images.Image) string {
	t.Helper()
	cf, err := img.Content().ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	chains := ChainIDs(cf.RootFS.DiffIDs)
	if len(chains) == 0 {
		return b.diskFile(flatKey(emptyChain), ".ext4")
	}
	return b.diskFile(flatKey(chains[len(chains)-1]), ".ext4")
}

// TestPrune: Prune keeps the disks of the images it is given and deletes
// the others, the disks of earlier versions (named by image ID) too.
func TestPrune(t *testing.T) {
	needTools(t)
	keep := storedImage(t, []ent{reg("f", "data", 0o644)})
	gone := storedImage(t, []ent{reg("g", "other", 0o644)})
	b := newBuilder(t)
	ctx := context.Background()
	kept, err := b.ImageDisk(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	disk, err := b.ImageDisk(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(b.disksDir(), strings.TrimPrefix(gone.ID, "sha256:")+".ext4")
	if err := os.WriteFile(legacy, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Prune(ctx, []images.Image{keep}); err != nil || n != 2 {
		t.Fatalf("Prune = %d, %v; want 2 disks removed", n, err)
	}
	for _, p := range []string{disk, legacy} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (stat: %v)", filepath.Base(p), err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the live image's disk went: %v", err)
	}
	// Nothing left to remove, and the image can be built again.
	if n, err := b.Prune(ctx, []images.Image{keep}); err != nil || n != 0 {
		t.Errorf("second Prune = %d, %v", n, err)
	}
	if _, err := b.ImageDisk(ctx, gone); err != nil {
		t.Errorf("ImageDisk after Prune: %v", err)
	}
}
