// Command mkimage builds vmctl's demo image, "busybox:latest", from a static
// busybox binary (Debian's busybox-static) without a registry or a Docker
// engine, and writes it as an image archive that `vmctl load` (or
// `docker load`) accepts.
//
// The image has one layer: bin/busybox, every applet of `busybox
// --list-full` as a hard link to it, etc/passwd and etc/group (root,
// nobody), and the usual top-level directories. Every timestamp is fixed, so
// the same busybox binary always gives the same image digest.
//
//	go run ./scripts/mkimage -o build/busybox.tar [-tag busybox:latest] [-busybox /bin/busybox] [-format docker|oci]
//
// It does not fetch anything and does not load the image anywhere.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/vmctl/vmctl/engine/images"
)

// epoch is the mtime of every file and the image's creation time. Any fixed
// value keeps the digest reproducible; this one is Debian 12's release day.
var epoch = time.Date(2023, 6, 10, 0, 0, 0, 0, time.UTC)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	out := flag.String("o", "build/busybox.tar", "output archive")
	tag := flag.String("tag", "busybox:latest", "image name and tag")
	bb := flag.String("busybox", "/bin/busybox", "static busybox binary")
	format := flag.String("format", string(images.FormatDocker), "archive format: docker or oci")
	flag.Parse()
	if err := run(*out, *tag, *bb, images.Format(*format)); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, tag, busybox string, format images.Format) error {
	if _, err := images.ParseTag(tag); err != nil {
		return err
	}
	applets, err := listApplets(busybox)
	if err != nil {
		return err
	}
	img, err := buildImage(busybox, applets)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	// Write beside the target and rename, so a failed run leaves no half archive.
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := images.WriteArchive(f, format, []images.NamedImage{{Tag: tag, Image: img}}); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	id, _ := img.ConfigName()
	fmt.Printf("wrote %s (%s, %s, %d applets, image ID %s)\n", out, tag, format, len(applets), id)
	return nil
}

// listApplets asks busybox where each applet lives, e.g. "usr/bin/env".
func listApplets(busybox string) ([]string, error) {
	if _, err := os.Stat(busybox); err != nil {
		return nil, fmt.Errorf("busybox binary %s not found: install busybox-static or pass -busybox", busybox)
	}
	b, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w (is it a busybox binary?)", busybox, err)
	}
	return strings.Fields(string(b)), nil
}

// entry is one file of the layer.
type entry struct {
	hdr  tar.Header
	data []byte
}

func dir(name string, mode int64) entry {
	return entry{hdr: tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode}}
}

func file(name string, mode int64, data []byte) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}, data: data}
}

// layerEntries lays out the root filesystem: directories first (parents
// before children), then busybox, then its applet links.
func layerEntries(busybox []byte, applets []string) ([]entry, error) {
	dirs := map[string]int64{
		"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
		"etc": 0o755, "home": 0o755, "root": 0o700, "tmp": 0o1777, "var": 0o755,
		"dev": 0o755, "proc": 0o555, "sys": 0o555,
	}
	links := map[string]bool{}
	for _, a := range applets {
		clean := path.Clean(a)
		if path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, fmt.Errorf("busybox lists an applet at %q, outside the image root", a)
		}
		if clean == "bin/busybox" {
			continue
		}
		links[clean] = true
		for d := path.Dir(clean); d != "."; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
	}
	var out []entry
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		out = append(out, dir(d, dirs[d]))
	}
	out = append(out,
		file("bin/busybox", 0o755, busybox),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")),
		file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")),
	)
	for _, l := range slices.Sorted(maps.Keys(links)) {
		out = append(out, entry{hdr: tar.Header{Name: l, Typeflag: tar.TypeLink, Linkname: "bin/busybox", Mode: 0o755}})
	}
	return out, nil
}

// layerTar writes the entries as a tar with fixed owners and times.
func layerTar(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = epoch
		h.Uid, h.Gid = 0, 0
		h.Uname, h.Gname = "root", "root"
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildImage makes the image from the busybox binary at busyboxPath and the
// applet paths it reports.
func buildImage(busyboxPath string, applets []string) (v1.Image, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, err
	}
	entries, err := layerEntries(bin, applets)
	if err != nil {
		return nil, err
	}
	raw, err := layerTar(entries)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "mkimage: busybox static binary with applet links",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{defaultPath}
	return mutate.ConfigFile(img, cf)
}
