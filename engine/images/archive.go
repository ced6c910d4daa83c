package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vmctl/vmctl/engine/errs"
)

// annotationContainerdName is where containerd's exporter (and Docker 25+)
// put the full image name; their ref.name annotation holds only the tag.
const annotationContainerdName = "io.containerd.image.name"

// ErrBadArchive classifies an input that is not a readable image archive.
var ErrBadArchive = errors.New("not a valid image archive")

// archiveFiles maps each file name in an archive to the digest of its
// content, which is staged as a blob under that digest.
type archiveFiles map[string]v1.Hash

// Load reads an image archive from r, either `docker save` output (with
// manifest.json; plain or gzip-compressed) or an OCI image layout in a tar
// (oci-layout and index.json), verifies every image in it and adds them to
// the store, moving any tags they carry. Nothing in the store changes unless
// every image verifies.
func (s *Store) Load(ctx context.Context, r io.Reader) ([]Image, error) {
	loaded, err := s.LoadArchive(ctx, r)
	if err != nil {
		return nil, err
	}
	out := make([]Image, len(loaded))
	for i, l := range loaded {
		out[i] = l.Image
	}
	return out, nil
}

// LoadedImage is an image a load stored.
type LoadedImage struct {
	Image
	// Tags are the names the archive gave the image (familiar, sorted),
	// which `docker load` reports; Image.RepoTags also has any tags the
	// image had in the store before.
	Tags []string
}

// LoadArchive is Load, saying which tags came from the archive.
func (s *Store) LoadArchive(ctx context.Context, r io.Reader) ([]LoadedImage, error) {
	st, err := s.newStage(ctx)
	if err != nil {
		return nil, err
	}
	defer st.remove()
	files, err := st.readArchive(ctx, r)
	if err != nil {
		return nil, badInput(err)
	}
	var cands []candidate
	if _, ok := files["manifest.json"]; ok {
		cands, err = st.dockerImages(ctx, files)
	} else if _, ok := files["index.json"]; ok {
		cands, err = st.ociImages(ctx, files)
	} else {
		err = fmt.Errorf("%w: it has neither manifest.json nor index.json", ErrBadArchive)
	}
	if err != nil {
		return nil, badInput(err)
	}
	if len(cands) == 0 {
		return nil, badInput(fmt.Errorf("%w: it contains no images", ErrBadArchive))
	}
	imgs, err := s.commit(ctx, st, cands)
	if err != nil {
		return nil, err
	}
	tags := map[string][]string{}
	for _, c := range cands {
		for _, t := range c.tags {
			if f := familiarString(t); !slices.Contains(tags[c.config.String()], f) {
				tags[c.config.String()] = append(tags[c.config.String()], f)
			}
		}
	}
	out := make([]LoadedImage, len(imgs))
	for i, img := range imgs {
		out[i] = LoadedImage{Image: img, Tags: tags[img.ID]}
		slices.Sort(out[i].Tags)
	}
	return out, nil
}

// badInput says that an archive could not be read or did not verify,
// classified as the caller's bad input (a daemon answers 400), unless the
// load was cancelled.
func badInput(err error) error {
	err = fmt.Errorf("loading image archive: %w", err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return errs.Class(errdefs.ErrInvalidArgument, err)
}

// readArchive stages every regular file of the tar stream r (gunzipping it
// first if needed) as a blob and resolves symlinks and hardlinks between
// entries, which legacy `docker save` uses for shared layers. A file named
// blobs/sha256/<hex> must hash to <hex>.
func (st *stage) readArchive(ctx context.Context, r io.Reader) (archiveFiles, error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(2); bytes.Equal(head, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	files := archiveFiles{}
	links := map[string]string{}
	tail := &tailReader{r: r}
	tr := tar.NewReader(tail)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// archive/tar also reports a clean EOF when the input stops at a
			// header boundary; only the end-of-archive marker (two zero
			// blocks) tells a whole archive from a cut one.
			if tail.n > 0 && !tail.endsWithMarker() {
				return nil, fmt.Errorf("%w: it is truncated (no end-of-archive marker)", ErrBadArchive)
			}
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: it is truncated", ErrBadArchive)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
		}
		name := cleanArchiveName(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg:
			h, n, err := st.blobs.writeBlob(tr)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: it is truncated in %s", ErrBadArchive, hdr.Name)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: reading %s: %w", ErrBadArchive, hdr.Name, err)
			}
			if n != hdr.Size {
				return nil, fmt.Errorf("%w: %s is truncated", ErrBadArchive, hdr.Name)
			}
			if want, ok := digestFromBlobPath(name); ok && want != h {
				return nil, fmt.Errorf("%w: %s is corrupt: its content has digest %s", ErrBadArchive, hdr.Name, h)
			}
			files[name] = h
		case tar.TypeSymlink:
			links[name] = cleanArchiveName(path.Join(path.Dir(name), hdr.Linkname))
		case tar.TypeLink:
			links[name] = cleanArchiveName(hdr.Linkname)
		}
	}
	for name, target := range links {
		// Follow a short chain of links; loops and dangling links are skipped.
		for range 8 {
			if next, ok := links[target]; ok {
				target = next
				continue
			}
			break
		}
		if h, ok := files[target]; ok {
			files[name] = h
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: it contains no files", ErrBadArchive)
	}
	return files, nil
}

