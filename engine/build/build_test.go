package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmctl/vmctl/engine/images"
)

// storeImages is Images over a real store; nothing is pulled.
type storeImages struct{ *images.Store }

func (s storeImages) Pull(ctx context.Context, ref string) (images.Image, error) {
	return images.Image{}, errdefs.ErrNotFound
}

type file struct {
	name, body string
	mode       int64
	typ        byte
	uid, gid   int
}

func tarOf(t *testing.T, files []file) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Typeflag: f.typ, Uid: f.uid, Gid: f.gid, ModTime: time.Unix(1e9, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, f.body)
	}
	tw.Close()
	return b.Bytes()
}

// baseImage stores "base:1": /etc/passwd and /etc/group with an app user,
// /bin, /data/old; with an ONBUILD trigger in "trigger:1".
func newStore(t *testing.T) (*Builder, *images.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := images.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	layerTar := tarOf(t, []file{
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n"},
		{name: "etc/group", body: "root:x:0:\nstaff:x:50:\napp:x:1001:\n"},
		{name: "bin/", typ: tar.TypeDir},
		{name: "data/", typ: tar.TypeDir},
		{name: "data/old", body: "old\n"},
	})
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add(context.Background(), img, "base:1"); err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.OnBuild = []string{"ENV TRIGGERED=yes", "COPY trigger.txt /trigger.txt"}
	trig, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add(context.Background(), trig, "trigger:1"); err != nil {
		t.Fatal(err)
	}
	return &Builder{Images: storeImages{st}, TempDir: filepath.Join(dir, "tmp")}, st
}

func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fsOf is an image's flattened file system: name -> header and content.
func fsOf(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	out := map[string]file{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out["/"+strings.Trim(h.Name, "/")] = file{name: h.Name, body: string(b), mode: h.Mode, typ: h.Typeflag, uid: h.Uid, gid: h.Gid}
	}
}

const fullDockerfile = `# escape=\
ARG BASE=base:1
FROM ${BASE} AS first
ARG GREETING=hello
ENV GREETING=${GREETING} \
    OTHER=two
COPY --chown=app:staff --chmod=0600 secret.txt /srv/secret.txt
COPY dir/ /srv/dir/
COPY *.md /docs/
ADD archive.tar.gz /unpacked/
COPY <<EOF /inline.txt
inline $GREETING
EOF

FROM scratch AS empty

FROM trigger:1
LABEL org.example.a="one" b=two
MAINTAINER someone
WORKDIR /srv
WORKDIR app
COPY --from=first /srv/secret.txt ./copied.txt
COPY --from=first /inline.txt /
USER app:staff
EXPOSE 80 53/udp 9000-9001
VOLUME ["/var/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD ["true"]
SHELL ["/bin/sh", "-ec"]
CMD echo $GREETING
ENTRYPOINT ["/bin/app"]
ONBUILD ENV CHILD=1
`

func fullContext(t *testing.T) string {
	var arch bytes.Buffer
	gz := gzip.NewWriter(&arch)
	gz.Write(tarOf(t, []file{{name: "a/", typ: tar.TypeDir}, {name: "a/from-archive", body: "x\n", uid: 7, gid: 8}}))
	gz.Close()
	return writeContext(t, map[string]string{
		"Dockerfile":      fullDockerfile,
		".dockerignore":   "dir/ignored.txt\n*.log\n",
		"secret.txt":      "secret\n",
		"dir/a.txt":       "a\n",
		"dir/sub/b.txt":   "b\n",
		"dir/ignored.txt": "ignored\n",
		"one.md":          "1\n",
		"two.md":          "2\n",
		"debug.log":       "log\n",
		"trigger.txt":     "trigger\n",
		"archive.tar.gz":  arch.String(),
	})
}

