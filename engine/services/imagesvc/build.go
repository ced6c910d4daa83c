package imagesvc

// Builds: a Dockerfile and its context (a tar) into an image
// (engine/build).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmctl/vmctl/engine/build"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/flock"
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
	tmp := filepath.Join(s.cfg.Store.Root(), "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return BuildResult{}, err
	}
	// The store's scratch directory: a build that dies leaves its
	// directory unlocked, and the next Open of the store removes it.
	dir, err := os.MkdirTemp(tmp, "build-")
	if err != nil {
		return BuildResult{}, err
	}
	lock, err := flock.Acquire(ctx, filepath.Join(dir, "lock"))
	if err != nil {
		os.RemoveAll(dir)
		return BuildResult{}, err
	}
	defer lock.Release()
	defer os.RemoveAll(dir)
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
