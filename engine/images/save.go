package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Format is an image archive format.
type Format string

const (
	// FormatDocker is `docker save` output: manifest.json plus blobs.
	FormatDocker Format = "docker"
	// FormatOCI is an OCI image layout in a tar: oci-layout, index.json, blobs.
	FormatOCI Format = "oci"
)

// NamedImage is an image to archive and the tag to give it; Tag may be
// empty for an untagged image.
type NamedImage struct {
	Tag   string
	Image v1.Image
}

// WriteArchive writes images to w as a tar in the given format. Output is
// deterministic: the same images give the same bytes. Blobs shared by
// several images are written once.
func WriteArchive(w io.Writer, format Format, images []NamedImage) error {
	if format != FormatDocker && format != FormatOCI {
		return fmt.Errorf("unknown archive format %q (want %q or %q)", format, FormatDocker, FormatOCI)
	}
	aw := &archiveWriter{tw: tar.NewWriter(w), written: map[v1.Hash]bool{}}
	var dockerEntries tarball.Manifest
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
	for _, ni := range images {
		var familiar string
		if ni.Tag != "" {
			t, err := ParseTag(ni.Tag)
			if err != nil {
				return err
			}
			familiar = FamiliarName(t)
		}
		entry, desc, err := aw.writeImage(ni.Image)
		if err != nil {
			return err
		}
		if familiar != "" {
			entry.RepoTags = []string{familiar}
			desc.Annotations = map[string]string{ocispec.AnnotationRefName: familiar}
		}
		dockerEntries = append(dockerEntries, entry)
		index.Manifests = append(index.Manifests, desc)
	}
	if format == FormatDocker {
		b, err := json.Marshal(dockerEntries)
		if err != nil {
			return err
		}
		if err := aw.file("manifest.json", b); err != nil {
			return err
		}
	} else {
		layout := []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)
		if err := aw.file(ocispec.ImageLayoutFile, layout); err != nil {
			return err
		}
		b, err := json.Marshal(index)
		if err != nil {
			return err
		}
		if err := aw.file("index.json", b); err != nil {
			return err
		}
	}
	return aw.tw.Close()
}

type archiveWriter struct {
	tw      *tar.Writer
	written map[v1.Hash]bool
	dirs    bool
}

// archiveTime is the fixed mtime of every archive entry, for reproducible output.
var archiveTime = time.Unix(0, 0).UTC()

func (aw *archiveWriter) header(name string, size int64, typ byte) error {
	mode := int64(0o644)
	if typ == tar.TypeDir {
		mode = 0o755
	}
	return aw.tw.WriteHeader(&tar.Header{
		Name: name, Size: size, Mode: mode, Typeflag: typ,
		ModTime: archiveTime, Format: tar.FormatPAX,
	})
}

func (aw *archiveWriter) file(name string, b []byte) error {
	if err := aw.header(name, int64(len(b)), tar.TypeReg); err != nil {
		return err
	}
	_, err := aw.tw.Write(b)
	return err
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// blob writes one content-addressed blob unless it is already in the archive.
func (aw *archiveWriter) blob(h v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	if aw.written[h] {
		return nil
	}
	if !aw.dirs {
		for _, d := range []string{"blobs/", "blobs/sha256/"} {
			if err := aw.header(d, 0, tar.TypeDir); err != nil {
				return err
			}
		}
		aw.dirs = true
	}
	rc, err := open()
	if err != nil {
		return fmt.Errorf("reading blob %s: %w", h, err)
	}
	defer rc.Close()
	if err := aw.header(blobPath(h), size, tar.TypeReg); err != nil {
		return err
	}
	if n, err := io.Copy(aw.tw, rc); err != nil {
		return fmt.Errorf("writing blob %s: %w", h, err)
	} else if n != size {
		return fmt.Errorf("blob %s is %d bytes, its descriptor says %d", h, n, size)
	}
	aw.written[h] = true
	return nil
}

func (aw *archiveWriter) writeImage(img v1.Image) (tarball.Descriptor, v1.Descriptor, error) {
	var entry tarball.Descriptor
	raw, err := img.RawManifest()
	if err != nil {
		return entry, v1.Descriptor{}, fmt.Errorf("reading manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return entry, v1.Descriptor{}, fmt.Errorf("parsing manifest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return entry, v1.Descriptor{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return entry, v1.Descriptor{}, fmt.Errorf("reading config: %w", err)
	}
	if err := aw.blob(m.Config.Digest, int64(len(cfg)), bytesOpener(cfg)); err != nil {
		return entry, v1.Descriptor{}, err
	}
	entry.Config = blobPath(m.Config.Digest)
	for _, ld := range m.Layers {
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return entry, v1.Descriptor{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		if err := aw.blob(ld.Digest, ld.Size, l.Compressed); err != nil {
			return entry, v1.Descriptor{}, err
		}
		entry.Layers = append(entry.Layers, blobPath(ld.Digest))
	}
	mh := sha256Of(raw)
	if err := aw.blob(mh, int64(len(raw)), bytesOpener(raw)); err != nil {
		return entry, v1.Descriptor{}, err
	}
	return entry, v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: mh}, nil
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
