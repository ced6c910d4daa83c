package imagefile

import (
	"archive/tar"
	"io"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestAdd(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.tar")
	if err := tarball.WriteToFile(base, name.MustParseReference("base:1").(name.Tag), empty.Image); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.tar")
	if err := Add(base, "bin/tool", 0o755, []byte("#!/bin/sh\n"), "tool:test", out); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(tr)
	if h.Name != "bin/tool" || h.Mode != 0o755 || string(data) != "#!/bin/sh\n" {
		t.Errorf("added file %s mode %o %q", h.Name, h.Mode, data)
	}
	if err := Add(base, "x", 0o644, nil, "Bad Tag", filepath.Join(dir, "bad.tar")); err == nil {
		t.Error("Add with an invalid tag succeeded")
	}
	if err := Add(filepath.Join(dir, "missing.tar"), "x", 0o644, nil, "x:1", filepath.Join(dir, "x.tar")); err == nil {
		t.Error("Add on a missing base archive succeeded")
	}
}
