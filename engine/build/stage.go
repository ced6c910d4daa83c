package build

// The steps of a build: stages, the variables they see, the cache, and the
// images each step commits.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/images"
)

// run is one build in progress.
type run struct {
	b      *Builder
	req    Request
	out    io.Writer
	lex    *shell.Lex
	escape rune
	ignore *patternmatcher.PatternMatcher

	meta     map[string]string // ARGs before the first FROM, with their values
	total    int               // steps of the stages built
	step     int
	cached   int
	built    map[string]*state // finished stages by lower-case name and index
	used     map[string]bool   // build args some ARG declared
	temps    []string          // directories to remove at the end
	unpacked map[string]string // COPY --from file systems, by image ID
	ctrs     []Container       // build containers not removed yet
}

// state is a stage as far as it is built.
type state struct {
	img v1.Image
	id  string
	key string // the cache key of the step that made img ("" for a base)
	cfg *v1.ConfigFile
	// args are the stage's ARGs with their values; env-like, for
	// expansion only (they are not in the image).
	args   map[string]string
	shell  []string
	cmdSet bool // the stage set CMD (ENTRYPOINT then keeps it)
	files  *tree
	// ctr is the stage's build container, holding the file system of the
	// layers ctrLayers names (see runStep).
	ctr       Container
	ctrLayers string
}

func (r *run) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range r.ctrs {
		c.Remove(ctx)
	}
	for _, d := range r.temps {
		os.RemoveAll(d)
	}
}

// metaArgs resolves the ARGs before the first FROM.
func (r *run) metaArgs(cmds []instructions.ArgCommand) error {
	r.meta = map[string]string{}
	for _, c := range cmds {
		for _, kv := range c.Args {
			v, ok := r.buildArg(kv.Key)
			if !ok && kv.Value != nil {
				w, err := r.lex.ProcessWordWithMatches(*kv.Value, shell.EnvsFromSlice(envOf(r.meta)))
				if err != nil {
					return errs.New(errdefs.ErrInvalidArgument, "ARG %s: %v", kv.Key, err)
				}
				v, ok = w.Result, true
			}
			if ok {
				r.meta[kv.Key] = v
			} else {
				delete(r.meta, kv.Key)
			}
		}
	}
	return nil
}

// buildArg is the value --build-arg gives name, if any.
func (r *run) buildArg(name string) (string, bool) {
	v, ok := r.req.BuildArgs[name]
	if !ok {
		return "", false
	}
	r.used[name] = true
	if v == nil {
		return os.LookupEnv(name)
	}
	return *v, true
}

func envOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// stage builds one stage.
func (r *run) stage(ctx context.Context, i int, s instructions.Stage) (*state, error) {
	r.step++
	fmt.Fprintf(r.out, "Step %d/%d : %s\n", r.step, r.total, s.SourceCode)
	base, err := r.lex.ProcessWordWithMatches(s.BaseName, shell.EnvsFromSlice(envOf(r.meta)))
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "FROM %s: %v", s.BaseName, err)
	}
	st, err := r.from(ctx, base.Result)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(r.out, " ---> %s\n", shortID(st.id))
	// The base image's ONBUILD triggers run first, as instructions of
	// this stage, and are not inherited further.
	triggers := st.cfg.Config.OnBuild
	if len(triggers) > 0 {
		cfg := st.cfg.DeepCopy()
		cfg.Config.OnBuild = nil
		st.cfg = cfg
		plural := ""
		if len(triggers) > 1 {
			plural = "s"
		}
		fmt.Fprintf(r.out, "# Executing %d build trigger%s\n", len(triggers), plural)
		for _, t := range triggers {
			cmd, err := parseTrigger(t)
			if err != nil {
				return nil, err
			}
			if err := r.command(ctx, st, cmd); err != nil {
				return nil, err
			}
		}
	}
	for _, c := range s.Commands {
		r.step++
		fmt.Fprintf(r.out, "Step %d/%d : %s\n", r.step, r.total, text(c))
		if err := r.command(ctx, st, c); err != nil {
			return nil, err
		}
		fmt.Fprintf(r.out, " ---> %s\n", shortID(st.id))
	}
	r.removeContainer(st)
	r.built[fmt.Sprint(i)] = st
	if s.Name != "" {
		r.built[strings.ToLower(s.Name)] = st
	}
	return st, nil
}

