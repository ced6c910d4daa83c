package tests

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// buildContext writes a context: a two-stage Dockerfile without RUN, a
// .dockerignore, and the files it copies.
func buildContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"Dockerfile": `ARG BASE=busybox
FROM ${BASE} AS src
COPY --chown=1000:1000 --chmod=0640 data.txt /src/data.txt
FROM ${BASE}
ARG WHO=world
ENV GREETING="hello ${WHO}"
WORKDIR /app
COPY --from=src /src/data.txt ./data.txt
COPY conf/ /etc/app/
RUN echo "ran as $(id -u) for $WHO" > run.txt && rm /etc/app/app.conf && ls /etc/app | wc -l > count.txt
COPY *.md /docs/
LABEL org.example.tier=demo
EXPOSE 8080
VOLUME /var/lib/app
CMD ["sh", "-c", "echo $GREETING; stat -c '%u:%g %a' /app/data.txt; cat /app/data.txt /app/run.txt /app/count.txt; ls /docs; test -e /etc/app/app.conf || echo conf removed"]
`,
		".dockerignore": "*.log\nconf/secret\n",
		"data.txt":      "payload\n",
		"conf/app.conf": "conf\n",
		"conf/secret":   "secret\n",
		"readme.md":     "readme\n",
		"debug.log":     "log\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(body), 0o644))
	}
	return dir
}