func TestBuildInstructions(t *testing.T) {
	b, st := newStore(t)
	ctx := context.Background()
	dir := fullContext(t)
	var out bytes.Buffer
	res, err := b.Build(ctx, Request{ContextDir: dir, Tags: []string{"built:1"}, Labels: map[string]string{"from": "request"}}, &out)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Step 1/25 : FROM ${BASE} AS first", "Step 25/25 : ONBUILD ENV CHILD=1", "# Executing 2 build triggers",
		"Successfully built " + shortID(res.ID), "Successfully tagged built:1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	img, err := st.Resolve(ctx, "built:1")
	if err != nil || img.ID != res.ID {
		t.Fatalf("built:1 = %v, %v; want %s", img.ID, err, res.ID)
	}
	c := img.Config
	for _, e := range []string{"PATH=/bin", "TRIGGERED=yes"} {
		if !slices.Contains(c.Env, e) {
			t.Errorf("env %v lacks %s", c.Env, e)
		}
	}
	if c.WorkingDir != "/srv/app" || c.User != "app:staff" || c.StopSignal != "SIGINT" {
		t.Errorf("workdir %q user %q stopsignal %q", c.WorkingDir, c.User, c.StopSignal)
	}
	if !slices.Equal(c.Entrypoint, []string{"/bin/app"}) || !slices.Equal(c.Cmd, []string{"/bin/sh", "-ec", "echo $GREETING"}) {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	for _, p := range []string{"80/tcp", "53/udp", "9000/tcp", "9001/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("exposed ports %v lack %s", c.ExposedPorts, p)
		}
	}
	if c.Labels["org.example.a"] != "one" || c.Labels["b"] != "two" || c.Labels["from"] != "request" {
		t.Errorf("labels %v", c.Labels)
	}
	if _, ok := c.Volumes["/var/data"]; !ok {
		t.Errorf("volumes %v", c.Volumes)
	}
	if h := c.Healthcheck; h == nil || !slices.Equal(h.Test, []string{"CMD", "true"}) || h.Interval != 5*time.Second || h.Retries != 4 {
		t.Errorf("healthcheck %+v", h)
	}
	if !slices.Equal(c.Shell, []string{"/bin/sh", "-ec"}) || !slices.Equal(c.OnBuild, []string{"ENV CHILD=1"}) {
		t.Errorf("shell %q onbuild %q", c.Shell, c.OnBuild)
	}
	files := fsOf(t, img.Content())
	want := map[string]file{
		"/trigger.txt":        {body: "trigger\n", mode: 0o644},
		"/srv/app/copied.txt": {body: "secret\n", mode: 0o600, uid: 1000, gid: 50},
		"/inline.txt":         {body: "inline hello\n", mode: 0o644},
		"/data/old":           {body: "old\n", mode: 0o644},
	}
	for name, w := range want {
		g, ok := files[name]
		if !ok || g.body != w.body || g.mode&0o7777 != w.mode || g.uid != w.uid || g.gid != w.gid {
			t.Errorf("%s = %+v (present %v), want %+v", name, g, ok, w)
		}
	}
	if _, ok := files["/srv/secret.txt"]; ok {
		t.Error("the first stage's file is in the final image")
	}

	first, err := st.BuildCache(ctx, firstStageKey(t, b, dir))
	if err != nil {
		t.Fatal(err)
	}
	files = fsOf(t, first.Content())
	for name, w := range map[string]file{
		"/srv/secret.txt":          {body: "secret\n", mode: 0o600, uid: 1000, gid: 50},
		"/srv/dir/a.txt":           {body: "a\n", mode: 0o644},
		"/srv/dir/sub/b.txt":       {body: "b\n", mode: 0o644},
		"/docs/one.md":             {body: "1\n", mode: 0o644},
		"/docs/two.md":             {body: "2\n", mode: 0o644},
		"/unpacked/a/from-archive": {body: "x\n", mode: 0o644, uid: 7, gid: 8},
	} {
		g, ok := files[name]
		if !ok || g.body != w.body || g.mode&0o7777 != w.mode || g.uid != w.uid || g.gid != w.gid {
			t.Errorf("first stage %s = %+v (present %v), want %+v", name, g, ok, w)
		}
	}
	for _, name := range []string{"/srv/dir/ignored.txt", "/docs/debug.log", "/unpacked/archive.tar.gz"} {
		if _, ok := files[name]; ok {
			t.Errorf("%s is in the image", name)
		}
	}
}