func parseTrigger(t string) (instructions.Command, error) {
	res, err := parser.Parse(strings.NewReader(t))
	if err != nil || len(res.AST.Children) != 1 {
		return nil, errs.New(errdefs.ErrInvalidArgument, "the base image's ONBUILD %q does not parse: %v", t, err)
	}
	switch strings.ToLower(res.AST.Children[0].Value) {
	case "from", "onbuild", "maintainer":
		return nil, errs.New(errdefs.ErrInvalidArgument, "%s isn't allowed as an ONBUILD trigger", strings.Fields(t)[0])
	}
	cmd, err := instructions.ParseCommand(res.AST.Children[0])
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "the base image's ONBUILD %q: %v", t, err)
	}
	return cmd, nil
}

// from starts a stage from scratch, a built stage or an image.
func (r *run) from(ctx context.Context, name string) (*state, error) {
	if strings.EqualFold(name, "scratch") {
		img, cfg, err := scratch()
		if err != nil {
			return nil, err
		}
		id, err := img.ConfigName()
		if err != nil {
			return nil, err
		}
		return &state{img: img, id: id.String(), cfg: cfg, args: map[string]string{}, shell: defaultShell()}, nil
	}
	if prev, ok := r.built[strings.ToLower(name)]; ok {
		return &state{img: prev.img, id: prev.id, key: prev.key, cfg: prev.cfg, args: map[string]string{},
			shell: shellOf(prev.cfg), files: prev.files}, nil
	}
	img, err := r.image(ctx, name)
	if err != nil {
		return nil, err
	}
	cfg, err := img.Content().ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	return &state{img: img.Content(), id: img.ID, cfg: cfg.DeepCopy(), args: map[string]string{}, shell: shellOf(cfg)}, nil
}

// image resolves a base or --from image, pulling it if the store lacks it
// (or always with Pull).
func (r *run) image(ctx context.Context, name string) (images.Image, error) {
	if !r.req.Pull {
		img, err := r.b.Images.Resolve(ctx, name)
		if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
			return img, err
		}
	}
	img, err := r.b.Images.Pull(ctx, name)
	if err != nil {
		return images.Image{}, fmt.Errorf("pulling %s: %w", name, err)
	}
	return img, nil
}

func defaultShell() []string { return []string{"/bin/sh", "-c"} }

func shellOf(cfg *v1.ConfigFile) []string {
	if len(cfg.Config.Shell) > 0 {
		return append([]string(nil), cfg.Config.Shell...)
	}
	return defaultShell()
}

// expander expands $VAR in a word with the stage's variables.
func (r *run) expander(st *state) instructions.SingleWordExpander {
	env := st.vars()
	return func(word string) (string, error) {
		res, err := r.lex.ProcessWordWithMatches(word, env)
		return res.Result, err
	}
}

// expandRaw expands variables in a heredoc's text, keeping its quotes and
// escapes.
func (r *run) expandRaw(st *state, s string) (string, error) {
	lex := shell.NewLex(r.escape)
	lex.RawQuotes, lex.RawEscapes = true, true
	res, err := lex.ProcessWordWithMatches(s, st.vars())
	return res.Result, err
}

// vars are the variables instructions of the stage see: its ARGs and its
// environment (ENV wins over ARG, as in Docker).
func (st *state) vars() shell.EnvGetter {
	vars := map[string]string{}
	for k, v := range st.args {
		vars[k] = v
	}
	for _, e := range st.cfg.Config.Env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	return shell.EnvsFromSlice(envOf(vars))
}