// diskFiles lists the daemon's cached image disks.
func diskFiles(t *testing.T, d *daemon) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(d.dataRoot, "disks", "*.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// Builds through vmctl, the docker CLI and the raw API: the image runs and
// shows what each instruction set; a rebuild runs nothing; a changed file
// rebuilds from its COPY on; bad input is one clear line and no image.
func TestBuild(t *testing.T) {
	d := startDaemon(t)
	dir := buildContext(t)

	t.Run("vmctl build", func(t *testing.T) {
		r := d.mustVmctl(t, 0, "", "build", "-t", "built:1", "--label", "by=vmctl", dir)
		for _, want := range []string{"Step 1/14 : FROM ${BASE} AS src", "Step 14/14 : CMD", "Successfully built", "Successfully tagged built:1"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("build output lacks %q:\n%s", want, r.stdout)
			}
		}
		r = d.mustVmctl(t, 0, "", "run", "--rm", "built:1")
		if want := "hello world\n1000:1000 640\npayload\nran as 0 for world\n0\nreadme.md\nconf removed\n"; r.stdout != want {
			t.Errorf("the built image printed %q, want %q", r.stdout, want)
		}
		r = d.mustVmctl(t, 0, "", "inspect", "-f", "{{.Config.WorkingDir}} {{.Config.Labels}} {{.Config.ExposedPorts}} {{.Config.Volumes}}", "built:1")
		if want := "/app map[by:vmctl org.example.tier:demo] map[8080/tcp:{}] map[/var/lib/app:{}]\n"; r.stdout != want {
			t.Errorf("inspect = %q, want %q", r.stdout, want)
		}
		// History: the image's steps, newest first, the newest with the ID.
		id := strings.TrimSpace(d.mustVmctl(t, 0, "", "inspect", "-f", "{{.ID}}", "built:1").stdout)
		r = d.mustDocker(t, 0, "", "history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", "built:1")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) < 12 || !strings.HasPrefix(lines[0], id+"|") || !strings.Contains(lines[0], "LABEL") ||
			!strings.Contains(r.stdout, "COPY dir:") || !strings.Contains(r.stdout, "WORKDIR /app") {
			t.Errorf("docker history built:1:\n%s", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "history", "-q", "built:1"); !strings.HasPrefix(r.stdout, strings.TrimPrefix(id, "sha256:")[:12]+"\n<missing>\n") {
			t.Errorf("vmctl history -q built:1 = %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "built:1", "ls", "-a", "/etc/app"); r.stdout != ".\n..\n" {
			t.Errorf("/etc/app holds %q: .dockerignore not applied, or the RUN's removal lost", r.stdout)
		}
		// The step's build container is gone.
		if r := d.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("containers left after the build: %q", r.stdout)
		}
	})

	t.Run("cache", func(t *testing.T) {
		before := d.mustVmctl(t, 0, "", "images", "-a", "-q").stdout
		r := d.mustVmctl(t, 0, "", "build", "-t", "built:1", "--label", "by=vmctl", dir)
		if n := strings.Count(r.stdout, " ---> Using cache"); n != 13 {
			t.Errorf("rebuild: %d steps from the cache, want 13 (all but the two FROMs, and the --label)\n%s", n, r.stdout)
		}
		if after := d.mustVmctl(t, 0, "", "images", "-a", "-q").stdout; after != before {
			t.Errorf("a rebuild with nothing changed made images:\nbefore %s\nafter %s", before, after)
		}
		if strings.Contains(d.mustVmctl(t, 0, "", "images").stdout, "<none>") {
			t.Error("docker images shows the build's intermediate images")
		}
		must(t, os.WriteFile(filepath.Join(dir, "readme.md"), []byte("changed\n"), 0o644))
		r = d.mustVmctl(t, 0, "", "build", "-t", "built:1", dir)
		if n := strings.Count(r.stdout, " ---> Using cache"); n != 7 {
			t.Errorf("after changing readme.md: %d steps from the cache, want 7 (those before COPY *.md)\n%s", n, r.stdout)
		}
		// The next run writes the disk of the changed layer alone: the
		// layers below it keep theirs.
		disksBefore := diskFiles(t, d)
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "built:1", "cat", "/docs/readme.md", "/app/data.txt"); r.stdout != "changed\npayload\n" {
			t.Errorf("the rebuilt image shows %q", r.stdout)
		}
		var made []string
		for _, f := range diskFiles(t, d) {
			if !slices.Contains(disksBefore, f) {
				made = append(made, f)
			}
		}
		if len(made) != 1 || !strings.HasPrefix(made[0], "layer-") {
			t.Errorf("the run after a one-file change made disks %v, want one layer disk (had %v)", made, disksBefore)
		}
		// docker inspect shows the stack where overlay2 shows its lower
		// directories: the changed layer's disk on top, a flattened one
		// at the bottom.
		id := strings.TrimSpace(d.mustDocker(t, 0, "", "create", "built:1").stdout)
		lower := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.GraphDriver.Name}} {{.GraphDriver.Data.LowerDir}}", id).stdout)
		d.mustDocker(t, 0, "", "rm", id)
		stack := strings.Split(strings.TrimPrefix(lower, "vmctl-disk "), ":")
		if len(made) != 1 || len(stack) < 2 || len(stack) > 4 || filepath.Base(stack[0]) != made[0] || !strings.HasPrefix(filepath.Base(stack[len(stack)-1]), "flat-") {
			t.Errorf("inspect's GraphDriver = %q, want vmctl-disk and the stack: %s on top, a flattened disk at the bottom", lower, made)
		}
		r = d.mustVmctl(t, 0, "", "build", "--no-cache", "-q", "--iidfile", filepath.Join(t.TempDir(), "iid"), dir)
		if !strings.HasPrefix(r.stdout, "sha256:") || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("build -q printed %q, want the image ID alone", r.stdout)
		}
	})

	t.Run("docker build", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "build", "-t", "dbuilt", "--build-arg", "WHO=docker", dir)
		if !strings.Contains(r.stdout, "Successfully tagged dbuilt:latest") {
			t.Errorf("docker build output:\n%s\n%s", r.stdout, r.stderr)
		}
		if r := d.mustDocker(t, 0, "", "run", "--rm", "dbuilt"); !strings.HasPrefix(r.stdout, "hello docker\n") || !strings.Contains(r.stdout, "ran as 0 for docker\n") {
			t.Errorf("docker run dbuilt printed %q", r.stdout)
		}
		// The context from stdin, as a tar.
		r = d.mustDocker(t, 0, tarDir(t, dir), "build", "-q", "-")
		if !strings.HasPrefix(r.stdout, "sha256:") {
			t.Errorf("docker build -q - printed %q", r.stdout)
		}
	})

	t.Run("API", func(t *testing.T) {
		resp, err := d.http().Post("http://d/v1.41/build?t=apibuilt&buildargs="+`%7B%22WHO%22%3A%22api%22%7D`, "application/x-tar", strings.NewReader(tarDir(t, dir)))
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"aux":{"ID":"sha256:`)) || !bytes.Contains(body, []byte("Successfully tagged apibuilt:latest")) {
			t.Errorf("POST /build: %d\n%s", resp.StatusCode, body)
		}
		var last map[string]any
		for _, l := range bytes.Split(bytes.TrimSpace(body), []byte("\n")) {
			must(t, json.Unmarshal(l, &last))
		}
		// A bad Dockerfile: a 400 before any output.
		resp, err = d.http().Post("http://d/v1.41/build?dockerfile=nope", "application/x-tar", strings.NewReader(tarDir(t, dir)))
		must(t, err)
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("Cannot locate specified Dockerfile: nope")) {
			t.Errorf("POST /build?dockerfile=nope: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("registry", func(t *testing.T) {
		// A built image goes to a registry and comes back with the same
		// digest, and its layers follow the OCI rules: the RUN's deletion
		// is a whiteout file, no overlayfs device or attribute, clean names.
		reg := startRegistry(t, "", "")
		ref := reg.host + "/built:1"
		d.mustVmctl(t, 0, "", "tag", "built:1", ref)
		push := d.mustVmctl(t, 0, "", "push", ref)
		m := regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`).FindStringSubmatch(push.stdout)
		if m == nil {
			t.Fatalf("push printed no digest:\n%s", push.stdout)
		}
		r, err := name.ParseReference(ref)
		must(t, err)
		img, err := remote.Image(r)
		must(t, err)
		layers, err := img.Layers()
		must(t, err)
		whiteout := false
		for i, l := range layers {
			rc, err := l.Uncompressed()
			must(t, err)
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				must(t, err)
				n := strings.TrimSuffix(h.Name, "/")
				if strings.HasPrefix(n, "/") || strings.Contains("/"+n+"/", "/../") {
					t.Errorf("layer %d: entry %q", i, h.Name)
				}
				if h.Typeflag == tar.TypeChar && h.Devmajor == 0 && h.Devminor == 0 {
					t.Errorf("layer %d: an overlayfs whiteout device %q", i, h.Name)
				}
				for k := range h.PAXRecords {
					if strings.Contains(k, "overlay") {
						t.Errorf("layer %d: %q carries %s", i, h.Name, k)
					}
				}
				whiteout = whiteout || n == "etc/app/.wh.app.conf"
			}
			rc.Close()
		}
		if !whiteout {
			t.Error("no layer holds the RUN's whiteout etc/app/.wh.app.conf")
		}
		d.mustVmctl(t, 0, "", "rmi", ref)
		d.mustVmctl(t, 0, "", "pull", ref)
		if got := d.mustVmctl(t, 0, "", "inspect", "-f", "{{range .RepoDigests}}{{.}}{{end}}", ref).stdout; !strings.Contains(got, m[1]) {
			t.Errorf("pulled back: repo digests %q, want %s", got, m[1])
		}
		if r := d.mustVmctl(t, 0, "", "run", "--rm", ref); !strings.Contains(r.stdout, "conf removed\n") {
			t.Errorf("the pulled image printed %q", r.stdout)
		}
	})

	t.Run("commit", func(t *testing.T) {
		d.mustVmctl(t, 0, "", "run", "-d", "--name", "work", "busybox", "sh", "-c",
			"mkdir -p /data && echo saved > /data/file && rm /etc/group && touch /ready && sleep 600")
		t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "work") })
		waitFor(t, func() bool { return d.vmctl(t, "", "exec", "work", "test", "-e", "/ready").code == 0 }, "the container's changes")
		r := d.mustDocker(t, 0, "", "commit", "-c", `CMD ["cat", "/data/file"]`, "-c", "ENV COMMITTED=1", "-m", "by test", "work", "committed:1")
		if !strings.HasPrefix(r.stdout, "sha256:") {
			t.Errorf("docker commit printed %q", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "run", "--rm", "committed:1"); r.stdout != "saved\n" {
			t.Errorf("the committed image's CMD printed %q", r.stdout)
		}
		r = d.mustVmctl(t, 0, "", "run", "--rm", "committed:1", "sh", "-c", "test -e /etc/group || echo group gone; echo $COMMITTED")
		if r.stdout != "group gone\n1\n" {
			t.Errorf("the committed image: %q", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "history", "--format", "{{.Comment}}", "committed:1"); !strings.HasPrefix(r.stdout, "by test\n") {
			t.Errorf("docker history's comment: %q", r.stdout)
		}
		// diff and export of the same container.
		r = d.mustDocker(t, 0, "", "diff", "work")
		for _, want := range []string{"A /data\n", "A /data/file\n", "C /etc\n", "D /etc/group\n", "A /ready\n"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("docker diff lacks %q:\n%s", want, r.stdout)
			}
		}
		if r := d.mustVmctl(t, 0, "", "diff", "work"); !strings.Contains(r.stdout, "D /etc/group\n") {
			t.Errorf("vmctl diff:\n%s", r.stdout)
		}
		out := filepath.Join(t.TempDir(), "fs.tar")
		d.mustDocker(t, 0, "", "export", "-o", out, "work")
		list, err := exec.Command("tar", "-tf", out).Output()
		must(t, err)
		names := "\n" + string(list)
		if !strings.Contains(names, "\ndata/file\n") || !strings.Contains(names, "\nbin/sh\n") || strings.Contains(names, "etc/group\n") || strings.Contains(names, ".wh.") {
			t.Errorf("docker export's tar holds:\n%s", list)
		}
		if r := d.mustVmctl(t, 0, "", "commit", "work"); !strings.HasPrefix(r.stdout, "sha256:") {
			t.Errorf("vmctl commit printed %q", r.stdout)
		}
		d.mustVmctl(t, 0, "", "rm", "-f", "work")
		// A container that ran and exited: its VM is booted for the
		// operation, and it stays exited.
		d.mustVmctl(t, 0, "", "run", "--name", "stopped", "busybox", "sh", "-c", "echo kept > /kept; rm /etc/group")
		t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "stopped") })
		if r := d.mustVmctl(t, 0, "", "diff", "stopped"); !strings.Contains(r.stdout, "A /kept\n") || !strings.Contains(r.stdout, "D /etc/group\n") {
			t.Errorf("diff of an exited container:\n%s", r.stdout)
		}
		d.mustDocker(t, 0, "", "commit", "-c", `CMD ["cat", "/kept"]`, "stopped", "fromstopped:1")
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "fromstopped:1"); r.stdout != "kept\n" {
			t.Errorf("the image of an exited container printed %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "inspect", "-f", "{{.State.Status}}", "stopped"); r.stdout != "exited\n" {
			t.Errorf("the container after commit and diff: %q", r.stdout)
		}
		d.mustDocker(t, 1, "", "commit", "-c", "RUN true", "stopped")
	})

	t.Run("cp", func(t *testing.T) {
		d.mustVmctl(t, 0, "", "run", "-d", "--name", "cpw", "busybox", "sh", "-c",
			"mkdir -p /srv/d && echo inner > /srv/d/f && chown 1000:1000 /srv/d/f && ln -s /srv/d /srv/link && ln -s /../../.. /srv/up && touch /ready && sleep 600")
		t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "cpw") })
		waitFor(t, func() bool { return d.vmctl(t, "", "exec", "cpw", "test", "-e", "/ready").code == 0 }, "the container's files")
		local := t.TempDir()
		// Out: a directory as a new name, a file through a symlink.
		d.mustDocker(t, 0, "", "cp", "cpw:/srv/d", filepath.Join(local, "out"))
		if b, err := os.ReadFile(filepath.Join(local, "out", "f")); err != nil || string(b) != "inner\n" {
			t.Errorf("docker cp of a directory out: %q, %v", b, err)
		}
		d.mustVmctl(t, 0, "", "cp", "cpw:/srv/link/f", filepath.Join(local, "f2"))
		if b, err := os.ReadFile(filepath.Join(local, "f2")); err != nil || string(b) != "inner\n" {
			t.Errorf("vmctl cp of a file through a symlink: %q, %v", b, err)
		}
		// In: into a directory, and as a new name, with docker and vmctl.
		must(t, os.WriteFile(filepath.Join(local, "in.txt"), []byte("from host\n"), 0o640))
		d.mustDocker(t, 0, "", "cp", filepath.Join(local, "in.txt"), "cpw:/srv/d/")
		d.mustVmctl(t, 0, "", "cp", filepath.Join(local, "in.txt"), "cpw:/srv/renamed.txt")
		r := d.mustVmctl(t, 0, "", "exec", "cpw", "sh", "-c", "cat /srv/d/in.txt /srv/renamed.txt; stat -c '%u %a' /srv/d/in.txt")
		if r.stdout != "from host\nfrom host\n0 640\n" {
			t.Errorf("files copied in: %q", r.stdout)
		}
		// A symlink out of the root stays in it: /srv/up is the
		// container's root, as inside the container.
		d.mustVmctl(t, 0, "", "cp", filepath.Join(local, "in.txt"), "cpw:/srv/up/planted")
		if r := d.mustVmctl(t, 0, "", "exec", "cpw", "cat", "/planted"); r.stdout != "from host\n" {
			t.Errorf("a copy through /srv/up: %q", r.stdout)
		}
		d.mustDocker(t, 0, "", "cp", "cpw:/srv/up/srv/d/f", filepath.Join(local, "f3"))
		if b, _ := os.ReadFile(filepath.Join(local, "f3")); string(b) != "inner\n" {
			t.Errorf("cp out through /srv/up read %q, not the container's /srv/d/f", b)
		}
		// The container's own /etc/hostname, bound over the image's, as
		// the container sees it.
		d.mustDocker(t, 0, "", "cp", "cpw:/etc/hostname", filepath.Join(local, "hostname"))
		host := d.mustVmctl(t, 0, "", "exec", "cpw", "cat", "/etc/hostname").stdout
		if b, err := os.ReadFile(filepath.Join(local, "hostname")); err != nil || string(b) != host || host == "" {
			t.Errorf("docker cp of /etc/hostname: %q, %v; the container has %q", b, err, host)
		}
		if r := d.mustDocker(t, 1, "", "cp", "cpw:/nothing", local); !strings.Contains(r.stderr, "No such") && !strings.Contains(r.stderr, "no such") {
			t.Errorf("docker cp of nothing: %q", r.stderr)
		}
		// A created container that never ran: in, then out again.
		d.mustVmctl(t, 0, "", "create", "--name", "cpstopped", "busybox", "cat", "/tmp/renamed.txt")
		t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "cpstopped") })
		d.mustDocker(t, 0, "", "cp", filepath.Join(local, "in.txt"), "cpstopped:/tmp/renamed.txt")
		d.mustVmctl(t, 0, "", "cp", "cpstopped:/tmp/renamed.txt", filepath.Join(local, "back.txt"))
		if b, err := os.ReadFile(filepath.Join(local, "back.txt")); err != nil || string(b) != "from host\n" {
			t.Errorf("a file copied into a created container and back: %q, %v", b, err)
		}
		if r := d.mustVmctl(t, 0, "", "start", "-a", "cpstopped"); r.stdout != "from host\n" {
			t.Errorf("the created container, started, read %q", r.stdout)
		}
		// A path under a volume of a stopped container is the volume's:
		// another container that mounts the volume reads the copy.
		d.mustVmctl(t, 0, "", "create", "--name", "cpvolc", "-v", "cpvol:/data", "busybox", "true")
		t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "cpvolc"); d.vmctl(t, "", "volume", "rm", "cpvol") })
		d.mustDocker(t, 0, "", "cp", filepath.Join(local, "in.txt"), "cpvolc:/data/in.txt")
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "-v", "cpvol:/v", "busybox", "cat", "/v/in.txt"); r.stdout != "from host\n" {
			t.Errorf("the volume of a stopped container, copied into, holds %q", r.stdout)
		}
		d.mustDocker(t, 0, "", "cp", "cpvolc:/data/in.txt", filepath.Join(local, "vol.txt"))
		if b, err := os.ReadFile(filepath.Join(local, "vol.txt")); err != nil || string(b) != "from host\n" {
			t.Errorf("a file copied out of a stopped container's volume: %q, %v", b, err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		bad := t.TempDir()
		before := d.mustVmctl(t, 0, "", "images", "-a", "-q").stdout
		for _, tc := range []struct{ dockerfile, want string }{
			{"FROM busybox\nCOPY ../x /x\n", "forbidden path outside the build context"},
			{"FROM busybox\nCOPY missing /x\n", "file not found in build context"},
			{"FROM busybox\nFROBNICATE\n", "line 2"},
			{"FROM busybox\nRUN echo failing; exit 3\n", "returned a non-zero code: 3"},
		} {
			must(t, os.WriteFile(filepath.Join(bad, "Dockerfile"), []byte(tc.dockerfile), 0o644))
			r := d.mustVmctl(t, 1, "", "build", "-t", "bad", bad)
			oneLine(t, r, tc.want)
			r = d.mustDocker(t, 1, "", "build", "-t", "bad", bad)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("docker build of %q: stderr %q, want %q", tc.dockerfile, r.stderr, tc.want)
			}
		}
		r := d.mustVmctl(t, 1, "", "build", "--target", "nosuch", dir)
		oneLine(t, r, "failed to reach build target nosuch")
		if after := d.mustVmctl(t, 0, "", "images", "-a", "-q").stdout; after != before {
			t.Errorf("failed builds left images:\nbefore %s\nafter %s", before, after)
		}
		if r := d.vmctl(t, "", "inspect", "bad"); r.code == 0 {
			t.Error("a failed build tagged bad")
		}
		if left, _ := filepath.Glob(filepath.Join(d.dataRoot, "images", "tmp", "build-*")); len(left) > 0 {
			t.Errorf("build scratch directories left: %v", left)
		}
	})

	t.Run("prune", func(t *testing.T) {
		// The build cache goes with docker builder prune; tagged images
		// keep their layers and run; a rebuild then runs every step.
		before := strings.Count(d.mustVmctl(t, 0, "", "images", "-a", "-q").stdout, "\n")
		r := d.mustDocker(t, 0, "", "builder", "prune", "-f")
		if !strings.Contains(r.stdout, "Total reclaimed space") {
			t.Errorf("docker builder prune printed %q", r.stdout)
		}
		all := d.mustVmctl(t, 0, "", "images", "-a", "-q").stdout
		if n := strings.Count(all, "\n"); n >= before || n != strings.Count(d.mustVmctl(t, 0, "", "images", "-q").stdout, "\n") {
			t.Errorf("after builder prune: %d images with -a (was %d), intermediate ones left:\n%s", n, before, all)
		}
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "built:1", "cat", "/app/run.txt"); !strings.HasPrefix(r.stdout, "ran as 0") {
			t.Errorf("built:1 after the prune: %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "build", "-t", "built:1", dir); strings.Contains(r.stdout, "Using cache") {
			t.Errorf("a rebuild after the prune used a cache:\n%s", r.stdout)
		}
		d.mustVmctl(t, 0, "", "image", "prune", "-f")
		if r := d.vmctl(t, "", "image", "prune"); r.code != 0 {
			t.Errorf("image prune without -f and no terminal: exit %d, %s", r.code, r.stderr)
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		// The client goes away while a RUN step runs: the step's VM
		// stops, and nothing of the build stays.
		ctxDir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM busybox\nRUN echo started; sleep 300\n"), 0o644))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := clientCmd(ctx, e2e(t), nil, "-H", d.host(), "build", "-t", "interrupted:1", ctxDir)
		out, err := c.StdoutPipe()
		must(t, err)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		must(t, c.Start())
		sc := bufio.NewScanner(out)
		var seen []string
		for sc.Scan() && sc.Text() != "started" {
			seen = append(seen, sc.Text())
		}
		if sc.Err() != nil || !strings.Contains(strings.Join(seen, "\n"), "RUN") {
			t.Fatalf("the build's output before the step: %q, %s", seen, stderr.String())
		}
		if r := d.mustVmctl(t, 0, "", "ps", "-a", "-q", "--filter", "label=io.vmctl.build"); r.stdout == "" {
			t.Error("no build container while the step runs")
		}
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		c.Wait()
		waitFor(t, func() bool { return d.mustVmctl(t, 0, "", "ps", "-a", "-q").stdout == "" }, "the build container's removal")
		waitFor(t, func() bool {
			left, _ := filepath.Glob(filepath.Join(d.dataRoot, "images", "tmp", "build-*"))
			return len(left) == 0
		}, "the build's scratch directory's removal")
		if r := d.vmctl(t, "", "inspect", "interrupted:1"); r.code == 0 {
			t.Error("an interrupted build tagged its image")
		}
	})
}

// tarDir is the directory dir as a tar, as a build context.
func tarDir(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	c := exec.Command("tar", "-C", dir, "-cf", "-", ".")
	c.Stdout = &b
	must(t, c.Run())
	tr := tar.NewReader(bytes.NewReader(b.Bytes()))
	if _, err := tr.Next(); err != nil {
		t.Fatalf("tar of %s: %v", dir, err)
	}
	return b.String()
}