// firstStageKey builds the first stage alone and returns the cache key of
// its last step, which must be cached from the full build.
func firstStageKey(t *testing.T, b *Builder, dir string) string {
	t.Helper()
	var out bytes.Buffer
	res, err := b.Build(context.Background(), Request{ContextDir: dir, Target: "FIRST"}, &out)
	if err != nil {
		t.Fatalf("build --target first: %v\n%s", err, out.String())
	}
	if res.Cached != res.Steps-1 {
		t.Errorf("--target first after the full build: %d of %d steps cached\n%s", res.Cached, res.Steps, out.String())
	}
	imgs, _ := b.Images.(storeImages).List(context.Background())
	for _, i := range imgs {
		if i.ID == res.ID {
			return i.BuildCacheKey
		}
	}
	t.Fatalf("the first stage's image %s is not in the store", res.ID)
	return ""
}

func TestBuildCache(t *testing.T) {
	b, st := newStore(t)
	ctx := context.Background()
	dir := writeContext(t, map[string]string{
		"Dockerfile": "FROM base:1\nARG V=1\nENV A=$V\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\nCMD [\"cat\", \"/a.txt\"]\n",
		"a.txt":      "a\n", "b.txt": "b\n",
	})
	build := func(req Request) (Result, string) {
		t.Helper()
		req.ContextDir = dir
		var out bytes.Buffer
		res, err := b.Build(ctx, req, &out)
		if err != nil {
			t.Fatalf("build: %v\n%s", err, out.String())
		}
		return res, out.String()
	}
	count := func() int {
		imgs, err := st.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(imgs)
	}
	first, _ := build(Request{Tags: []string{"c:1"}})
	if first.Cached != 0 || first.Steps != 6 {
		t.Fatalf("first build: %+v", first)
	}
	n := count()
	again, out := build(Request{Tags: []string{"c:1"}})
	if again.ID != first.ID || again.Cached != 5 || strings.Count(out, " ---> Using cache") != 5 || count() != n {
		t.Errorf("rebuild: %+v, %d images (was %d)\n%s", again, count(), n, out)
	}
	// An mtime is not content.
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(dir, "b.txt"), later, later)
	if res, out := build(Request{}); res.ID != first.ID || res.Cached != 5 {
		t.Errorf("after touching b.txt: %+v\n%s", res, out)
	}
	// A mode is.
	os.Chmod(filepath.Join(dir, "b.txt"), 0o755)
	if res, _ := build(Request{}); res.ID == first.ID || res.Cached != 3 {
		t.Errorf("after chmod b.txt: %+v, want the steps from its COPY on rebuilt", res)
	}
	os.Chmod(filepath.Join(dir, "b.txt"), 0o644)
	// Content: from the COPY of a.txt on.
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("changed\n"), 0o644)
	res, _ := build(Request{})
	if res.Cached != 2 {
		t.Errorf("after changing a.txt: %d cached, want 2 (ARG, ENV)", res.Cached)
	}
	// A build arg that changes what ENV expands to: from the ENV on.
	v := "2"
	if res, _ := build(Request{BuildArgs: map[string]*string{"V": &v}}); res.Cached != 1 {
		t.Errorf("with --build-arg V=2: %d cached, want 1 (ARG)", res.Cached)
	}
	if res, _ := build(Request{NoCache: true}); res.Cached != 0 {
		t.Errorf("--no-cache: %d cached", res.Cached)
	}
}