func cleanArchiveName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// digestFromBlobPath recognises blobs/sha256/<hex>, the OCI layout name.
func digestFromBlobPath(name string) (v1.Hash, bool) {
	rest, ok := strings.CutPrefix(name, "blobs/sha256/")
	if !ok || !hexID.MatchString(rest) {
		return v1.Hash{}, false
	}
	return v1.Hash{Algorithm: "sha256", Hex: rest}, true
}

// digestFromDockerName recognises the names docker save and
// go-containerregistry give content-addressed files: "<hex>.json",
// "sha256:<hex>", "<hex>.tar.gz", "blobs/sha256/<hex>".
func digestFromDockerName(name string) (v1.Hash, bool) {
	if h, ok := digestFromBlobPath(name); ok {
		return h, true
	}
	base := strings.TrimPrefix(name, "sha256:")
	for _, ext := range []string{".json", ".tar.gz", ".tar"} {
		base = strings.TrimSuffix(base, ext)
	}
	if !hexID.MatchString(base) {
		return v1.Hash{}, false
	}
	return v1.Hash{Algorithm: "sha256", Hex: base}, true
}

func (st *stage) fileSize(h v1.Hash) (int64, error) {
	fi, err := os.Stat(st.blobs.path(h))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// dockerImages turns the entries of a `docker save` manifest.json into
// candidates. Such archives carry no image manifest, so one is written: the
// layers are kept as they are in the archive (usually uncompressed tar).
func (st *stage) dockerImages(ctx context.Context, files archiveFiles) ([]candidate, error) {
	raw, err := st.blobs.readSmall(files["manifest.json"])
	if err != nil {
		return nil, err
	}
	var entries tarball.Manifest
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %w", ErrBadArchive, err)
	}
	var out []candidate
	for _, e := range entries {
		desc, err := st.dockerManifest(files, e)
		if err != nil {
			return nil, err
		}
		c, err := st.verifyImage(ctx, desc, checkDiffIDs)
		if err != nil {
			return nil, err
		}
		for _, t := range e.RepoTags {
			tag, err := ParseTag(t)
			if err != nil {
				return nil, fmt.Errorf("%w: manifest.json names %q: %w", ErrBadArchive, t, err)
			}
			c.tags = append(c.tags, tag.Name())
		}
		out = append(out, c)
	}
	return out, nil
}

// lookup finds a file the archive's manifest refers to and, when its name
// carries a digest, checks it.
func (st *stage) lookup(files archiveFiles, name string) (v1.Descriptor, error) {
	h, ok := files[cleanArchiveName(name)]
	if !ok {
		return v1.Descriptor{}, fmt.Errorf("%w: manifest.json refers to %q, which is not in the archive", ErrBadArchive, name)
	}
	if want, ok := digestFromDockerName(cleanArchiveName(name)); ok && want != h {
		return v1.Descriptor{}, fmt.Errorf("%w: %s is corrupt: its content has digest %s", ErrBadArchive, name, h)
	}
	size, err := st.fileSize(h)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{Digest: h, Size: size}, nil
}