// command runs one instruction on st.
func (r *run) command(ctx context.Context, st *state, c instructions.Command) error {
	if e, ok := c.(instructions.SupportsSingleWordExpansion); ok {
		if err := e.Expand(r.expander(st)); err != nil {
			return errs.New(errdefs.ErrInvalidArgument, "%s: %v", text(c), err)
		}
	}
	switch c := c.(type) {
	case *instructions.RunCommand:
		return r.runStep(ctx, st, c)
	case *instructions.WorkdirCommand:
		// The directory is made if the image lacks it, as a layer of
		// its own (owned by root), so that RUN and COPY find it.
		cfg := st.cfg.DeepCopy()
		if err := r.configure(st, cfg, c); err != nil {
			return err
		}
		files, err := r.files(ctx, st)
		if err != nil {
			return err
		}
		if files.isDir(cfg.Config.WorkingDir) {
			return r.configStep(ctx, st, text(c), cfg)
		}
		st.cfg = cfg
		entries := withParents([]entry{{hdr: tar.Header{Name: strings.TrimPrefix(cfg.Config.WorkingDir, "/"), Typeflag: tar.TypeDir,
			Mode: 0o755, Format: tar.FormatPAX, ModTime: time.Unix(0, 0)}}}, files, owner{})
		return r.layerStep(ctx, st, text(c), func(string) string { return "/bin/sh -c #(nop) " + text(c) }, entries)
	case *instructions.CopyCommand:
		return r.copy(ctx, st, c.String(), copySpec{sources: c.SourcePaths, dest: c.DestPath, from: c.From, chown: c.Chown, chmod: c.Chmod, inline: c.SourceContents})
	case *instructions.AddCommand:
		return r.copy(ctx, st, c.String(), copySpec{sources: c.SourcePaths, dest: c.DestPath, chown: c.Chown, chmod: c.Chmod, add: true, inline: c.SourceContents})
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			v, ok := r.buildArg(kv.Key)
			switch {
			case ok:
			case kv.Value != nil:
				v, ok = *kv.Value, true
			default:
				v, ok = r.meta[kv.Key]
			}
			if ok {
				st.args[kv.Key] = v
			}
		}
		return r.configStep(ctx, st, c.String(), st.cfg.DeepCopy())
	}
	cfg := st.cfg.DeepCopy()
	if err := r.configure(st, cfg, c); err != nil {
		return err
	}
	return r.configStep(ctx, st, text(c), cfg)
}

// text is an instruction as the Dockerfile has it.
func text(c instructions.Command) string {
	if s, ok := c.(fmt.Stringer); ok {
		return s.String()
	}
	return strings.ToUpper(c.Name())
}

// configStep commits a step that changes only the configuration.
func (r *run) configStep(ctx context.Context, st *state, text string, cfg *v1.ConfigFile) error {
	key := cacheKey(st.id, text, cfg, "")
	if r.fromCache(ctx, st, key, cfg) {
		return nil
	}
	img, err := r.commit(ctx, st, cfg, nil, "/bin/sh -c #(nop) "+text, key)
	if err != nil {
		return err
	}
	st.id, st.img, st.cfg, st.key = img.ID, img.Content(), cfg, key
	return nil
}

// fromCache moves st to the cached result of key, if there is one.
func (r *run) fromCache(ctx context.Context, st *state, key string, cfg *v1.ConfigFile) bool {
	if r.req.NoCache {
		return false
	}
	img, err := r.b.Images.BuildCache(ctx, key)
	if err != nil {
		return false
	}
	got, err := img.Content().ConfigFile()
	if err != nil {
		return false
	}
	fmt.Fprintln(r.out, " ---> Using cache")
	r.cached++
	st.id, st.img, st.cfg, st.key = img.ID, img.Content(), got.DeepCopy(), key
	return true
}

// commit stores the step's image: st's image with cfg's configuration and,
// if not nil, one more layer; createdBy is its history line.
func (r *run) commit(ctx context.Context, st *state, cfg *v1.ConfigFile, layer v1.Layer, createdBy, key string) (images.Image, error) {
	now := r.now()
	hist := v1.History{Created: v1.Time{Time: now}, CreatedBy: createdBy, EmptyLayer: layer == nil}
	img := st.img
	var err error
	if layer != nil {
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: hist}); err != nil {
			return images.Image{}, err
		}
		appended, err := img.ConfigFile()
		if err != nil {
			return images.Image{}, err
		}
		cfg.RootFS = appended.RootFS
		cfg.History = appended.History
	} else {
		cfg.History = append(cfg.History, hist)
	}
	cfg.Created = v1.Time{Time: now}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return images.Image{}, err
	}
	stored, err := r.b.Images.AddBuilt(ctx, img, key)
	if err != nil {
		return images.Image{}, err
	}
	return stored, nil
}

