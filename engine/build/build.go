// Package build makes images from Dockerfiles, as docker build's classic
// builder does: one image per instruction, each found again in a cache
// the next time the same instruction runs on the same parent with the same
// content, and the last one tagged.
//
// Dockerfiles are parsed by BuildKit's frontend packages (parser,
// instructions, shell for variable expansion) and .dockerignore by
// moby/patternmatcher; nothing here parses Dockerfile syntax itself.
//
// What it builds:
//   - stages: FROM an image (pulled if missing, or always with Pull), a
//     previous stage or scratch, with ARGs declared before the first FROM
//     expanded in it; stages are built in order up to the target (the last
//     one unless Request.Target names another), as the classic builder
//     does;
//   - the image configuration instructions: ENV, ARG (with --build-arg),
//     LABEL, WORKDIR, USER, CMD, ENTRYPOINT (which clears an inherited
//     CMD), EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD (and
//     the base image's ONBUILD triggers, run after its FROM), MAINTAINER;
//   - COPY and ADD from the context or, with --from, from a stage or an
//     image, with globs, --chown (names resolved in the image's
//     /etc/passwd and /etc/group) and --chmod; ADD unpacks a local tar
//     (plain, gzip, bzip2 or xz) and refuses URLs (builds have no network);
//     each makes one layer, a real OCI tar the host writes from the files
//     it reads;
//   - the cache: a step's key is the parent image, the instruction, the
//     configuration it results in, and for COPY and ADD a hash of every
//     file's name, type, mode, owner and content (not its mtime); a step
//     whose key the store has is not run again.
//
// RUN needs a build VM (the step runs in a microVM through the agent and
// its changes come back as a tar) and is refused with a clear error until
// then.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/images"
)

// MaxDockerfile bounds the Dockerfile read from a context.
const MaxDockerfile = 4 << 20

// Request is one build, as docker build's options name it.
type Request struct {
	// ContextDir is the build context, unpacked.
	ContextDir string
	// Dockerfile is its path in the context; empty means "Dockerfile".
	Dockerfile string
	// Tags name the result ("name[:tag]").
	Tags []string
	// BuildArgs are --build-arg values; a nil value takes the variable
	// from Env (docker build --build-arg NAME without a value).
	BuildArgs map[string]*string
	// Target is the stage to build up to; empty means the last.
	Target string
	// NoCache runs every step again.
	NoCache bool
	// Pull pulls every base image, even one the store has.
	Pull bool
	// Labels are added to the final image.
	Labels map[string]string
	// Network is RUN's network: "default" (or empty) or "none".
	Network string
}

// Images is what a build needs of the image store.
type Images interface {
	Resolve(ctx context.Context, ref string) (images.Image, error)
	// Pull fetches ref from its registry into the store.
	Pull(ctx context.Context, ref string) (images.Image, error)
	AddBuilt(ctx context.Context, img v1.Image, key string, tags ...string) (images.Image, error)
	BuildCache(ctx context.Context, key string) (images.Image, error)
}

// Builder runs builds over an image store, with scratch space in TempDir.
type Builder struct {
	Images Images
	// Runner runs RUN steps; nil refuses them.
	Runner  Runner
	TempDir string
	// Now gives the creation time of the images built; nil is time.Now.
	Now func() time.Time
}

// Result is a finished build.
type Result struct {
	// ID is the final image's ID ("sha256:...").
	ID string
	// Steps and Cached count the steps run and the steps found in the
	// cache.
	Steps, Cached int
}

