package build

// RUN: a step's command runs in a build container (a microVM whose
// container runs nothing of its own and serves the steps as execs), and its
// changes come back from the guest as a layer tar, read by the host only
// as a tar, with size and path checks.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/vmctl/vmctl/engine/errs"
)

// MaxStepLayer caps the changes of one RUN step.
var MaxStepLayer int64 = 8 << 30

// Runner starts build containers. A build without one refuses RUN.
type Runner interface {
	// Start starts a container of image (an ID in the store) that runs
	// nothing of its own, on the default network or with none.
	Start(ctx context.Context, image string, network string) (Container, error)
}

// Container is a running build container.
type Container interface {
	// Run runs p to its end, its output (stdout and stderr) to out, and
	// returns its exit status.
	Run(ctx context.Context, p Process, out io.Writer) (int, error)
	// Changes writes what changed in the container's file system since
	// the previous call (since the start, the first time) to w as a
	// layer tar, at most limit bytes.
	Changes(ctx context.Context, w io.Writer, limit int64) error
	// Remove stops and removes the container and its VM.
	Remove(ctx context.Context) error
}

// Process is one RUN step's command.
type Process struct {
	Args []string
	Env  []string
	Dir  string
	// User is numeric: "UID:GID", or empty for root.
	User string
}

// runStep runs a RUN instruction.
func (r *run) runStep(ctx context.Context, st *state, c *instructions.RunCommand) error {
	if r.b.Runner == nil {
		return errs.New(errdefs.ErrNotImplemented, "%s: RUN needs build VMs, which this engine does not run", text(c))
	}
	if len(c.FlagsUsed) > 0 {
		return errs.New(errdefs.ErrNotImplemented, "%s: RUN --%s is not supported", text(c), strings.Join(c.FlagsUsed, ", --"))
	}
	if len(c.Files) > 0 {
		return errs.New(errdefs.ErrNotImplemented, "%s: RUN with a heredoc is not supported", text(c))
	}
	args := c.CmdLine
	if c.PrependShell {
		args = append(append([]string(nil), st.shell...), strings.Join(c.CmdLine, " "))
	}
	// The build's variables reach the command as its environment, under
	// the stage's ENV, and are part of the step's identity (Docker's
	// "|N K=V ..." prefix of the cached command).
	env := append([]string(nil), st.cfg.Config.Env...)
	var argEnv []string
	for _, kv := range envOf(st.args) {
		k, _, _ := strings.Cut(kv, "=")
		if !hasEnv(env, k) {
			env = append(env, kv)
		}
		argEnv = append(argEnv, kv)
	}
	cfg := st.cfg.DeepCopy()
	key := cacheKey(st.id, text(c), cfg, strings.Join(argEnv, "\x00"))
	if r.fromCache(ctx, st, key, cfg) {
		return nil
	}
	files, err := r.files(ctx, st)
	if err != nil {
		return err
	}
	user, err := numericUser(cfg.Config.User, files)
	if err != nil {
		return errs.New(errdefs.ErrInvalidArgument, "%s: USER %s: %v", text(c), cfg.Config.User, err)
	}
	// The stage's container holds the file system of st's layers as long
	// as only RUN steps (and steps without layers) were taken; a COPY, or
	// a step from the cache, moved the image past it.
	layers := layersKey(st.cfg)
	if st.ctr != nil && st.ctrLayers != layers {
		r.removeContainer(st)
	}
	if st.ctr == nil {
		ctr, err := r.b.Runner.Start(ctx, st.id, r.req.Network)
		if err != nil {
			return fmt.Errorf("starting the build container: %w", err)
		}
		st.ctr, st.ctrLayers = ctr, layers
		r.ctrs = append(r.ctrs, ctr)
	}
	dir := cfg.Config.WorkingDir
	if dir == "" {
		dir = "/"
	}
	code, err := st.ctr.Run(ctx, Process{Args: args, Env: env, Dir: dir, User: user}, r.out)
	if err != nil {
		return err
	}
	if code != 0 {
		return errs.New(errdefs.ErrUnknown, "The command '%s' returned a non-zero code: %d", strings.Join(args, " "), code)
	}
	layerPath, err := r.stepChanges(ctx, st)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return err
	}
	createdBy := strings.Join(args, " ")
	if len(argEnv) > 0 {
		createdBy = fmt.Sprintf("|%d %s %s", len(argEnv), strings.Join(argEnv, " "), createdBy)
	}
	if err := r.commitLayer(ctx, st, cfg, layer, createdBy, key); err != nil {
		return err
	}
	st.ctrLayers = layersKey(st.cfg) // the container holds exactly that
	return nil
}

// stepChanges reads the step's changes out of the container into a layer
// file, checking every entry: a guest is not trusted.
func (r *run) stepChanges(ctx context.Context, st *state) (string, error) {
	dir, err := r.tempDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "layer.tar")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := st.ctr.Changes(ctx, f, MaxStepLayer); err != nil {
		return "", fmt.Errorf("reading the step's changes: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	if err := CheckLayer(f); err != nil {
		return "", fmt.Errorf("the build container's changes: %w", err)
	}
	return p, f.Close()
}

// CheckLayer reads a layer tar from a guest through: entries with relative,
// clean names that stay inside the layer, hard links to entries before
// them, nothing but files, directories, links, devices and fifos.
func CheckLayer(r io.Reader) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(h.Name, "/")
		if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q: not a clean relative path", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		case tar.TypeLink:
			if !seen[h.Linkname] {
				return fmt.Errorf("entry %q: hard link to %q, which the layer does not hold before it", h.Name, h.Linkname)
			}
		default:
			return fmt.Errorf("entry %q: type %q", h.Name, h.Typeflag)
		}
		seen[name] = true
	}
}

func (r *run) removeContainer(st *state) {
	if st.ctr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st.ctr.Remove(ctx)
	for i, c := range r.ctrs {
		if c == st.ctr {
			r.ctrs = append(r.ctrs[:i], r.ctrs[i+1:]...)
			break
		}
	}
	st.ctr = nil
}

func hasEnv(env []string, k string) bool {
	for _, e := range env {
		if name, _, _ := strings.Cut(e, "="); name == k {
			return true
		}
	}
	return false
}

// numericUser resolves USER ("name[:group]" or numbers) to "UID:GID" with
// the image's passwd and group files; empty stays empty (root).
func numericUser(user string, files *tree) (string, error) {
	if user == "" {
		return "", nil
	}
	o, err := parseChown(user, files)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%d", o.uid, o.gid), nil
}
