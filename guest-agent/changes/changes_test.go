package changes

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type got struct {
	typ  byte
	link string
	body string
	mode int64
}

func layer(t *testing.T, dir string, prev Snapshot) (Snapshot, int, map[string]got, []string) {
	t.Helper()
	var b bytes.Buffer
	next, n, err := Write(&b, dir, prev)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]got{}
	var order []string
	tr := tar.NewReader(&b)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return next, n, out, order
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out[h.Name] = got{typ: h.Typeflag, link: h.Linkname, body: string(body), mode: h.Mode}
		order = append(order, h.Name)
	}
}

func write(t *testing.T, p, body string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: whiteouts are device nodes and the opaque mark a trusted xattr")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a")
	os.Mkdir(filepath.Join(dir, "d"), 0o750)
	write(t, filepath.Join(dir, "d", "b"), "b")
	os.Symlink("/etc/../../a", filepath.Join(dir, "link"))
	os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "h"))
	if err := unix.Mknod(filepath.Join(dir, "x"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "o"), 0o755)
	write(t, filepath.Join(dir, "o", "c"), "c")
	if err := unix.Setxattr(filepath.Join(dir, "o"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}

	snap, n, files, order := layer(t, dir, Snapshot{})
	want := map[string]got{
		"a": {typ: tar.TypeReg, body: "a", mode: 0o644}, "d/": {typ: tar.TypeDir, mode: 0o750},
		"d/b": {typ: tar.TypeReg, body: "b", mode: 0o644}, "h": {typ: tar.TypeLink, link: "a", mode: 0o644},
		"link": {typ: tar.TypeSymlink, link: "/etc/../../a", mode: 0o777}, "o/": {typ: tar.TypeDir, mode: 0o755},
		"o/.wh..wh..opq": {typ: tar.TypeReg}, "o/c": {typ: tar.TypeReg, body: "c", mode: 0o644}, ".wh.x": {typ: tar.TypeReg},
	}
	if n != len(want) || len(files) != len(want) {
		t.Errorf("first layer: %d entries %v, want %d", n, order, len(want))
	}
	for name, w := range want {
		if g, ok := files[name]; !ok || g != w {
			t.Errorf("first layer %s = %+v (present %v), want %+v", name, g, ok, w)
		}
	}
	if i, j := slices.Index(order, "d/"), slices.Index(order, "d/b"); i < 0 || i > j {
		t.Errorf("a directory after its contents: %v", order)
	}

	// Nothing changed: nothing written.
	if _, n, files, _ := layer(t, dir, snap); n != 0 || len(files) != 0 {
		t.Errorf("unchanged: %d entries %v", n, files)
	}

	// A step's changes: one file rewritten (same size), one removed, one
	// new; a directory removed whole is one whiteout.
	time.Sleep(10 * time.Millisecond)
	write(t, filepath.Join(dir, "d", "b"), "B")
	os.Remove(filepath.Join(dir, "link"))
	write(t, filepath.Join(dir, "e"), "e")
	os.RemoveAll(filepath.Join(dir, "o"))
	snap2, _, files, order := layer(t, dir, snap)
	for _, name := range []string{"d/b", "e", ".wh.link", ".wh.o"} {
		if _, ok := files[name]; !ok {
			t.Errorf("second layer lacks %s: %v", name, order)
		}
	}
	if files["d/b"].body != "B" {
		t.Errorf("d/b = %q", files["d/b"].body)
	}
	// d did not change (a file in it was rewritten in place), but a layer
	// lists every directory above what it holds, as it is now.
	if g, ok := files["d/"]; !ok || g.mode != 0o750 || slices.Index(order, "d/") > slices.Index(order, "d/b") {
		t.Errorf("second layer's d/ = %+v (present %v) in %v, want the 0750 directory before d/b", g, ok, order)
	}
	for _, name := range []string{"a", "h", "o/.wh.c", ".wh.o/c", "o/c"} {
		if _, ok := files[name]; ok {
			t.Errorf("second layer has %s: %v", name, order)
		}
	}
	// A chmod alone is a change.
	os.Chmod(filepath.Join(dir, "e"), 0o600)
	if _, _, files, order := layer(t, dir, snap2); len(order) != 1 || files["e"].mode != 0o600 {
		t.Errorf("after chmod: %v %+v", order, files["e"])
	}
}
