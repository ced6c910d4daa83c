package imagesvc

// Builds: a Dockerfile and its context (a tar) into an image
// (engine/build).

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmctl/vmctl/engine/build"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/images"
	"github.com/vmctl/vmctl/engine/rootfs"
)

// BuildRequest is a build: docker build's options.
type BuildRequest = build.Request

// BuildResult is a finished build.
type BuildResult = build.Result

// MaxContext caps a build context, unpacked.
var MaxContext int64 = 2 << 30

// Build unpacks the context tar (plain or compressed with gzip, bzip2 or
// xz) into scratch space and builds req from it, writing the classic
// builder's lines to out. Scratch space is removed whether or not the
// build succeeds; a failed build tags nothing.
func (s *Service) Build(ctx context.Context, req BuildRequest, contextTar io.Reader, out io.Writer) (BuildResult, error) {
	// The store's scratch space: a build that dies leaves its directory
	// unlocked, and the next Open of the store removes it.
	dir, release, err := s.cfg.Store.Scratch(ctx, "build-")
	if err != nil {
		return BuildResult{}, err
	}
	defer release()
	ctxDir := filepath.Join(dir, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		return BuildResult{}, err
	}
	rd, err := build.Decompress(contextTar)
	if err != nil {
		return BuildResult{}, errs.New(errdefs.ErrInvalidArgument, "reading the build context: %v", err)
	}
	limited := &limitReader{r: rd, left: MaxContext}
	if _, err := rootfs.Extract(ctx, limited, ctxDir); err != nil {
		if limited.over {
			return BuildResult{}, errs.New(errdefs.ErrInvalidArgument, "the build context is larger than %d bytes", MaxContext)
		}
		return BuildResult{}, errs.New(errdefs.ErrInvalidArgument, "reading the build context: %v", err)
	}
	req.ContextDir = ctxDir
	b := &build.Builder{Images: buildImages{s}, Runner: s.cfg.BuildRunner, TempDir: filepath.Join(dir, "steps")}
	res, err := b.Build(ctx, req, out)
	if err != nil {
		return res, err
	}
	for _, t := range req.Tags {
		s.publish("tag", res.ID, fullName(t))
	}
	return res, nil
}

func fullName(t string) string {
	if tag, err := images.ParseTag(t); err == nil {
		return images.FamiliarName(tag)
	}
	return t
}

// buildImages is build.Images over the service's store.
type buildImages struct{ s *Service }

func (b buildImages) Resolve(ctx context.Context, ref string) (images.Image, error) {
	return b.s.cfg.Store.Resolve(ctx, ref)
}

func (b buildImages) Pull(ctx context.Context, ref string) (images.Image, error) {
	p, err := b.s.Pull(ctx, ref, RemoteOptions{})
	return p.Image, err
}

func (b buildImages) AddBuilt(ctx context.Context, img v1.Image, key string, tags ...string) (images.Image, error) {
	return b.s.cfg.Store.AddBuilt(ctx, img, key, tags...)
}

func (b buildImages) BuildCache(ctx context.Context, key string) (images.Image, error) {
	return b.s.cfg.Store.BuildCache(ctx, key)
}

// limitReader fails once more than left bytes were read.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

