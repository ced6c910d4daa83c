package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Health checks, as dockerd runs them: starting until a probe succeeds,
// healthy after one, unhealthy after --health-retries failures in a row;
// docker ps shows it, events report each change, inspect keeps the last
// probes with their output.
func TestHealthcheck(t *testing.T) {
	d := startDaemon(t)
	d.mustDocker(t, 0, "", "run", "-d", "--name", "hc", "--health-cmd", "cat /tmp/ok", "--health-interval", "1s",
		"--health-retries", "2", "busybox", "sh", "-c", "sleep 2; echo fine > /tmp/ok; sleep 600")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "hc") })
	status := func() string {
		return strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Health.Status}}", "hc").stdout)
	}
	waitFor(t, func() bool { return status() == "healthy" }, "the container to become healthy")
	if r := d.mustDocker(t, 0, "", "ps", "--format", "{{.Status}}", "--filter", "name=hc"); !strings.HasSuffix(strings.TrimSpace(r.stdout), "(healthy)") {
		t.Errorf("docker ps status = %q, want it to end in (healthy)", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "ps", "--format", "{{.Names}}", "--filter", "health=healthy"); r.stdout != "hc\n" {
		t.Errorf("docker ps --filter health=healthy = %q", r.stdout)
	}
	r := d.mustDocker(t, 0, "", "inspect", "-f", "{{range .State.Health.Log}}{{.ExitCode}}:{{.Output}}{{end}}", "hc")
	if !strings.Contains(r.stdout, "0:fine") {
		t.Errorf("health log = %q, want a probe that printed fine", r.stdout)
	}
	d.mustDocker(t, 0, "", "exec", "hc", "rm", "/tmp/ok")
	waitFor(t, func() bool { return status() == "unhealthy" }, "the container to become unhealthy")
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Health.FailingStreak}}", "hc"); r.stdout < "2" {
		t.Errorf("failing streak %q, want at least 2", r.stdout)
	}
	since := time.Now().Add(-5 * time.Minute).Format(time.RFC3339)
	r = d.mustDocker(t, 0, "", "events", "--since", since, "--until", time.Now().Add(2*time.Second).Format(time.RFC3339), "--filter", "container=hc", "--format", "{{.Action}}")
	if !strings.Contains(r.stdout, "health_status: healthy") || !strings.Contains(r.stdout, "health_status: unhealthy") {
		t.Errorf("events = %q, want both health_status changes", r.stdout)
	}
	// An image's HEALTHCHECK applies to its containers; --no-healthcheck
	// turns it off.
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nHEALTHCHECK --interval=1s CMD true\n"), 0o644))
	d.mustDocker(t, 0, "", "build", "-t", "hcimg", dir)
	d.mustDocker(t, 0, "", "run", "-d", "--name", "hcimg", "hcimg", "sleep", "600")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "hcimg") })
	waitFor(t, func() bool {
		return strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Health.Status}}", "hcimg").stdout) == "healthy"
	}, "the image's health check to make its container healthy")
	d.mustDocker(t, 0, "", "run", "-d", "--name", "nohc", "--no-healthcheck", "hcimg", "sleep", "600")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "nohc") })
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Health}}", "nohc"); r.stdout != "<nil>\n" {
		t.Errorf("--no-healthcheck: State.Health = %q", r.stdout)
	}
	// Bad checks are refused at create.
	if r := d.docker(t, "", "run", "--rm", "--health-cmd", "true", "--health-interval", "1us", "busybox", "true"); r.code == 0 || !strings.Contains(r.stderr, "interval") {
		t.Errorf("a 1us interval: exit %d, %q", r.code, r.stderr)
	}
}
