package main

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/vmctl/vmctl/engine/images"
)

func TestLayerEntries(t *testing.T) {
	tests := []struct {
		name    string
		applets []string
		wantErr string
		want    []string // entries that must exist
	}{
		{"usual", []string{"bin/sh", "usr/bin/env", "sbin/init", "bin/busybox"}, "",
			[]string{"bin/", "tmp/", "bin/busybox", "bin/sh", "usr/bin/env", "sbin/init", "etc/passwd"}},
		{"new directory", []string{"opt/x/tool"}, "", []string{"opt/", "opt/x/", "opt/x/tool"}},
		{"escape", []string{"../evil"}, "outside the image root", nil},
		{"absolute", []string{"/etc/shadow"}, "outside the image root", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := layerEntries([]byte("binary"), tt.applets)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("layerEntries(%v) error = %v, want %q", tt.applets, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]entry{}
			for _, e := range entries {
				if _, dup := names[e.hdr.Name]; dup {
					t.Errorf("duplicate entry %s", e.hdr.Name)
				}
				names[e.hdr.Name] = e
			}
			for _, w := range tt.want {
				if _, ok := names[w]; !ok {
					t.Errorf("no entry %s", w)
				}
			}
			if names["bin/busybox"].hdr.Typeflag != tar.TypeReg {
				t.Errorf("bin/busybox is not a regular file")
			}
			if e := names["tmp/"]; e.hdr.Mode != 0o1777 {
				t.Errorf("tmp mode = %o, want 1777", e.hdr.Mode)
			}
		})
	}
}

func TestBuildIsReproducible(t *testing.T) {
	bb := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(bb, []byte("not really busybox"), 0o755)
	applets := []string{"bin/sh", "usr/bin/env"}
	a, err := buildImage(bb, applets)
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildImage(bb, applets)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds gave digests %s and %s", da, db)
	}
	cf, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Cmd, []string{"sh"}) || !slices.Equal(cf.Config.Env, []string{defaultPath}) {
		t.Errorf("config Cmd %v Env %v", cf.Config.Cmd, cf.Config.Env)
	}
	tr := tar.NewReader(mutate.Extract(a))
	links := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeLink {
			links[h.Name] = h.Linkname
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s has mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
	}
	if links["bin/sh"] != "bin/busybox" || links["usr/bin/env"] != "bin/busybox" {
		t.Errorf("applet links = %v, want hard links to bin/busybox", links)
	}
}

// TestRunLoadsInBothFormats builds the real demo image and loads both
// archives into a store: same image, tag and config either way.
func TestRunLoadsInBothFormats(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static is not installed (/bin/busybox missing)")
	}
	dir := t.TempDir()
	s, err := images.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range []images.Format{images.FormatDocker, images.FormatOCI} {
		out := filepath.Join(dir, string(f)+".tar")
		if err := run(out, "busybox:latest", "/bin/busybox", f); err != nil {
			t.Fatalf("run(%s): %v", f, err)
		}
		fh, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := s.Load(context.Background(), fh)
		fh.Close()
		if err != nil {
			t.Fatalf("loading the %s archive: %v", f, err)
		}
		if len(imgs) != 1 || !slices.Equal(imgs[0].RepoTags, []string{"busybox:latest"}) || !slices.Equal(imgs[0].Config.Cmd, []string{"sh"}) {
			t.Fatalf("loaded %+v", imgs)
		}
		ids = append(ids, imgs[0].ID)
	}
	if ids[0] != ids[1] {
		t.Errorf("docker and OCI archives give image IDs %s and %s", ids[0], ids[1])
	}
	if err := run(filepath.Join(dir, "x.tar"), "Not Valid", "/bin/busybox", images.FormatDocker); err == nil {
		t.Errorf("run with an invalid tag succeeded")
	}
	if err := run(filepath.Join(dir, "y.tar"), "busybox", filepath.Join(dir, "nope"), images.FormatDocker); err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Errorf("run with a missing binary: %v, want a hint naming busybox-static", err)
	}
}