// Build runs req, writing the classic builder's progress lines to out
// ("Step 1/3 : FROM busybox", " ---> Using cache", " ---> 1a2b3c4d5e6f")
// and the final "Successfully built"/"Successfully tagged" lines. Errors
// wrap errdefs classes: a bad Dockerfile or context is InvalidArgument, a
// missing base image NotFound, RUN NotImplemented.
func (b *Builder) Build(ctx context.Context, req Request, out io.Writer) (Result, error) {
	df, err := readDockerfile(req)
	if err != nil {
		return Result{}, err
	}
	res, err := parser.Parse(strings.NewReader(df))
	if err != nil {
		return Result{}, parseError(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return Result{}, parseError(err)
	}
	if len(stages) == 0 {
		return Result{}, errs.New(errdefs.ErrInvalidArgument, "the Dockerfile has no FROM")
	}
	last := len(stages) - 1
	if req.Target != "" {
		last = -1
		for i, s := range stages {
			if strings.EqualFold(s.Name, req.Target) {
				last = i
				break
			}
		}
		if last < 0 {
			return Result{}, errs.New(errdefs.ErrInvalidArgument, "failed to reach build target %s in Dockerfile", req.Target)
		}
	}
	ignore, err := readIgnore(req.ContextDir)
	if err != nil {
		return Result{}, err
	}
	r := &run{b: b, req: req, out: out, lex: shell.NewLex(res.EscapeToken), escape: res.EscapeToken, ignore: ignore,
		built: map[string]*state{}, used: map[string]bool{}, unpacked: map[string]string{}}
	defer r.cleanup()
	if err := r.metaArgs(metaArgs); err != nil {
		return Result{}, err
	}
	for _, s := range stages[:last+1] {
		r.total += 1 + len(s.Commands)
	}
	var st *state
	for i, s := range stages[:last+1] {
		if st, err = r.stage(ctx, i, s); err != nil {
			return Result{}, err
		}
	}
	// Labels from the request go on the final image, as one more
	// configuration change without a step of its own.
	if len(req.Labels) > 0 {
		cfg := st.cfg.DeepCopy()
		if cfg.Config.Labels == nil {
			cfg.Config.Labels = map[string]string{}
		}
		for k, v := range req.Labels {
			cfg.Config.Labels[k] = v
		}
		if err := r.configStep(ctx, st, "LABEL (build options)", cfg); err != nil {
			return Result{}, err
		}
	}
	id := st.id
	for _, t := range req.Tags {
		if _, err := b.Images.AddBuilt(ctx, st.img, st.key, t); err != nil {
			return Result{}, err
		}
	}
	fmt.Fprintf(out, "Successfully built %s\n", shortID(id))
	for _, t := range req.Tags {
		fmt.Fprintf(out, "Successfully tagged %s\n", fullTag(t))
	}
	return Result{ID: id, Steps: r.step, Cached: r.cached}, nil
}

func readDockerfile(req Request) (string, error) {
	name := req.Dockerfile
	if name == "" {
		name = "Dockerfile"
	}
	root, err := os.OpenRoot(req.ContextDir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	rel, ok := contextPath(name)
	if !ok {
		return "", errs.New(errdefs.ErrInvalidArgument, "the Dockerfile (%s) must be within the build context", name)
	}
	f, err := root.Open(rel)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", errs.New(errdefs.ErrInvalidArgument, "Cannot locate specified Dockerfile: %s", name)
		}
		return "", errs.New(errdefs.ErrInvalidArgument, "reading the Dockerfile %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxDockerfile+1))
	if err != nil {
		return "", errs.New(errdefs.ErrInvalidArgument, "reading the Dockerfile %s: %v", name, err)
	}
	if len(b) > MaxDockerfile {
		return "", errs.New(errdefs.ErrInvalidArgument, "the Dockerfile %s is larger than %d bytes", name, MaxDockerfile)
	}
	return string(b), nil
}

// parseError is a Dockerfile syntax error with its line, as
// "dockerfile parse error on line N: ...".
func parseError(err error) error {
	var le *parser.LocationError
	msg := err.Error()
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 && !strings.Contains(msg, "line ") {
		msg = fmt.Sprintf("dockerfile parse error on line %d: %s", le.Locations[0][0].Start.Line, msg)
	}
	return errs.New(errdefs.ErrInvalidArgument, "%s", msg)
}

// contextPath cleans a path given in a Dockerfile or request to one
// relative to the context root; false if it leaves the context.
func contextPath(p string) (string, bool) {
	c := path.Clean("/" + p)
	if strings.Contains(p, "..") {
		// "../x" cleans to "/x" above; a path that climbs is outside.
		if c2 := path.Clean(p); c2 == ".." || strings.HasPrefix(c2, "../") {
			return "", false
		}
	}
	rel := strings.TrimPrefix(c, "/")
	if rel == "" {
		rel = "."
	}
	return rel, true
}

func shortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func fullTag(t string) string {
	if tag, err := images.ParseTag(t); err == nil {
		return images.FamiliarName(tag)
	}
	return t
}

// scratch is the empty image FROM scratch starts from.
func scratch() (v1.Image, *v1.ConfigFile, error) {
	cfg := &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	return img, cfg, err
}