var errTooLarge = errors.New("too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		l.over = true
		return 0, fmt.Errorf("build context: %w", errTooLarge)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// CheckTag checks that t is a valid image name with an optional tag.
func CheckTag(t string) error {
	_, err := images.ParseTag(t)
	return err
}

// Containers is what a commit needs of the container service.
type Containers interface {
	Get(ref string) (*containers.Container, error)
	ExportChanges(ctx context.Context, ref string, sincePrevious bool, w io.Writer, limit int64) (int, error)
}

// CommitRequest is docker commit's.
type CommitRequest struct {
	Container string
	// Tag names the image ("repo[:tag]"); empty leaves it untagged.
	Tag     string
	Comment string
	Author  string
	// Changes are --change instructions (CMD, ENV, ...).
	Changes []string
}

// MaxCommitLayer caps the layer a commit reads out of a container.
var MaxCommitLayer int64 = 16 << 30

// Commit makes an image of a container: its image with one more
// layer, what the container changed (read out of the guest by its agent),
// and the container's configuration (command, environment, working
// directory, user), with Changes applied on top.
func (s *Service) Commit(ctx context.Context, req CommitRequest) (Image, error) {
	if s.cfg.Containers == nil {
		return Image{}, errs.New(errdefs.ErrNotImplemented, "commit needs the container service")
	}
	if req.Tag != "" {
		if err := CheckTag(req.Tag); err != nil {
			return Image{}, errs.New(errdefs.ErrInvalidArgument, "invalid reference format: %v", err)
		}
	}
	c, err := s.cfg.Containers.Get(req.Container)
	if err != nil {
		return Image{}, err
	}
	base, err := s.cfg.Store.Resolve(ctx, c.Config.ImageID)
	if err != nil {
		return Image{}, fmt.Errorf("the container's image: %w", err)
	}
	cf, err := base.Content().ConfigFile()
	if err != nil {
		return Image{}, err
	}
	cfg := cf.DeepCopy()
	cfg.Config.Env = c.Config.Env
	cfg.Config.WorkingDir = c.Config.WorkingDir
	cfg.Config.User = c.Config.User
	if ep := cfg.Config.Entrypoint; len(c.Config.Args) >= len(ep) && slices.Equal(c.Config.Args[:len(ep)], ep) {
		cfg.Config.Cmd = c.Config.Args[len(ep):]
	} else {
		cfg.Config.Entrypoint, cfg.Config.Cmd = nil, c.Config.Args
	}
	if err := build.ApplyChanges(cfg, req.Changes); err != nil {
		return Image{}, err
	}
	var stored Image
	err = s.withChanges(ctx, c.ID, func(_ *containers.Container, _ Image, f *os.File) error {
		layer, err := tarball.LayerFromFile(f.Name())
		if err != nil {
			return err
		}
		img, err := mutate.Append(base.Content(), mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: time.Now().UTC()}, CreatedBy: strings.Join(c.Config.Args, " "), Comment: req.Comment, Author: req.Author}})
		if err != nil {
			return err
		}
		appended, err := img.ConfigFile()
		if err != nil {
			return err
		}
		cfg.RootFS, cfg.History = appended.RootFS, appended.History
		cfg.Created = v1.Time{Time: time.Now().UTC()}
		cfg.Author = req.Author
		cfg.Container = c.ID
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			return err
		}
		var tags []string
		if req.Tag != "" {
			tags = []string{req.Tag}
		}
		stored, err = s.cfg.Store.Add(ctx, img, tags...)
		return err
	})
	if err != nil {
		return Image{}, err
	}
	s.publish("commit", stored.ID, c.Name)
	return stored, nil
}

// Change is one path docker diff lists.
type Change struct {
	Path string
	// Kind is docker's: 0 modified, 1 added, 2 deleted.
	Kind uint8
}

// withChanges reads a container's changes into a scratch file
// (checked as a build step's are) and calls fn with the container, its
// image and the layer of its changes.
func (s *Service) withChanges(ctx context.Context, ref string, fn func(c *containers.Container, base Image, layer *os.File) error) error {
	if s.cfg.Containers == nil {
		return errs.New(errdefs.ErrNotImplemented, "this engine has no container service")
	}
	c, err := s.cfg.Containers.Get(ref)
	if err != nil {
		return err
	}
	base, err := s.cfg.Store.Resolve(ctx, c.Config.ImageID)
	if err != nil {
		return fmt.Errorf("the container's image: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.cfg.Store.Root(), "tmp"), "changes-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := s.cfg.Containers.ExportChanges(ctx, c.ID, false, tmp, MaxCommitLayer); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := build.CheckLayer(tmp); err != nil {
		return fmt.Errorf("the container's changes: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return fn(c, base, tmp)
}

// Diff lists what a container changed in its image's file system:
// added, modified (a directory whose entries changed is modified) and
// deleted paths, sorted.
func (s *Service) Diff(ctx context.Context, ref string) ([]Change, error) {
	var out []Change
	err := s.withChanges(ctx, ref, func(_ *containers.Container, base Image, layer *os.File) error {
		inBase := map[string]bool{}
		tr := tar.NewReader(mutate.Extract(base.Content()))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			inBase["/"+strings.Trim(h.Name, "/")] = true
		}
		seen := map[string]bool{}
		lr := tar.NewReader(layer)
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			p := "/" + strings.Trim(h.Name, "/")
			dir, name := path.Split(p)
			c := Change{Path: p, Kind: 1}
			switch {
			case name == ".wh..wh..opq":
				continue
			case strings.HasPrefix(name, ".wh."):
				c = Change{Path: path.Join(dir, strings.TrimPrefix(name, ".wh.")), Kind: 2}
			case inBase[p]:
				c.Kind = 0
			}
			if !seen[c.Path] {
				seen[c.Path] = true
				out = append(out, c)
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// Export writes a container's whole file system, its image's with
// its changes, as a tar to w (docker export).
func (s *Service) Export(ctx context.Context, ref string, w io.Writer) error {
	return s.withChanges(ctx, ref, func(_ *containers.Container, base Image, layer *os.File) error {
		l, err := tarball.LayerFromFile(layer.Name())
		if err != nil {
			return err
		}
		img, err := mutate.AppendLayers(base.Content(), l)
		if err != nil {
			return err
		}
		rc := mutate.Extract(img)
		defer rc.Close()
		_, err = io.Copy(w, rc)
		return err
	})
}
