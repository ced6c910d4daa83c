// Package images is vmctl's local image store: content-addressed blobs and
// an index of tagged images, kept as an OCI image layout in one directory
// (oci-layout, index.json, blobs/sha256/...), so standard tools can read it.
//
// It loads `docker save` and OCI-layout archives, verifying every blob
// against its digest and every layer against its diff ID before the store
// changes, and pulls from registries, verifying every blob against its
// digest and size as it arrives but leaving the diff IDs to be checked
// where the image is first unpacked (engine/rootfs), as containerd does;
// writes archives (save) and pushes to registries, blobs
// unchanged; lists, resolves Docker-style references (names, tags, full and
// short IDs), tags, and removes images with garbage collection of blobs
// nothing references any more.
//
// Mutations are serialised across processes by an flock on <root>/lock and
// become visible atomically: blobs are written and fsynced first, then
// index.json is replaced by rename. Readers take no lock; an image removed
// while a reader reads the blobs of the index it read is left out of what
// the reader returns. A crash can leave
// unreferenced blobs, which the next Remove collects, and staging
// directories, which the next Open removes.
//
// It has no CLI or HTTP code (progress is reported through ProgressFunc,
// errors are classified with errdefs for the edges to map), and it does not
// build disks (see engine/rootfs).
package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/vmctl/vmctl/engine/flock"
	"github.com/vmctl/vmctl/internal/atomicfile"
)

// ErrNotFound is returned (wrapped) when a reference names no stored image.
// It is containerd's errdefs.ErrNotFound, so transport layers classify it
// without knowing this package.
var ErrNotFound = errdefs.ErrNotFound

// annotationSize records an image's unpacked layer size, measured when the
// image was verified, so List need not decompress layers.
const annotationSize = "io.vmctl.image.unpacked-size"

// annotationUnverified marks an image whose layers have not been checked
// against its config's diff IDs (a pulled one), so that nothing reading
// the store takes them as checked.
const annotationUnverified = "io.vmctl.image.diff-ids-unverified"

// carriedAnnotations are the annotations of an index entry that describe
// the image rather than the entry, kept when the image is tagged again.
var carriedAnnotations = []string{annotationSize, annotationUnverified, annotationRepoDigests, annotationBuildKey}

// Image is a stored image as users see it.
type Image struct {
	// ID is the digest of the image config ("sha256:..."), as Docker shows it.
	ID string
	// Digest is the digest of the stored manifest.
	Digest string
	// RepoTags are familiar names ("busybox:latest"), sorted.
	RepoTags []string
	// RepoDigests are the registry references ("repo@sha256:...") this
	// image was pulled by or pushed to, familiar form, sorted.
	RepoDigests []string
	Created     time.Time
	// Size is the total size of the unpacked layers in bytes, or of the
	// compressed ones while that is not measured (a pulled image).
	Size int64
	// LayersVerified says whether every layer of the manifest Content
	// reads was checked against the config's diff ID when it was stored,
	// as Load and Add do. A pulled image's layers were checked against
	// their digests only; their diff IDs are checked where they are
	// unpacked (rootfs.ImageDisk), so nothing else may take them as
	// checked while this is false.
	LayersVerified bool
	// BuildCacheKey is the cache key of the build step that made the
	// image, if a build made it; untagged, it is an intermediate image.
	BuildCacheKey string
	OS            string
	Architecture  string
	Config        v1.Config

	content v1.Image
	store   *Store // for RecordUnpacked
}

// Content returns the image's manifest, config and layers, for example for
// mutate.Extract. Its blobs are read lazily from the store; a concurrent
// Remove of the image makes later reads fail.
func (i Image) Content() v1.Image { return i.content }

// Store is an image store rooted at one directory. It is safe for use by
// several goroutines and several processes at once.
type Store struct {
	root  string
	blobs blobDir
}

// Open opens (creating if needed) the store at root and removes staging
// directories left by loads that died.
func Open(root string) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &Store{root: root, blobs: blobDir(filepath.Join(root, "blobs"))}
	for _, d := range []string{root, filepath.Join(root, "blobs", "sha256"), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	l, err := flock.Acquire(context.Background(), s.lockPath())
	if err != nil {
		return nil, fmt.Errorf("opening image store: %w", err)
	}
	defer l.Release()
	if _, err := os.Stat(filepath.Join(root, ocispec.ImageLayoutFile)); errors.Is(err, os.ErrNotExist) {
		layout := []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)
		if err := atomicfile.Write(filepath.Join(root, ocispec.ImageLayoutFile), layout, 0o644); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	if _, err := os.Stat(s.indexPath()); errors.Is(err, os.ErrNotExist) {
		if err := s.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return nil, fmt.Errorf("opening image store: %w", err)
		}
	}
	s.removeStaleStages()
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) lockPath() string  { return filepath.Join(s.root, "lock") }
func (s *Store) indexPath() string { return filepath.Join(s.root, "index.json") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "tmp") }
