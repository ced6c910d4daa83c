package tests

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The docker CLI's run flags, and the lifecycle commands that act on a
// running container: kill, wait, restart, start -a -i, and run -it on a pty. (docker run itself
// waits for the exit before it starts the container: the other tests.)
func TestDockerCLILifecycle(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "life", "cat", "w", "chatty") })

	t.Run("run flags", func(t *testing.T) {
		script := `echo "$FOO $(pwd) $(id -u):$(id -g) $(hostname) $(nproc)"; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done`
		d.mustDocker(t, 0, "", "run", "-d", "--name", "life", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000",
			"--hostname", "hh", "--memory", "96m", "--cpus", "2", "busybox", "sh", "-c", script)
		want := "bar /tmp 1000:1000 hh 2\n"
		waitFor(t, func() bool { return d.docker(t, "", "logs", "life").stdout == want }, "the first line of life: "+want)
		r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.Name}} {{.Config.Hostname}} {{.Config.User}} {{.Config.WorkingDir}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.State.Running}}", "life")
		if got := strings.TrimSpace(r.stdout); got != "/life hh 1000:1000 /tmp 100663296 2000000000 true" {
			t.Errorf("docker inspect life = %q", got)
		}
	})

	t.Run("kill TERM and wait", func(t *testing.T) {
		d.mustDocker(t, 0, "", "kill", "-s", "TERM", "life")
		if r := d.mustDocker(t, 0, "", "wait", "life"); strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("docker wait after the trap exited 0 = %q", r.stdout)
		}
		if logs := d.mustDocker(t, 0, "", "logs", "life").stdout; !strings.HasSuffix(logs, "got-term\n") {
			t.Errorf("the trap's line is not in the log: %q", logs)
		}
	})

	t.Run("restart then kill", func(t *testing.T) {
		d.mustDocker(t, 0, "", "restart", "-t", "1", "life")
		waitFor(t, func() bool {
			return strings.Count(d.docker(t, "", "logs", "life").stdout, "bar /tmp") == 2
		}, "the restarted container's first line")
		if st := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.RestartCount}}", "life").stdout); !strings.HasPrefix(st, "running") {
			t.Errorf("after restart: %q, want running", st)
		}
		d.mustDocker(t, 0, "", "kill", "life")
		if r := d.mustDocker(t, 0, "", "wait", "life"); strings.TrimSpace(r.stdout) != "137" {
			t.Errorf("docker wait after docker kill = %q, want 137", r.stdout)
		}
	})

	t.Run("start -a -i", func(t *testing.T) {
		d.mustDocker(t, 0, "", "create", "-i", "--name", "cat", "busybox", "sh", "-c", "cat; echo done")
		r := d.mustDocker(t, 0, "first\nsecond\n", "start", "-a", "-i", "cat")
		if r.stdout != "first\nsecond\ndone\n" {
			t.Errorf("docker start -a -i cat = %q", r.stdout)
		}
		// And again: the same container, a second run, its own input.
		r = d.mustDocker(t, 0, "third\n", "start", "-a", "-i", "cat")
		if r.stdout != "third\ndone\n" {
			t.Errorf("second docker start -a -i cat = %q", r.stdout)
		}
	})

	t.Run("wait blocks until the exit", func(t *testing.T) {
		d.mustDocker(t, 0, "", "run", "-d", "--name", "w", "busybox", "sh", "-c", "sleep 2; exit 5")
		if r := d.mustDocker(t, 0, "", "wait", "w"); strings.TrimSpace(r.stdout) != "5" {
			t.Errorf("docker wait w = %q, want 5", r.stdout)
		}
		// A container that is not running: docker answers at once with its
		// last exit code.
		if r := d.mustDocker(t, 0, "", "wait", "w"); strings.TrimSpace(r.stdout) != "5" {
			t.Errorf("second docker wait w = %q, want 5", r.stdout)
		}
	})

	t.Run("logs -f", func(t *testing.T) {
		// Follows the output as it comes and ends when the container does.
		d.mustDocker(t, 0, "", "run", "-d", "--name", "chatty", "busybox", "sh", "-c", "echo one; sleep 1; echo two >&2; sleep 1; echo three")
		r := d.mustDocker(t, 0, "", "logs", "-f", "chatty")
		if r.stdout != "one\nthree\n" || r.stderr != "two\n" {
			t.Errorf("docker logs -f chatty: stdout %q stderr %q, want one, three and two on stderr", r.stdout, r.stderr)
		}
		if st := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}}", "chatty").stdout); st != "exited" {
			t.Errorf("after logs -f returned the container is %q, want exited", st)
		}
		r = d.mustDocker(t, 0, "", "logs", "--tail", "1", "chatty")
		if r.stdout != "three\n" {
			t.Errorf("docker logs --tail 1 = %q", r.stdout)
		}
	})

	t.Run("run -it", func(t *testing.T) {
		// The docker CLI on a real pty: raw terminal, size and resize, exit status.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "docker", "run", "-i", "-t", "--rm", "busybox", "sh")
		c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
		driveTerminal(t, c)
	})

	t.Run("info", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "info", "--format", "{{.Containers}} {{.ContainersStopped}} {{.OperatingSystem}}")
		if f := strings.Fields(r.stdout); len(f) < 3 || f[0] != "4" || f[1] != "4" {
			t.Errorf("docker info = %q, want 4 containers, 4 stopped", r.stdout)
		}
	})

	d.mustDocker(t, 0, "", "rm", "life", "cat", "w", "chatty")
	if r := d.mustDocker(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
		t.Errorf("containers left after rm: %q", r.stdout)
	}
}
