package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Images in and out of vmctld over its API: the real docker CLI and
// vmctl -H tag, push to a real registry, pull back, save and load, and bad
// input is refused without harm. No container is started.
func TestImagesAPI(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	reg := startRegistry(t, "", "")
	busyboxID := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "--format", "{{.Id}}", "busybox").stdout)

	t.Run("docker CLI", func(t *testing.T) {
		ref := reg.host + "/e2e/docker:1"
		d.mustDocker(t, 0, "", "tag", "busybox", ref)
		push := d.mustDocker(t, 0, "", "push", ref)
		m := digestLine.FindStringSubmatch(push.stdout)
		if m == nil || !strings.Contains(push.stdout, ": Pushed") || !strings.Contains(push.stdout, "The push refers to repository ["+reg.host+"/e2e/docker]") {
			t.Fatalf("docker push printed:\n%s", push.stdout)
		}
		pushed := m[1]
		if again := d.mustDocker(t, 0, "", "push", ref); !strings.Contains(again.stdout, ": Layer already exists") {
			t.Errorf("second docker push sent layers again:\n%s", again.stdout)
		}
		d.mustDocker(t, 0, "", "rmi", ref)
		pull := d.mustDocker(t, 0, "", "pull", ref)
		if m := digestLine.FindStringSubmatch(pull.stdout); m == nil || m[1] != pushed {
			t.Errorf("docker pull digest differs from pushed %s:\n%s", pushed, pull.stdout)
		}
		repo := ref[:strings.LastIndex(ref, ":")]
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{json .RepoDigests}}", ref); strings.TrimSpace(r.stdout) != `["`+repo+"@"+pushed+`"]` {
			t.Errorf("docker inspect RepoDigests = %s, want [%s@%s]", r.stdout, repo, pushed)
		}
		// GET /distribution/{name}/json: the registry's descriptor of
		// the reference, without a pull (docker-py's get_registry_data).
		resp, err := d.http().Get("http://vmctld/v1.41/distribution/" + ref + "/json")
		must(t, err)
		var dist struct {
			Descriptor struct {
				MediaType, Digest string
				Size              int64
			}
			Platforms []struct{ Architecture, OS string }
		}
		err = json.NewDecoder(resp.Body).Decode(&dist)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || dist.Descriptor.Digest != pushed || dist.Descriptor.Size == 0 ||
			len(dist.Platforms) != 1 || dist.Platforms[0].OS != "linux" {
			t.Errorf("distribution of %s = %d %+v (%v), want the pushed manifest %s", ref, resp.StatusCode, dist, err, pushed)
		}
		resp, err = d.http().Get("http://vmctld/v1.41/distribution/" + reg.host + "/e2e/absent:1/json")
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("distribution of a reference the registry lacks: %d, want 404", resp.StatusCode)
		}
		if r := d.mustDocker(t, 0, "", "images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(r.stdout, ref+"\n") || !strings.Contains(r.stdout, "busybox:latest\n") {
			t.Errorf("docker images = %q, want %s and busybox:latest", r.stdout, ref)
		}

		// docker save -o, remove, docker load -i: the same image comes back.
		archive := filepath.Join(t.TempDir(), "images.tar")
		d.mustDocker(t, 0, "", "save", "-o", archive, "busybox", ref)
		d.mustDocker(t, 0, "", "rmi", ref)
		d.mustDocker(t, 0, "", "rmi", "busybox")
		load := d.mustDocker(t, 0, "", "load", "-i", archive)
		if load.stdout != "Loaded image: "+ref+"\nLoaded image: busybox:latest\n" {
			t.Errorf("docker load printed %q", load.stdout)
		}
		if id := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "--format", "{{.Id}}", ref).stdout); id != busyboxID {
			t.Errorf("image ID after save and load = %s, want %s", id, busyboxID)
		}

		// docker save | docker load through pipes.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", "docker save busybox | docker load")
		c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
		if r := capture(ctx, t, c, nil); r.code != 0 || r.stdout != "Loaded image: busybox:latest\n" {
			t.Errorf("docker save | docker load: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		d.mustDocker(t, 0, "", "rmi", ref)
	})

	t.Run("vmctl -H", func(t *testing.T) {
		dc := withDockerConfig(t)
		ref := reg.host + "/e2e/vmctl:1"
		vm := func(want int, stdin string, args ...string) result {
			t.Helper()
			r := runClient(t, stdin, dc, append([]string{"-H", d.host()}, args...)...)
			if r.code != want {
				t.Fatalf("vmctl -H %s: exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr, d.stderr)
			}
			return r
		}
		if r := vm(0, "", "tag", "busybox", ref); r.stdout != "" {
			t.Errorf("tag printed %q", r.stdout)
		}
		push := vm(0, "", "push", ref)
		m := digestLine.FindStringSubmatch(push.stdout)
		if m == nil || !strings.Contains(push.stdout, ": Pushed") || !strings.HasPrefix(push.stdout, "The push refers to repository ["+reg.host+"/e2e/vmctl]\n") {
			t.Fatalf("vmctl push printed:\n%s", push.stdout)
		}
		pushed := m[1]
		vm(0, "", "rmi", ref)
		pull := vm(0, "", "pull", ref)
		if m := digestLine.FindStringSubmatch(pull.stdout); m == nil || m[1] != pushed {
			t.Errorf("pull digest differs from pushed %s:\n%s", pushed, pull.stdout)
		}

		archive := filepath.Join(t.TempDir(), "vmctl.tar")
		vm(0, "", "save", "-o", archive, ref)
		vm(0, "", "rmi", ref)
		if r := vm(0, "", "load", "-i", archive); r.stdout != "Loaded image: "+ref+"\n" {
			t.Errorf("load -i printed %q", r.stdout)
		}
		saved, err := os.ReadFile(archive)
		must(t, err)
		// save to stdout, load from stdin: the same bytes either way.
		if r := vm(0, "", "save", ref); r.stdout != string(saved) {
			t.Errorf("save to stdout wrote %d bytes, save -o %d", len(r.stdout), len(saved))
		}
		vm(0, "", "rmi", ref)
		if r := vm(0, string(saved), "load"); r.stdout != "Loaded image: "+ref+"\n" {
			t.Errorf("load from stdin printed %q", r.stdout)
		}
		if r := vm(0, "", "images"); !strings.Contains(r.stdout, reg.host+"/e2e/vmctl ") || !strings.Contains(r.stdout, busyboxID[len("sha256:"):][:12]) {
			t.Errorf("images after load:\n%s", r.stdout)
		}

		// Failures are one line each, exit 125.
		garbage := filepath.Join(t.TempDir(), "garbage.tar")
		must(t, os.WriteFile(garbage, bytes.Repeat([]byte("not a tar "), 1000), 0o600))
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"load", "-i", garbage}, "not a valid image archive"},
			{[]string{"save", "-o", filepath.Join(t.TempDir(), "x.tar"), "no-such-image"}, "No such image: no-such-image"},
			{[]string{"tag", "no-such-image", "x:1"}, "No such image"},
			{[]string{"push", reg.host + "/e2e/not-here:1"}, "No such image"},
			{[]string{"push", "127.0.0.1:9/e2e/busybox:1"}, "No such image"},
		} {
			r := runClient(t, "", dc, append([]string{"-H", d.host()}, tc.args...)...)
			if r.code != 125 {
				t.Errorf("vmctl -H %s: exit %d, want 125", strings.Join(tc.args, " "), r.code)
			}
			oneLine(t, r, tc.want)
		}
		vm(0, "", "tag", "busybox", "127.0.0.1:9/e2e/busybox:1")
		r := runClient(t, "", dc, "-H", d.host(), "push", "127.0.0.1:9/e2e/busybox:1")
		if r.code != 125 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "cannot reach registry 127.0.0.1:9") {
			t.Errorf("push to a closed port: exit %d, stderr %q", r.code, r.stderr)
		}
		vm(0, "", "rmi", "127.0.0.1:9/e2e/busybox:1")
		vm(0, "", "rmi", ref)
	})

	t.Run("terminals", func(t *testing.T) {
		// An archive is never written to a terminal nor read from one, with
		// or without a daemon: each refusal is one line, exit 125.
		e := e2e(t)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"-H", d.host(), "save", "busybox"}, "refusing to write an image archive to a terminal"},
			{[]string{"--data-root", e.dataRoot, "--exec-root", e.execRoot, "save", "busybox"}, "refusing to write an image archive to a terminal"},
			{[]string{"-H", d.host(), "load"}, "stdin, which is a terminal"},
			{[]string{"--data-root", e.dataRoot, "--exec-root", e.execRoot, "load"}, "stdin, which is a terminal"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			c := clientCmd(ctx, e, nil, tc.args...)
			c.SysProcAttr = nil // pty.Start makes its own session
			ptmx, err := pty.Start(c)
			must(t, err)
			var out bytes.Buffer
			out.ReadFrom(ptmx) // ends with EIO when vmctl exits
			err = c.Wait()
			ptmx.Close()
			cancel()
			code := -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			text := strings.TrimSpace(strings.ReplaceAll(out.String(), "\r", ""))
			if code != 125 || strings.Count(text, "\n") != 0 || !strings.Contains(text, tc.want) {
				t.Errorf("vmctl %s on a terminal: exit %d, output %q; want 125 and one line containing %q", strings.Join(tc.args, " "), code, text, tc.want)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		c := d.http()
		get := func(path string) (int, string) {
			resp, err := c.Get("http://vmctld" + path)
			must(t, err)
			defer resp.Body.Close()
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			return resp.StatusCode, b.String()
		}
		_, before := get("/v1.41/images/json")
		for _, tc := range []struct {
			name, method, path string
			body               []byte
			code               int
			want               string
		}{
			// A load's failure comes in its stream, as dockerd sends it.
			{"garbage tarball", "POST", "/v1.41/images/load", bytes.Repeat([]byte("garbage!"), 4096), 200, "not a valid image archive"},
			{"truncated tarball", "POST", "/v1.41/images/load", truncatedSave(t, d), 200, "truncated"},
			{"save unknown image", "GET", "/v1.41/images/no-such-image/get", nil, 404, "No such image"},
			{"save bad reference", "GET", "/v1.41/images/get?names=Bad:Ref:x", nil, 400, "invalid reference format"},
			{"tag unknown image", "POST", "/v1.41/images/no-such-image/tag?repo=x&tag=1", nil, 404, "No such image"},
			{"tag bad reference", "POST", "/v1.41/images/busybox/tag?repo=Bad/Name&tag=1", nil, 400, "invalid reference format"},
			{"push unknown image", "POST", "/v1.41/images/" + reg.host + "/e2e/absent/push?tag=1", nil, 404, "No such image"},
			{"push bad reference", "POST", "/v1.41/images/Bad/Name/push?tag=1", nil, 400, "invalid reference format"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, "http://vmctld"+tc.path, bytes.NewReader(tc.body))
				must(t, err)
				req.Header.Set("Content-Type", "application/x-tar")
				resp, err := c.Do(req)
				must(t, err)
				defer resp.Body.Close()
				// An error reply's message, or a stream's error.
				var msg struct{ Message, Error string }
				err = json.NewDecoder(resp.Body).Decode(&msg)
				if resp.StatusCode != tc.code || err != nil || !strings.Contains(msg.Message+msg.Error, tc.want) {
					t.Errorf("%s %s = %d %q (%v), want %d with a JSON message containing %q", tc.method, tc.path, resp.StatusCode, msg.Message+msg.Error, err, tc.code, tc.want)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q, want application/json", ct)
				}
			})
		}
		if code, body := get("/_ping"); code != 200 || body != "OK" {
			t.Fatalf("daemon after bad input: ping = %d %q", code, body)
		}
		if _, after := get("/v1.41/images/json"); after != before {
			t.Errorf("bad input changed the images:\nbefore %s\nafter  %s", before, after)
		}
		// Nothing staged was left behind by the refused loads.
		// (The loads staged there, so the directory exists: a read error
		// is a failure, not an empty listing.)
		left, err := os.ReadDir(filepath.Join(d.dataRoot, "images", "tmp"))
		must(t, err)
		if len(left) != 0 {
			t.Errorf("image store's staging area holds %d entries after refused loads", len(left))
		}
	})
}

// truncatedSave is busybox as the daemon saves it, cut in the middle of a blob.
func truncatedSave(t *testing.T, d *daemon) []byte {
	t.Helper()
	resp, err := d.http().Get("http://vmctld/v1.41/images/busybox/get")
	must(t, err)
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || b.Len() < 4096 {
		t.Fatalf("save busybox = %d, %d bytes", resp.StatusCode, b.Len())
	}
	return b.Bytes()[:b.Len()/2]
}
