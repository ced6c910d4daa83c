package tests

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// docker runs the real docker CLI against d, with stdin if given.
func (d *daemon) docker(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", args...)
	// A private config dir: no credentials or contexts of this machine.
	c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	return capture(ctx, t, c, in)
}

func (d *daemon) mustDocker(t *testing.T, want int, stdin string, args ...string) result {
	t.Helper()
	r := d.docker(t, stdin, args...)
	if r.code != want {
		t.Fatalf("docker %s: exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr, d.stderr)
	}
	return r
}

// The real docker CLI drives vmctld through a container's whole life.
func TestDockerCLI(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)

	t.Run("version", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}")
		if got := strings.TrimSpace(r.stdout); got != "1.41 linux" {
			t.Errorf("server version = %q, want \"1.41 linux\"", got)
		}
	})
	t.Run("images", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "images", "--format", "{{.Repository}}:{{.Tag}}")
		if !strings.Contains(r.stdout, "busybox:latest") {
			t.Errorf("docker images = %q, want busybox:latest", r.stdout)
		}
	})
	t.Run("run rm", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "run", "--rm", "busybox", "echo", "hi")
		if r.stdout != "hi\n" {
			t.Errorf("stdout = %q, want \"hi\\n\"", r.stdout)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2")
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("stdout %q stderr %q, want out and err on their own streams", r.stdout, r.stderr)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		d.mustDocker(t, 3, "", "run", "--rm", "busybox", "sh", "-c", "exit 3")
	})
	t.Run("stdin", func(t *testing.T) {
		r := d.mustDocker(t, 0, "line one\nline two\n", "run", "--rm", "-i", "busybox", "cat")
		if r.stdout != "line one\nline two\n" {
			t.Errorf("stdout = %q, want the input back", r.stdout)
		}
	})
	t.Run("lifecycle", func(t *testing.T) {
		script := "cat /data 2>/dev/null; echo started > /data; echo started; sleep 30"
		d.mustDocker(t, 0, "", "run", "-d", "--name", "x", "busybox", "sh", "-c", script)
		waitFor(t, func() bool { return d.docker(t, "", "logs", "x").stdout == "started\n" }, "docker logs x to show started")
		if r := d.mustDocker(t, 0, "", "ps", "--format", "{{.Names}} {{.Status}}"); !strings.HasPrefix(r.stdout, "x Up ") {
			t.Errorf("docker ps = %q, want x Up ...", r.stdout)
		}
		d.mustDocker(t, 0, "", "stop", "-t", "1", "x")
		if r := d.mustDocker(t, 0, "", "ps", "-a", "--format", "{{.Names}} {{.Status}}"); !strings.HasPrefix(r.stdout, "x Exited (137)") {
			t.Errorf("docker ps -a = %q, want x Exited (137) ...", r.stdout)
		}
		// The second run reads the file the first wrote: the writable
		// layer survived the stop. It is killed after its output appears.
		done := make(chan result, 1)
		go func() { done <- d.docker(t, "", "start", "-a", "x") }()
		waitFor(t, func() bool { return strings.Count(d.docker(t, "", "logs", "x").stdout, "started") == 3 }, "the second run's output")
		d.mustDocker(t, 0, "", "rm", "-f", "x")
		r := <-done
		if r.stdout != "started\nstarted\n" {
			t.Errorf("docker start -a printed %q, want the file's content then the echo", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("docker ps -a -q = %q after rm -f, want nothing", r.stdout)
		}
	})
	t.Run("unknown image", func(t *testing.T) {
		// The CLI tries to pull it; with no registry reachable, the error
		// is one line and nothing is created.
		r := d.docker(t, "", "run", "--rm", "127.0.0.1:9/no-such-image", "true")
		if r.code != 125 {
			t.Errorf("exit %d, want 125; stderr %q", r.code, r.stderr)
		}
		var errLines []string
		for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if !strings.HasPrefix(l, "Unable to find image") && !strings.HasPrefix(l, "Run '") && l != "" {
				errLines = append(errLines, l)
			}
		}
		if len(errLines) != 1 || !strings.Contains(errLines[0], "127.0.0.1:9") {
			t.Errorf("stderr = %q, want one error line naming the registry", r.stderr)
		}
		if r := d.mustDocker(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("docker ps -a -q = %q, want nothing", r.stdout)
		}
	})
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
