package tests

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Restart policies through the docker CLI and vmctl against vmctld, as
// dockerd applies them: on-failure:N restarts N times then leaves the
// container exited; always brings a container back even when it exited
// while the daemon was down; unless-stopped stays down after a stop,
// across a daemon restart, where always comes back.
func TestRestartPolicies(t *testing.T) {
	d := startDaemon(t)
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "onfail", "always", "unless") })
	state := func(name string) string {
		return strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}", name).stdout)
	}

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"run", "--restart", "sometimes", "busybox", "true"}, "invalid restart policy"},
			{[]string{"run", "--restart", "always:3", "busybox", "true"}, "only on-failure takes a count"},
			{[]string{"run", "--rm", "--restart", "always", "busybox", "true"}, "can't create 'AutoRemove' container with restart policy"},
		} {
			r := d.mustVmctl(t, 125, "", tc.args...)
			oneLine(t, r, tc.want)
		}
		if r := d.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("refused creates left containers: %q", r.stdout)
		}
		// Without a daemon nothing would restart the container.
		r := runClient(t, "", nil, "--data-root", d.dataRoot, "--exec-root", d.execRoot, "run", "--pull", "never", "--restart", "always", "busybox", "true")
		if r.code != 125 || !strings.Contains(r.stderr, "needs vmctld") {
			t.Errorf("a restart policy without a daemon: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("on-failure:2", func(t *testing.T) {
		d.mustDocker(t, 0, "", "run", "-d", "--name", "onfail", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo ran; exit 3")
		waitFor(t, func() bool { return state("onfail") == "exited 2 3" }, "two restarts, then exited 3")
		// And no third: the back-off is well under a second by then.
		time.Sleep(2 * time.Second)
		if s := state("onfail"); s != "exited 2 3" {
			t.Errorf("after the second restart: %q, want exited 2 3", s)
		}
		if r := d.mustDocker(t, 0, "", "logs", "onfail"); r.stdout != "ran\nran\nran\n" {
			t.Errorf("logs = %q, want three runs", r.stdout)
		}
		// attach with logs=1&stream=0: the output so far, then the end.
		req, err := http.NewRequest("POST", "http://vmctld/v1.41/containers/onfail/attach?logs=1&stream=0&stdout=1", nil)
		must(t, err)
		resp, err := d.http().Do(req)
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		frame := "\x01\x00\x00\x00\x00\x00\x00\x04ran\n"
		if resp.StatusCode != 200 || string(body) != strings.Repeat(frame, 3) {
			t.Errorf("attach logs=1 stream=0 = %d %q, want three stdout frames", resp.StatusCode, body)
		}
		// docker logs --since/--until keep the output of a time window.
		if r := d.mustDocker(t, 0, "", "logs", "--since", "1h", "onfail"); r.stdout != "ran\nran\nran\n" {
			t.Errorf("logs --since 1h = %q", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "logs", "--until", "2020-01-01T00:00:00Z", "onfail"); r.stdout != "" {
			t.Errorf("logs --until 2020 = %q, want nothing", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "logs", "--since", "2020-01-01T00:00:00Z", "--tail", "1", "onfail"); r.stdout != "ran\n" {
			t.Errorf("vmctl logs --since 2020 --tail 1 = %q", r.stdout)
		}
		r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}", "onfail")
		if r.stdout != "on-failure:2\n" {
			t.Errorf("inspect's RestartPolicy = %q", r.stdout)
		}
		// vmctl update and docker update change the policy of a stopped
		// container...
		d.mustVmctl(t, 0, "", "update", "--restart", "no", "onfail")
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "onfail"); r.stdout != "no\n" {
			t.Errorf("after docker update --restart no: %q", r.stdout)
		}
		d.mustDocker(t, 0, "", "update", "--restart", "on-failure:2", "--memory", "96m", "onfail")
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Memory}}", "onfail"); r.stdout != "on-failure 100663296\n" {
			t.Errorf("after docker update --restart on-failure:2 --memory 96m: %q", r.stdout)
		}
		if r := d.mustDocker(t, 1, "", "update", "--pids-limit", "10", "onfail"); !strings.Contains(r.stderr, "PidsLimit is not supported") {
			t.Errorf("docker update --pids-limit: %q", r.stderr)
		}
		// A start by a user starts the count over.
		d.mustDocker(t, 0, "", "start", "onfail")
		waitFor(t, func() bool { return state("onfail") == "exited 2 3" }, "two restarts again after a start")
	})

	t.Run("daemon restarts", func(t *testing.T) {
		// always: exits while the daemon is down, and is back once it is up.
		d.mustVmctl(t, 0, "", "run", "-d", "--name", "always", "--restart", "always", "busybox", "sh", "-c", "sleep 3; echo done")
		// unless-stopped, stopped by a user: stays stopped.
		d.mustVmctl(t, 0, "", "run", "-d", "--name", "unless", "--restart", "unless-stopped", "busybox", "sleep", "600")
		d.mustVmctl(t, 0, "", "stop", "-t", "1", "unless")
		d.crash(t)
		time.Sleep(5 * time.Second) // "always" ends meanwhile
		d.launch(t, d.bin)
		waitFor(t, func() bool {
			s := strings.Fields(state("always"))
			return len(s) == 3 && s[0] == "running" && s[1] != "0"
		}, "the always container running again, restarted")
		if s := state("unless"); !strings.HasPrefix(s, "exited 0 ") {
			t.Errorf("unless-stopped after a stop and a daemon restart: %q, want exited", s)
		}
		// ...and of a running one, but not its size: its VM is sized.
		if r := d.mustDocker(t, 1, "", "update", "--memory", "128m", "always"); !strings.Contains(r.stderr, "stop it, update it, start it") {
			t.Errorf("docker update --memory of a running container: %q", r.stderr)
		}
		// A stop is final for always too, until the daemon restarts.
		d.mustVmctl(t, 0, "", "stop", "-t", "1", "always")
		time.Sleep(time.Second)
		if s := state("always"); !strings.HasPrefix(s, "exited ") {
			t.Errorf("always after a stop: %q, want exited", s)
		}
		d.crash(t)
		d.launch(t, d.bin)
		waitFor(t, func() bool { return strings.HasPrefix(state("always"), "running ") }, "always started by the daemon's start")
		if s := state("unless"); !strings.HasPrefix(s, "exited ") {
			t.Errorf("unless-stopped after a second daemon restart: %q, want exited", s)
		}
	})
}