func (r *run) now() time.Time {
	if r.b.Now != nil {
		return r.b.Now().UTC()
	}
	return time.Now().UTC()
}

// cacheKey identifies a step: its parent, its instruction, the
// configuration it results in (creation time and history aside) and the
// hash of the content it adds.
func cacheKey(parent, text string, cfg *v1.ConfigFile, content string) string {
	c, _ := json.Marshal(cfg.Config)
	h := sha256.New()
	for _, part := range []string{parent, text, string(c), content} {
		fmt.Fprintf(h, "%d:%s\x00", len(part), part)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// configure applies a configuration instruction to cfg.
func (r *run) configure(st *state, cfg *v1.ConfigFile, c instructions.Command) error {
	conf := &cfg.Config
	switch c := c.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			conf.Env = setEnv(conf.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if conf.Labels == nil {
			conf.Labels = map[string]string{}
		}
		for _, kv := range c.Labels {
			conf.Labels[kv.Key] = kv.Value
		}
	case *instructions.MaintainerCommand:
		cfg.Author = c.Maintainer
	case *instructions.WorkdirCommand:
		p := c.Path
		if !path.IsAbs(p) {
			p = path.Join("/", conf.WorkingDir, p)
		}
		conf.WorkingDir = path.Clean(p)
	case *instructions.UserCommand:
		conf.User = c.User
	case *instructions.CmdCommand:
		conf.Cmd = r.cmdline(st, c.ShellDependantCmdLine)
		st.cmdSet = true
	case *instructions.EntrypointCommand:
		conf.Entrypoint = r.cmdline(st, c.ShellDependantCmdLine)
		if !st.cmdSet {
			conf.Cmd = nil
		}
	case *instructions.ExposeCommand:
		if conf.ExposedPorts == nil {
			conf.ExposedPorts = map[string]struct{}{}
		}
		exp := r.expander(st)
		for _, p := range c.Ports {
			p, err := exp(p)
			if err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "EXPOSE %s: %v", p, err)
			}
			ports, err := exposedPorts(p)
			if err != nil {
				return err
			}
			for _, q := range ports {
				conf.ExposedPorts[q] = struct{}{}
			}
		}
	case *instructions.VolumeCommand:
		if conf.Volumes == nil {
			conf.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v == "" {
				return errs.New(errdefs.ErrInvalidArgument, "VOLUME specified can not be an empty string")
			}
			conf.Volumes[v] = struct{}{}
		}
	case *instructions.StopSignalCommand:
		conf.StopSignal = c.Signal
	case *instructions.HealthCheckCommand:
		h := c.Health
		conf.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout,
			StartPeriod: h.StartPeriod, Retries: h.Retries}
	case *instructions.ShellCommand:
		st.shell = append([]string(nil), c.Shell...)
		conf.Shell = append([]string(nil), c.Shell...)
	case *instructions.OnbuildCommand:
		conf.OnBuild = append(conf.OnBuild, c.Expression)
	default:
		return errs.New(errdefs.ErrInvalidArgument, "%s: instruction not supported", text(c))
	}
	return nil
}

func (r *run) cmdline(st *state, c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell {
		return append(append([]string(nil), st.shell...), strings.Join(c.CmdLine, " "))
	}
	return append([]string(nil), c.CmdLine...)
}

func setEnv(env []string, k, v string) []string {
	for i, e := range env {
		if name, _, _ := strings.Cut(e, "="); name == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// exposedPorts turns "80", "80/udp" or "8000-8002/tcp" into port keys.
func exposedPorts(spec string) ([]string, error) {
	port, proto, _ := strings.Cut(spec, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, errs.New(errdefs.ErrInvalidArgument, "EXPOSE %s: invalid protocol %q", spec, proto)
	}
	lo, hi, isRange := strings.Cut(port, "-")
	a, err := portNumber(lo)
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "EXPOSE %s: invalid port %q", spec, lo)
	}
	b := a
	if isRange {
		if b, err = portNumber(hi); err != nil || b < a {
			return nil, errs.New(errdefs.ErrInvalidArgument, "EXPOSE %s: invalid port range", spec)
		}
	}
	var out []string
	for p := a; p <= b; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

func portNumber(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return n, nil
}
