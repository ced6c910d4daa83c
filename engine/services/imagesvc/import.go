package imagesvc

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmctl/vmctl/engine/build"
	"github.com/vmctl/vmctl/engine/errs"
)

// ImportRequest is docker import's: a root file system as a tar
// (compressed or not), made an image of one layer.
type ImportRequest struct {
	Source  io.Reader
	Tag     string   // optional REPO[:TAG]
	Changes []string // Dockerfile instructions (--change), as for commit
	Message string   // the history's comment
}

// Import makes an image of a root file system tar, as docker import does
// (POST /images/create?fromSrc=-): one layer, the platform linux/amd64,
// the --change instructions applied. The tar is read whole and checked
// before anything is stored.
func (s *Service) Import(ctx context.Context, req ImportRequest) (Image, error) {
	if req.Tag != "" {
		if err := CheckTag(req.Tag); err != nil {
			return Image{}, errs.New(errdefs.ErrInvalidArgument, "invalid reference format: %v", err)
		}
	}
	cfg := &v1.ConfigFile{OS: "linux", Architecture: "amd64", Created: v1.Time{Time: time.Now().UTC()}}
	if err := build.ApplyChanges(cfg, req.Changes); err != nil {
		return Image{}, err
	}
	dir, release, err := s.cfg.Store.Scratch(ctx, "import-")
	if err != nil {
		return Image{}, err
	}
	defer release()
	// The layer is stored from the plain tar, whatever compression the
	// archive came in (docker import takes gzip, bzip2 and xz).
	path := filepath.Join(dir, "layer.tar")
	f, err := os.Create(path)
	if err != nil {
		return Image{}, err
	}
	src, err := build.Decompress(req.Source)
	if err == nil {
		var n int64
		n, err = io.Copy(f, io.LimitReader(src, maxImportBytes+1))
		if err == nil && n > maxImportBytes {
			err = errs.New(errdefs.ErrInvalidArgument, "the imported archive unpacks to more than %d bytes", int64(maxImportBytes))
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			return Image{}, err
		}
		return Image{}, errs.New(errdefs.ErrInvalidArgument, "reading the imported archive: %v", err)
	}
	if err := checkTar(path); err != nil {
		return Image{}, errs.New(errdefs.ErrInvalidArgument, "the imported archive is not a tar (plain, gzip, bzip2 or xz): %v", err)
	}
	layer, err := tarball.LayerFromFile(path)
	if err != nil {
		return Image{}, err
	}
	comment := req.Message
	if comment == "" {
		comment = "Imported from -"
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{Created: cfg.Created, Comment: comment}})
	if err != nil {
		return Image{}, err
	}
	appended, err := img.ConfigFile()
	if err != nil {
		return Image{}, err
	}
	cfg.RootFS, cfg.History = appended.RootFS, appended.History
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return Image{}, err
	}
	var tags []string
	if req.Tag != "" {
		tags = []string{req.Tag}
	}
	stored, err := s.cfg.Store.Add(ctx, img, tags...)
	if err != nil {
		return Image{}, err
	}
	s.publish("import", stored.ID, firstTag(req.Tag, stored.ID))
	return stored, nil
}

// maxImportBytes caps what an imported archive unpacks to.
const maxImportBytes = 64 << 30

// checkTar reads the plain tar at path to its end.
func checkTar(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	n := 0
	for {
		_, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return errors.New("it holds no files")
			}
			return nil
		}
		if err != nil {
			return err
		}
		n++
	}
}

func firstTag(tag, id string) string {
	if tag != "" {
		return tag
	}
	return strings.TrimPrefix(id, "sha256:")
}
