package tests

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"
)

// registryServer is a real registry (Debian's docker-registry, the
// distribution project's server) on 127.0.0.1 with its own storage.
type registryServer struct {
	host string
	mu   sync.Mutex
	log  bytes.Buffer // access log and messages
}

func (r *registryServer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.Write(p)
}

// blobGets returns the blob digests the registry served with GET for repo.
func (r *registryServer) blobGets(repo string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	re := regexp.MustCompile(`"GET /v2/` + regexp.QuoteMeta(repo) + `/blobs/(sha256:[0-9a-f]{64}) HTTP/1\.1" 200`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(r.log.String(), -1) {
		out = append(out, m[1])
	}
	return out
}

// startRegistry runs a registry until the test ends; with user set, it
// requires that user's basic-auth password.
func startRegistry(t *testing.T, user, password string) *registryServer {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		if os.Getenv("VMCTL_E2E") != "" {
			t.Fatal("docker-registry is not installed: `make deps` installs it (Debian package docker-registry)")
		}
		t.Skip("docker-registry is not installed (Debian package docker-registry)")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "storage"), addr)
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(user+":"+string(hash)+"\n"), 0o600))
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: vmctl-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	must(t, os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600))
	r := &registryServer{host: addr}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = r, r
	must(t, cmd.Start())
	// Daemons reach it at the same address from their own namespaces.
	must(t, shareLoopback(ln.Addr().(*net.TCPAddr).Port))
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return r
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("registry did not start on %s: %v\n%s", addr, err, r.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// withDockerConfig gives vmctl a credentials directory of its own.
func withDockerConfig(t *testing.T) []string {
	return []string{"DOCKER_CONFIG=" + t.TempDir()}
}

func (e *env) mustRunEnv(t *testing.T, extraEnv []string, want int, args ...string) result {
	t.Helper()
	r := e.runWith(t, nil, extraEnv, args...)
	if r.code != want {
		t.Fatalf("vmctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

var digestLine = regexp.MustCompile(`(?m)^(?:.*: digest|Digest): (sha256:[0-9a-f]{64})`)

// pushChildImage pushes base plus a layer holding /hello straight to the
// registry, as another client would, so the base layers are shared. It
// returns the new layer's digest and the base layers' digests.
func pushChildImage(t *testing.T, baseRef, ref, hello string) (v1.Hash, []string) {
	t.Helper()
	br, err := name.ParseReference(baseRef, name.Insecure)
	must(t, err)
	base, err := remote.Image(br)
	must(t, err)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: int64(len(hello)), Typeflag: tar.TypeReg}))
	tw.Write([]byte(hello))
	must(t, tw.Close())
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	must(t, err)
	img, err := mutate.AppendLayers(base, layer)
	must(t, err)
	r, err := name.ParseReference(ref, name.Insecure)
	must(t, err)
	must(t, remote.Write(r, img))
	d, err := layer.Digest()
	must(t, err)
	ls, err := base.Layers()
	must(t, err)
	var baseLayers []string
	for _, l := range ls {
		h, err := l.Digest()
		must(t, err)
		baseLayers = append(baseLayers, h.String())
	}
	return d, baseLayers
}

func TestRegistryPushPullRun(t *testing.T) {
	e := e2e(t)
	reg := startRegistry(t, "", "")
	dc := withDockerConfig(t)
	before := e.containerCount(t)
	ref := reg.host + "/e2e/busybox:1"
	t.Cleanup(func() {
		// Leave busybox as the harness loaded it, whatever happened here.
		e.run(t, "load", "-i", filepath.Join(e.root, "build/busybox.tar"))
		for _, r := range []string{ref, reg.host + "/e2e/child:1", reg.host + "/e2e/auto:1"} {
			e.run(t, "rmi", r)
		}
	})

	e.mustRunEnv(t, dc, 0, "tag", "busybox", ref)
	push := e.mustRunEnv(t, dc, 0, "push", ref)
	m := digestLine.FindStringSubmatch(push.stdout)
	if m == nil || !strings.Contains(push.stdout, ": Pushed") {
		t.Fatalf("push printed no digest or no pushed layer:\n%s", push.stdout)
	}
	pushed := m[1]
	again := e.mustRunEnv(t, dc, 0, "push", ref)
	if !strings.Contains(again.stdout, ": Layer already exists") || strings.Contains(again.stdout, ": Pushed") {
		t.Errorf("second push sent layers again:\n%s", again.stdout)
	}

	e.mustRunEnv(t, dc, 0, "rmi", ref)
	e.mustRunEnv(t, dc, 0, "rmi", "busybox")
	pull := e.mustRunEnv(t, dc, 0, "pull", ref)
	if m := digestLine.FindStringSubmatch(pull.stdout); m == nil || m[1] != pushed {
		t.Fatalf("pulled digest differs from pushed %s:\n%s", pushed, pull.stdout)
	}
	if !strings.Contains(pull.stdout, ": Pull complete") {
		t.Errorf("pull after rmi downloaded no layer:\n%s", pull.stdout)
	}
	if r := e.mustRunEnv(t, dc, 0, "run", "--rm", ref, "echo", "ok"); strings.TrimSpace(r.stdout) != "ok" {
		t.Errorf("run of the pulled image printed %q, want ok", r.stdout)
	}
	e.mustRunEnv(t, dc, 0, "tag", ref, "busybox")

	// An image sharing busybox's layer: only its own layer is downloaded.
	childRef := reg.host + "/e2e/child:1"
	newLayer, baseLayers := pushChildImage(t, ref, childRef, "from the child layer\n")
	child := e.mustRunEnv(t, dc, 0, "pull", childRef)
	if strings.Count(child.stdout, ": Already exists") != 1 || strings.Count(child.stdout, ": Pull complete") != 1 {
		t.Errorf("child pull should find one layer present and download one:\n%s", child.stdout)
	}
	// The registry's access log shows what was downloaded: the child's
	// config and its new layer, never busybox's layer.
	gets := reg.blobGets("e2e/child")
	if !containsStr(gets, newLayer.String()) || len(gets) != 2 {
		t.Errorf("child pull fetched %v, want its config and its new layer %s only", gets, newLayer)
	}
	for _, l := range baseLayers {
		if containsStr(gets, l) {
			t.Errorf("child pull downloaded busybox's layer %s again", l)
		}
	}

	// run pulls an image it does not have.
	autoRef := reg.host + "/e2e/auto:1"
	pushChildImage(t, ref, autoRef, "pulled by run\n")
	r := e.mustRunEnv(t, dc, 0, "run", "--rm", autoRef, "cat", "/hello")
	if strings.TrimSpace(r.stdout) != "pulled by run" || !strings.Contains(r.stderr, "Unable to find image") {
		t.Errorf("run of a missing image: stdout %q stderr %q", r.stdout, r.stderr)
	}
	e.checkClean(t, before)
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRegistryErrors(t *testing.T) {
	e := e2e(t)
	reg := startRegistry(t, "", "")
	dc := withDockerConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	closed := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pull", reg.host + "/e2e/absent:1"}, "not found in registry " + reg.host},
		{[]string{"run", "--rm", reg.host + "/e2e/absent:1", "true"}, "not found in registry " + reg.host},
		{[]string{"pull", closed + "/x:1"}, "cannot reach registry " + closed},
		{[]string{"pull", "Not/A/Valid:Ref:x"}, "invalid reference format"},
		{[]string{"push", reg.host + "/e2e/not-local:1"}, "No such image"},
		{[]string{"tag", "no-such-image", "x:1"}, "No such image"},
	} {
		r := e.runWith(t, nil, dc, tc.args...)
		if r.code == 0 {
			t.Errorf("vmctl %s succeeded", strings.Join(tc.args, " "))
			continue
		}
		if tc.args[0] == "run" {
			// run prints the pull's progress on stderr before the error.
			oneErrorLine(t, r, tc.want)
			continue
		}
		oneLine(t, r, tc.want)
	}
}

// oneErrorLine checks that exactly one line of stderr is an error and that
// it says want.
func oneErrorLine(t *testing.T, r result, want string) {
	t.Helper()
	var errLines []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "vmctl: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], want) {
		t.Errorf("stderr = %q, want one error line containing %q", r.stderr, want)
	}
}