func TestBuildErrors(t *testing.T) {
	b, st := newStore(t)
	ctx := context.Background()
	before, _ := st.List(ctx)
	for _, tc := range []struct {
		name, dockerfile string
		req              Request
		class            error
		want             string
	}{
		{"missing Dockerfile", "", Request{Dockerfile: "nope"}, errdefs.ErrInvalidArgument, "Cannot locate specified Dockerfile: nope"},
		{"syntax", "FROM base:1\nENV A=1\nBOGUS x\n", Request{}, errdefs.ErrInvalidArgument, "line 3"},
		{"unknown target", "FROM base:1 AS a\n", Request{Target: "b"}, errdefs.ErrInvalidArgument, "failed to reach build target b"},
		{"outside the context", "FROM base:1\nCOPY ../etc/passwd /x\n", Request{}, errdefs.ErrInvalidArgument, "forbidden path outside the build context"},
		{"missing source", "FROM base:1\nCOPY nothere /x\n", Request{}, errdefs.ErrInvalidArgument, "file not found in build context"},
		{"ignored source", "FROM base:1\nCOPY skip.txt /x\n", Request{}, errdefs.ErrInvalidArgument, "excluded by .dockerignore"},
		{"no glob match", "FROM base:1\nCOPY *.none /x/\n", Request{}, errdefs.ErrInvalidArgument, "no source files were specified"},
		{"RUN without build VMs", "FROM base:1\nRUN true\n", Request{}, errdefs.ErrNotImplemented, "RUN needs build VMs"},
		{"ADD URL", "FROM base:1\nADD http://example.invalid/x /x\n", Request{}, errdefs.ErrNotImplemented, "builds here have no network"},
		{"unknown base", "FROM nosuch:1\n", Request{}, errdefs.ErrNotFound, "nosuch"},
		{"unknown user", "FROM base:1\nCOPY --chown=ghost a /a\n", Request{}, errdefs.ErrInvalidArgument, "unable to find user ghost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"a": "a", "skip.txt": "s", ".dockerignore": "skip.txt\n"}
			if tc.dockerfile != "" {
				files["Dockerfile"] = tc.dockerfile
			}
			tc.req.ContextDir = writeContext(t, files)
			var out bytes.Buffer
			_, err := b.Build(ctx, tc.req, &out)
			if err == nil || !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %v containing %q", err, tc.class, tc.want)
			}
		})
	}
	after, _ := st.List(ctx)
	for _, i := range after {
		if !slices.ContainsFunc(before, func(b images.Image) bool { return b.ID == i.ID }) && len(i.RepoTags) > 0 {
			t.Errorf("a failed build tagged %v", i.RepoTags)
		}
	}
	if left, _ := os.ReadDir(b.TempDir); len(left) > 0 {
		t.Errorf("scratch space left: %d entries", len(left))
	}
}

// fakeRunner runs RUN steps in memory: each Run records its process and
// "changes" the file system by queueing the layer its Changes returns.
type fakeRunner struct {
	started, removed int
	procs            []Process
	exit             int
	// layer builds the tar a step's Changes returns from the process.
	layer func(p Process) []byte
	next  []byte
}

func (f *fakeRunner) Start(ctx context.Context, image, network string) (Container, error) {
	f.started++
	return f, nil
}

func (f *fakeRunner) Run(ctx context.Context, p Process, out io.Writer) (int, error) {
	f.procs = append(f.procs, p)
	io.WriteString(out, "ran "+strings.Join(p.Args, " ")+"\n")
	f.next = f.layer(p)
	return f.exit, nil
}

func (f *fakeRunner) Changes(ctx context.Context, w io.Writer, limit int64) error {
	_, err := w.Write(f.next)
	return err
}

func (f *fakeRunner) Remove(ctx context.Context) error { f.removed++; return nil }

