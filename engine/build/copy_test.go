package build

import (
	"archive/tar"
	"testing"
	"time"
)

// TestWithParentsListsImageDirectories: a COPY layer lists the
// directories above what it adds, with the image's owner, mode, time and
// attributes where the image has them (so the layer can be stacked on its
// own without changing them), and as --chown's owner, mode 0755, where it
// does not.
func TestWithParentsListsImageDirectories(t *testing.T) {
	when := time.Unix(1600000000, 0)
	files := &tree{dirs: map[string]*tar.Header{
		"/":    nil,
		"/usr": {Typeflag: tar.TypeDir, Mode: 0o755, ModTime: when},
		"/usr/local": {Typeflag: tar.TypeDir, Mode: 0o2775, Uid: 0, Gid: 50, ModTime: when,
			PAXRecords: map[string]string{"SCHILY.xattr.user.tag": "x"}},
	}}
	added := []entry{{hdr: tar.Header{Name: "usr/local/app/bin/tool", Typeflag: tar.TypeReg, Mode: 0o755}}}
	got := withParents(added, files, owner{set: true, uid: 1000, gid: 1000})
	byName := map[string]tar.Header{}
	var order []string
	for _, e := range got {
		byName[e.hdr.Name] = e.hdr
		order = append(order, e.hdr.Name)
	}
	want := []string{"usr", "usr/local", "usr/local/app", "usr/local/app/bin", "usr/local/app/bin/tool"}
	if len(order) != len(want) {
		t.Fatalf("entries %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("entries %v, want %v", order, want)
		}
	}
	if h := byName["usr/local"]; h.Mode != 0o2775 || h.Gid != 50 || h.Uid != 0 || !h.ModTime.Equal(when) || h.PAXRecords["SCHILY.xattr.user.tag"] != "x" {
		t.Errorf("usr/local = %+v; want the image's directory", h)
	}
	if h := byName["usr/local/app"]; h.Mode != 0o755 || h.Uid != 1000 || h.Gid != 1000 || h.Typeflag != tar.TypeDir {
		t.Errorf("usr/local/app = %+v; want a new 0755 directory owned by --chown's owner", h)
	}
}