func (st *stage) dockerManifest(files archiveFiles, e tarball.Descriptor) (v1.Descriptor, error) {
	cfg, err := st.lookup(files, e.Config)
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg.MediaType = types.OCIConfigJSON
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfg, Layers: []v1.Descriptor{}}
	for _, lp := range e.Layers {
		ld, err := st.lookup(files, lp)
		if err != nil {
			return v1.Descriptor{}, err
		}
		ld.MediaType, err = st.sniffLayer(ld.Digest)
		if err != nil {
			return v1.Descriptor{}, err
		}
		m.Layers = append(m.Layers, ld)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, err := st.blobs.writeBytes(raw)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(raw)), Digest: h}, nil
}

func (st *stage) sniffLayer(h v1.Hash) (types.MediaType, error) {
	f, err := st.blobs.open(h)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	return layerMediaTypeOf(head[:n]), nil
}

// maxIndexDepth bounds nested indexes in an OCI archive.
const maxIndexDepth = 4

// ociImages turns the entries of an OCI layout's index.json into
// candidates, choosing this machine's platform from multi-platform indexes.
func (st *stage) ociImages(ctx context.Context, files archiveFiles) ([]candidate, error) {
	raw, err := st.blobs.readSmall(files["index.json"])
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: index.json: %w", ErrBadArchive, err)
	}
	var out []candidate
	for _, d := range idx.Manifests {
		desc, err := st.pickManifest(d, 0)
		if err != nil {
			return nil, err
		}
		c, err := st.verifyImage(ctx, desc, checkDiffIDs)
		if err != nil {
			return nil, err
		}
		ref := d.Annotations[annotationContainerdName]
		if ref == "" {
			ref = d.Annotations[ocispec.AnnotationRefName]
		}
		if ref != "" {
			tag, err := ParseTag(ref)
			if err != nil {
				return nil, fmt.Errorf("%w: index.json names %q: %w", ErrBadArchive, ref, err)
			}
			c.tags = []string{tag.Name()}
		}
		out = append(out, c)
	}
	return out, nil
}

// pickManifest returns d if it is an image manifest, or the manifest for
// linux on this architecture from the index d names.
func (st *stage) pickManifest(d v1.Descriptor, depth int) (v1.Descriptor, error) {
	if d.MediaType.IsImage() {
		return d, nil
	}
	if !d.MediaType.IsIndex() {
		return v1.Descriptor{}, fmt.Errorf("%w: index.json lists %s of unsupported type %q", ErrBadArchive, d.Digest, d.MediaType)
	}
	if depth >= maxIndexDepth {
		return v1.Descriptor{}, fmt.Errorf("%w: indexes nested deeper than %d", ErrBadArchive, maxIndexDepth)
	}
	if err := st.checkBlob(d, "index"); err != nil {
		return v1.Descriptor{}, err
	}
	raw, err := st.blobs.readSmall(d.Digest)
	if err != nil {
		return v1.Descriptor{}, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("%w: index %s: %w", ErrBadArchive, d.Digest, err)
	}
	want := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	for _, m := range idx.Manifests {
		if m.MediaType.IsIndex() {
			if got, err := st.pickManifest(m, depth+1); err == nil {
				return got, nil
			}
			continue
		}
		if m.Platform == nil || m.Platform.Satisfies(want) {
			return m, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w: index %s has no image for %s/%s", ErrBadArchive, d.Digest, want.OS, want.Architecture)
}

// tailReader remembers the last two tar blocks read through it.
type tailReader struct {
	r    io.Reader
	n    int64
	tail [1024]byte
}

func (t *tailReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n >= len(t.tail) {
		copy(t.tail[:], p[n-len(t.tail):n])
	} else if n > 0 {
		copy(t.tail[:], t.tail[n:])
		copy(t.tail[len(t.tail)-n:], p[:n])
	}
	t.n += int64(n)
	return n, err
}

func (t *tailReader) endsWithMarker() bool {
	if t.n < int64(len(t.tail)) {
		return false
	}
	for _, b := range t.tail {
		if b != 0 {
			return false
		}
	}
	return true
}