func TestRegistryLogin(t *testing.T) {
	e := e2e(t)
	reg := startRegistry(t, "tester", "s3cret")
	dc := withDockerConfig(t)
	ref := reg.host + "/e2e/private:1"
	t.Cleanup(func() { e.run(t, "rmi", ref) })
	e.mustRunEnv(t, dc, 0, "tag", "busybox", ref)

	r := e.runWith(t, nil, dc, "push", ref)
	if r.code == 0 {
		t.Fatal("push to an auth registry succeeded without login")
	}
	oneLine(t, r, "vmctl login "+reg.host)
	r = e.runWith(t, []byte("wrong\n"), dc, "login", "-u", "tester", "--password-stdin", reg.host)
	if r.code == 0 {
		t.Fatal("login with a wrong password succeeded")
	}
	oneLine(t, r, "incorrect username or password")

	r = e.runWith(t, []byte("s3cret\n"), dc, "login", "-u", "tester", "--password-stdin", reg.host)
	if r.code != 0 || !strings.Contains(r.stdout, "Login Succeeded") {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	cfg, err := os.ReadFile(filepath.Join(strings.TrimPrefix(dc[0], "DOCKER_CONFIG="), "config.json"))
	if err != nil || !strings.Contains(string(cfg), reg.host) {
		t.Fatalf("config.json after login: %s %v", cfg, err)
	}
	e.mustRunEnv(t, dc, 0, "push", ref)
	e.mustRunEnv(t, dc, 0, "rmi", ref)
	e.mustRunEnv(t, dc, 0, "pull", ref)

	if r := e.mustRunEnv(t, dc, 0, "logout", reg.host); !strings.Contains(r.stdout, "Removing login credentials for "+reg.host) {
		t.Errorf("logout printed %q", r.stdout)
	}
	e.mustRunEnv(t, dc, 0, "rmi", ref)
	r = e.runWith(t, nil, dc, "pull", ref)
	if r.code == 0 {
		t.Error("pull after logout succeeded")
	}
}