func TestBuildRun(t *testing.T) {
	b, st := newStore(t)
	ctx := context.Background()
	fr := &fakeRunner{layer: func(p Process) []byte {
		name := strings.Fields(p.Args[len(p.Args)-1])[1] // "touch NAME"
		return tarOf(t, []file{{name: name, body: "made by " + name}, {name: "data/.wh.old"}})
	}}
	b.Runner = fr
	dir := writeContext(t, map[string]string{
		"Dockerfile": "FROM base:1\nARG V=1\nUSER app\nWORKDIR /work\nRUN touch one\nRUN touch two\nCOPY f /f\nRUN touch three\n",
		"f":          "f",
	})
	var out bytes.Buffer
	res, err := b.Build(ctx, Request{ContextDir: dir, Tags: []string{"ran:1"}}, &out)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ran /bin/sh -c touch one\n") {
		t.Errorf("the step's output is not in the build's:\n%s", out.String())
	}
	// One container for the two RUNs in a row, another after the COPY;
	// both gone at the end.
	if fr.started != 2 || fr.removed != 2 || len(fr.procs) != 3 {
		t.Errorf("%d containers started, %d removed, %d steps run; want 2, 2, 3", fr.started, fr.removed, len(fr.procs))
	}
	p := fr.procs[0]
	if p.User != "1000:1001" || p.Dir != "/work" || !slices.Contains(p.Env, "V=1") || !slices.Contains(p.Env, "PATH=/bin") {
		t.Errorf("the step's process: %+v", p)
	}
	img, err := st.Resolve(ctx, "ran:1")
	if err != nil || img.ID != res.ID {
		t.Fatal(err)
	}
	files := fsOf(t, img.Content())
	for _, name := range []string{"/one", "/two", "/three", "/f", "/work"} {
		if _, ok := files[name]; !ok {
			t.Errorf("%s is not in the image", name)
		}
	}
	if _, ok := files["/data/old"]; ok {
		t.Error("the step's whiteout did not remove /data/old")
	}
	// Cached: nothing runs.
	before := len(fr.procs)
	if res, err := b.Build(ctx, Request{ContextDir: dir}, io.Discard); err != nil || res.Cached != res.Steps-1 || len(fr.procs) != before {
		t.Errorf("rebuild: %+v, %v, %d more steps run", res, err, len(fr.procs)-before)
	}
	// A build arg is part of a RUN's identity.
	v := "2"
	if res, _ := b.Build(ctx, Request{ContextDir: dir, BuildArgs: map[string]*string{"V": &v}}, io.Discard); len(fr.procs) != before+3 || res.Cached != 3 {
		t.Errorf("with V=2: %d steps run, %d cached", len(fr.procs)-before, res.Cached)
	}
	// A failing step is an error with its status; nothing is tagged.
	fr.exit = 3
	_, err = b.Build(ctx, Request{ContextDir: dir, NoCache: true, Tags: []string{"failed:1"}}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "returned a non-zero code: 3") {
		t.Errorf("a failing RUN: %v", err)
	}
	if _, err := st.Resolve(ctx, "failed:1"); err == nil {
		t.Error("a failed build was tagged")
	}
	if fr.started != fr.removed {
		t.Errorf("%d build containers started, %d removed", fr.started, fr.removed)
	}
	// RUN's flags are refused, not ignored.
	bad := writeContext(t, map[string]string{"Dockerfile": "FROM base:1\nRUN --mount=type=cache,target=/c true\n"})
	if _, err := b.Build(ctx, Request{ContextDir: bad}, io.Discard); !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "RUN --mount is not supported") {
		t.Errorf("RUN --mount: %v", err)
	}
	// A guest's layer that climbs out is refused.
	fr.exit = 0
	fr.layer = func(Process) []byte { return tarOf(t, []file{{name: "../escape", body: "x"}}) }
	if _, err := b.Build(ctx, Request{ContextDir: dir, NoCache: true}, io.Discard); err == nil || !strings.Contains(err.Error(), "not a clean relative path") {
		t.Errorf("a layer with ../escape: %v", err)
	}
}

func TestApplyChanges(t *testing.T) {
	cfg := &v1.ConfigFile{Config: v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}}
	err := ApplyChanges(cfg, []string{`ENV APP=/srv`, `WORKDIR $APP`, `CMD ["serve"]`, `EXPOSE 80`, `LABEL a=b`, `USER 1000`})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.WorkingDir != "/srv" || !slices.Equal(c.Cmd, []string{"serve"}) || c.User != "1000" || c.Labels["a"] != "b" || !slices.Contains(c.Env, "APP=/srv") {
		t.Errorf("config after the changes: %+v", c)
	}
	if _, ok := c.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	for _, bad := range []string{"RUN true", "COPY a b", "FROM x", "NOPE x", "ENV"} {
		if err := ApplyChanges(cfg, []string{bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("change %q: %v, want InvalidArgument", bad, err)
		}
	}
}
