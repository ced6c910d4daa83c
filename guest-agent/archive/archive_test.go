package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func setup(t *testing.T) (string, *os.Root) {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b", "c"), 0o755)
	os.WriteFile(filepath.Join(dir, "b", "c", "f"), []byte("f"), 0o640)
	os.Symlink("/b", filepath.Join(dir, "abs"))
	os.Symlink("../../../../b", filepath.Join(dir, "climb"))
	os.Symlink("loop", filepath.Join(dir, "loop"))
	os.Symlink("/etc/passwd", filepath.Join(dir, "b", "passwd"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return dir, root
}

func TestResolve(t *testing.T) {
	_, root := setup(t)
	for _, tc := range []struct {
		in, want string
		follow   bool
	}{
		{"/", ".", true},
		{"/abs/c/f", "b/c/f", false},
		{"climb/c", "b/c", false},
		{"/../../b/./c/../c", "b/c", false},
		{"/abs", "abs", false},
		{"/abs", "b", true},
		{"/b/passwd", "b/passwd", false},
		{"/b/passwd", "etc/passwd", true}, // inside the root, not the host's
		{"/new/file", "new/file", false},
	} {
		got, err := Resolve(root, tc.in, tc.follow)
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q, %v) = %q, %v; want %q", tc.in, tc.follow, got, err, tc.want)
		}
	}
	if _, err := Resolve(root, "/loop/x", false); err == nil {
		t.Error("a symlink loop resolved")
	}
}

func TestWriteAndExtract(t *testing.T) {
	_, root := setup(t)
	st, rel, err := StatPath(root, "/abs/c")
	if err != nil || rel != "b/c" || st.Name != "c" || !st.Mode.IsDir() {
		t.Fatalf("StatPath = %+v %q %v", st, rel, err)
	}
	if _, _, err := StatPath(root, "/nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("StatPath of nothing: %v", err)
	}
	var b bytes.Buffer
	if err := Write(&b, root, rel, st.Name); err != nil {
		t.Fatal(err)
	}
	names := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(b.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = h.Mode
	}
	if names["c/"] == 0 || names["c/f"] != 0o640 || len(names) != 2 {
		t.Errorf("tar of /abs/c: %v", names)
	}

	// Into another root: owners to root unless kept; nothing outside.
	dst := t.TempDir()
	droot, _ := os.OpenRoot(dst)
	defer droot.Close()
	os.Mkdir(filepath.Join(dst, "into"), 0o755)
	var up bytes.Buffer
	tw := tar.NewWriter(&up)
	tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 8})
	tw.WriteHeader(&tar.Header{Name: "d/x", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 1, Uid: 7, Gid: 8})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"})
	tw.Close()
	for _, keep := range []bool{false, true} {
		if err := Extract(bytes.NewReader(up.Bytes()), droot, "into", Options{KeepOwners: keep}); err != nil {
			t.Fatalf("Extract keep=%v: %v", keep, err)
		}
		fi, err := os.Stat(filepath.Join(dst, "into", "d", "x"))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantUID := uint32(0)
		if keep {
			wantUID = 7
		}
		if st.Uid != wantUID || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
			t.Errorf("keep=%v: d/x uid %d mode %v", keep, st.Uid, fi.Mode())
		}
	}
	var bad bytes.Buffer
	tw = tar.NewWriter(&bad)
	tw.WriteHeader(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	if err := Extract(&bad, droot, "into", Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("an entry climbing out: %v", err)
	}
	// Through the symlink the first tar planted: still inside.
	var through bytes.Buffer
	tw = tar.NewWriter(&through)
	tw.WriteHeader(&tar.Header{Name: "d/l", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
	tw.Write([]byte("hi"))
	tw.Close()
	if err := Extract(&through, droot, "into", Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "into", "d", "l")); string(b) != "hi" {
		t.Errorf("the planted symlink was written through, or not replaced: %q", b)
	}
	if err := Extract(bytes.NewReader(up.Bytes()), droot, "into/d/x", Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("extract into a file: %v", err)
	}
}
