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
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: extraction keeps owners and makes device nodes")
	}
}

// ent is one tar entry for a test archive.
type ent struct {
	hdr  tar.Header
	data string
}

func reg(name, data string, mode int64) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}, data: data}
}
func dirEnt(name string, mode int64) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}
func symlink(name, target string) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}
func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

var testMtime = time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)

func tarOf(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = testMtime
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractKeepsMetadata(t *testing.T) {
	needRoot(t)
	owned := reg("home/user/notes", "mine", 0o640)
	owned.hdr.Uid, owned.hdr.Gid = 1000, 1001
	xattr := reg("bin/ping", "ping", 0o755)
	xattr.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.vmctl-test": "v"}
	archive := tarOf(t,
		// A hard link before its target, as in mutate.Extract's upper-first order.
		hardlink("bin/ls", "bin/busybox"),
		reg("bin/busybox", "bb", 0o755),
		reg("bin/su", "su", 0o4755),
		symlink("bin/sh", "busybox"),
		owned,
		xattr,
		dirEnt("tmp", 0o1777),
		dirEnt("ro", 0o555),
		reg("ro/file", "x", 0o444),
		ent{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		ent{hdr: tar.Header{Name: "dev/loop0", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 7, Devminor: 0}},
		ent{hdr: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}},
		reg("/abs/file", "abs", 0o644),
		reg("./dot/file", "dot", 0o644),
	)
	dir := t.TempDir()
	use, err := extractTar(context.Background(), bytes.NewReader(archive), dir, DefaultMaxUnpacked)
	if err != nil {
		t.Fatal(err)
	}
	if use.inodes < 12 || use.bytes < 8*blockSize {
		t.Errorf("usage = %+v, too small for what was extracted", use)
	}
	stat := func(name string) *syscall.Stat_t {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return fi.Sys().(*syscall.Stat_t)
	}
	tests := []struct {
		name     string
		mode     uint32 // full st_mode
		uid, gid uint32
		rdev     uint64
	}{
		{"bin/busybox", unix.S_IFREG | 0o755, 0, 0, 0},
		{"bin/su", unix.S_IFREG | unix.S_ISUID | 0o755, 0, 0, 0},
		{"bin/sh", unix.S_IFLNK | 0o777, 0, 0, 0},
		{"home/user/notes", unix.S_IFREG | 0o640, 1000, 1001, 0},
		{"tmp", unix.S_IFDIR | unix.S_ISVTX | 0o777, 0, 0, 0},
		{"ro", unix.S_IFDIR | 0o555, 0, 0, 0},
		{"dev/null", unix.S_IFCHR | 0o666, 0, 0, unix.Mkdev(1, 3)},
		{"dev/loop0", unix.S_IFBLK | 0o660, 0, 0, unix.Mkdev(7, 0)},
		{"run/fifo", unix.S_IFIFO | 0o600, 0, 0, 0},
		{"abs/file", unix.S_IFREG | 0o644, 0, 0, 0},
		{"dot/file", unix.S_IFREG | 0o644, 0, 0, 0},
	}
	for _, tt := range tests {
		st := stat(tt.name)
		if st.Mode != tt.mode || st.Uid != tt.uid || st.Gid != tt.gid || st.Rdev != tt.rdev {
			t.Errorf("%s: mode %o uid %d gid %d rdev %d; want mode %o uid %d gid %d rdev %d",
				tt.name, st.Mode, st.Uid, st.Gid, st.Rdev, tt.mode, tt.uid, tt.gid, tt.rdev)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(testMtime) {
			t.Errorf("%s: mtime %v, want %v", tt.name, got, testMtime)
		}
	}
	if stat("bin/ls").Ino != stat("bin/busybox").Ino {
		t.Errorf("bin/ls is not a hard link to bin/busybox")
	}
	if target, _ := os.Readlink(filepath.Join(dir, "bin/sh")); target != "busybox" {
		t.Errorf("bin/sh -> %q, want busybox", target)
	}
	buf := make([]byte, 16)
	n, err := unix.Getxattr(filepath.Join(dir, "bin/ping"), "user.vmctl-test", buf)
	if err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr user.vmctl-test = %q, %v; want v", buf[:n], err)
	}
}

// TestExtractHostile checks that no entry writes outside the extraction
// directory. The directory sits next to "outside", which absolute symlinks
// in the archives point at; afterwards "outside" must still be empty.
func TestExtractHostile(t *testing.T) {
	needRoot(t)
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside")
	tests := []struct {
		name    string
		ents    []ent
		wantErr bool
		inside  string // a path that must exist inside afterwards
	}{
		{"dotdot name", []ent{reg("../outside/pwned", "x", 0o644)}, true, ""},
		{"dotdot deeper", []ent{reg("a/../../outside/pwned", "x", 0o644)}, true, ""},
		{"absolute name stays inside", []ent{reg(outside+"/pwned", "x", 0o644)}, false, strings.TrimPrefix(outside, "/") + "/pwned"},
		{"write through relative symlink", []ent{symlink("evil", "../outside"), reg("evil/pwned", "x", 0o644)}, true, ""},
		{"write through absolute symlink", []ent{symlink("evil", outside), reg("evil/pwned", "x", 0o644)}, true, ""},
		{"mkdir through symlink", []ent{symlink("evil", outside), dirEnt("evil/sub", 0o755)}, true, ""},
		{"device through symlink", []ent{symlink("evil", outside),
			{hdr: tar.Header{Name: "evil/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}}, true, ""},
		{"hard link to dotdot", []ent{hardlink("l", "../outside/target")}, true, ""},
		{"hard link through symlink", []ent{symlink("evil", outside), hardlink("l", "evil/target")}, true, ""},
		{"hard link to absolute path stays inside", []ent{reg("etc/passwd", "inside", 0o644), hardlink("l", "/etc/passwd")}, false, "l"},
		{"file replaces symlink", []ent{symlink("f", outside+"/target"), reg("f", "x", 0o644)}, false, "f"},
		// Upper-layer entries under var/run come first; the lower layer's
		// symlink at var/run must neither win nor redirect them.
		{"lower symlink under upper directory", []ent{reg("var/run/x", "x", 0o644), symlink("var/run", outside)}, false, "var/run/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(outside)
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "target"), []byte("host file"), 0o644)
			dir := filepath.Join(parent, "root")
			os.RemoveAll(dir)
			os.Mkdir(dir, 0o755)
			_, err := extractTar(context.Background(), bytes.NewReader(tarOf(t, tt.ents...)), dir, DefaultMaxUnpacked)
			if tt.wantErr && err == nil {
				t.Errorf("extraction succeeded, want an error")
			}
			if !tt.wantErr && err != nil {
				t.Errorf("extraction failed: %v", err)
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 1 || entries[0].Name() != "target" {
				t.Errorf("outside directory changed: %v", entries)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "target")); string(b) != "host file" {
				t.Errorf("file outside was overwritten: %q", b)
			}
			var st1, st2 unix.Stat_t
			unix.Stat(filepath.Join(outside, "target"), &st1)
			if st1.Nlink != 1 {
				t.Errorf("file outside gained a hard link")
			}
			if tt.inside != "" {
				if err := unix.Lstat(filepath.Join(dir, tt.inside), &st2); err != nil {
					t.Errorf("%s missing inside: %v", tt.inside, err)
				} else if st2.Mode&unix.S_IFMT != unix.S_IFREG {
					t.Errorf("%s inside is not a regular file (mode %o)", tt.inside, st2.Mode)
				}
			}
		})
	}
}

func TestExtractCancelled(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := extractTar(ctx, bytes.NewReader(tarOf(t, reg("a", "b", 0o644))), t.TempDir(), DefaultMaxUnpacked)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("extractTar with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"a/b", "a/b", false},
		{"./a/./b/", "a/b", false},
		{"/etc/passwd", "etc/passwd", false},
		{"//x", "x", false},
		{".", ".", false},
		{"./", ".", false},
		{"", ".", false},
		{"..", "", true},
		{"a/../../b", "", true},
		{"a/..", "", true},
	}
	for _, tt := range tests {
		got, err := cleanName(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err != nil && !errors.Is(err, errUnsafePath) {
			t.Errorf("cleanName(%q) error %v is not errUnsafePath", tt.in, err)
		}
	}
}

// Entries that take no data block (empty files, short symlinks, hard links,
// device nodes) still take room in their directory: the disk is sized for
// their names too.
func TestExtractCountsDirectoryEntries(t *testing.T) {
	needRoot(t)
	long := strings.Repeat("n", 200)
	const n = 1000
	var ents []ent
	for i := range n {
		name := fmt.Sprintf("d/%s-%04d", long, i)
		switch i % 3 {
		case 0:
			ents = append(ents, reg(name, "", 0o644))
		case 1:
			ents = append(ents, symlink(name, "x"))
		default:
			ents = append(ents, hardlink(name, "d/"+long+"-0000"))
		}
	}
	use, err := extractTar(context.Background(), bytes.NewReader(tarOf(t, ents...)), t.TempDir(), DefaultMaxUnpacked)
	if err != nil {
		t.Fatal(err)
	}
	// An ext4 directory entry is 8 bytes plus the name rounded up to 4.
	if want := int64(n * (8 + 208)); use.bytes < want {
		t.Errorf("extractTar counted %d bytes for %d entries with %d-byte names, want at least %d", use.bytes, n, len(long)+5, want)
	}
}

// A layer that describes a huge sparse file (10 KiB of archive for 1 GiB
// of file) is refused past the limit, and under it takes on the host no
// more than its data: holes are not written.
func TestExtractSparseAndBounded(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("GNU tar is not installed")
	}
	src := t.TempDir()
	big := filepath.Join(src, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("data at the start"), 0)
	f.WriteAt([]byte("data at the end"), 1<<30-15)
	f.Close()
	archive := filepath.Join(t.TempDir(), "layer.tar")
	if out, err := exec.Command(tarBin, "--sparse", "-C", src, "-cf", archive, "big").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	if fi, _ := os.Stat(archive); fi.Size() > 64<<10 {
		t.Fatalf("the sparse archive has %d bytes", fi.Size())
	}
	open := func() io.Reader {
		b, err := os.ReadFile(archive)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(b)
	}
	if _, err := extractTar(context.Background(), open(), t.TempDir(), 512<<20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1 GiB file under a 512 MiB limit: %v, want ErrTooLarge", err)
	}
	dir := t.TempDir()
	if _, err := extractTar(context.Background(), open(), dir, DefaultMaxUnpacked); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "big"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<30 || st.Blocks*512 > 1<<20 {
		t.Errorf("extracted file: %d bytes, %d allocated; want 1 GiB in at most 1 MiB of disk", st.Size, st.Blocks*512)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "big"))
	if string(got[:17]) != "data at the start" || string(got[len(got)-15:]) != "data at the end" {
		t.Error("the data around the holes is lost")
	}
}

func TestErrTooLargeIsAClientError(t *testing.T) {
	if err := fmt.Errorf("image disk: %w", ErrTooLarge); !errdefs.IsInvalidArgument(err) {
		t.Errorf("%v is not an invalid-argument error", err)
	}
}
