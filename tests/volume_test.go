package tests

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// volumeNames lists the volumes vmctl reports.
func (e *env) volumeNames(t *testing.T) []string {
	t.Helper()
	r := e.mustRun(t, 0, "volume", "ls", "-q")
	return strings.Fields(r.stdout)
}

func hasName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// A named volume outlives its containers, keeps its data across them,
// is refused to a second running container, cannot be removed while a
// container references it, and can be mounted read-only.
func TestVolumes(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	const vol = "e2e-data"
	t.Cleanup(func() {
		e.run(t, "rm", "-f", "vol-writer", "vol-keeper", "vol-holder")
		e.run(t, "volume", "rm", "-f", vol)
	})

	// Written by one container, seen by the next after the first is gone.
	e.mustRun(t, 0, "run", "--name", "vol-writer", "-v", vol+":/data", "busybox", "sh", "-c", "echo kept > /data/file")
	e.mustRun(t, 0, "rm", "vol-writer")
	if !hasName(e.volumeNames(t), vol) {
		t.Fatalf("volume ls after the container's removal does not list %s", vol)
	}
	r := e.mustRun(t, 0, "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/file")
	if r.stdout != "kept\n" {
		t.Errorf("a new container reads %q from the volume, want \"kept\\n\"", r.stdout)
	}

	// Read-only: the write fails inside, the data is unchanged.
	r = e.run(t, "run", "--rm", "-v", vol+":/data:ro", "busybox", "sh", "-c", "cat /data/file && echo changed > /data/file")
	if r.code == 0 || r.stdout != "kept\n" || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("write to a :ro volume: exit %d, stdout %q, stderr %q; want a read-only failure after reading kept", r.code, r.stdout, r.stderr)
	}

	// In use by a stopped container: volume rm is refused in one line.
	e.mustRun(t, 0, "run", "--name", "vol-keeper", "-v", vol+":/data", "busybox", "true")
	r = e.run(t, "volume", "rm", vol)
	if r.code == 0 {
		t.Fatalf("volume rm of a volume in use succeeded")
	}
	oneLine(t, r, "volume "+vol+" is in use by container vol-keeper")
	if !hasName(e.volumeNames(t), vol) {
		t.Errorf("a refused volume rm removed the volume")
	}

	// Mounted by a running container: a second start is refused (ext4
	// cannot be mounted by two VMs), before any VM boots.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	holder := e.cmd(ctx, "run", "--name", "vol-holder", "-v", vol+":/data", "busybox", "sh", "-c",
		`trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done`)
	stdout, err := holder.StdoutPipe()
	must(t, err)
	must(t, holder.Start())
	if lines := bufio.NewScanner(stdout); !lines.Scan() || lines.Text() != "ready" {
		holder.Process.Kill()
		holder.Wait()
		t.Fatalf("vol-holder did not start: %q", lines.Text())
	}
	r = e.run(t, "run", "--rm", "-v", vol+":/data", "busybox", "true")
	if r.code != 125 {
		t.Errorf("run with a volume a running container has: exit %d, want 125", r.code)
	}
	oneLine(t, r, "volume "+vol+" is in use by running container vol-holder")
	must(t, holder.Process.Signal(syscall.SIGTERM))
	if err := holder.Wait(); err != nil {
		t.Errorf("vol-holder: %v", err)
	}
	e.mustRun(t, 0, "rm", "vol-holder")
	e.mustRun(t, 0, "rm", "vol-keeper")

	// An anonymous volume takes the image's content and goes with its
	// --rm container.
	vols := len(e.volumeNames(t))
	r = e.mustRun(t, 0, "run", "--rm", "-v", "/etc", "busybox", "cat", "/etc/passwd")
	if !strings.Contains(r.stdout, "root:") {
		t.Errorf("anonymous volume on /etc shows passwd %q, want the image's", r.stdout)
	}
	if n := len(e.volumeNames(t)); n != vols {
		t.Errorf("volumes after a --rm run with an anonymous volume: %d, want %d", n, vols)
	}

	e.mustRun(t, 0, "volume", "rm", vol)
	if hasName(e.volumeNames(t), vol) {
		t.Errorf("volume ls still lists %s after volume rm", vol)
	}
	// prune takes anonymous volumes only, unless -a.
	e.mustRun(t, 0, "volume", "create", "e2e-prunable")
	r = e.mustRun(t, 0, "volume", "prune", "-f")
	if !hasName(e.volumeNames(t), "e2e-prunable") {
		t.Errorf("volume prune without -a removed a named volume: %q", r.stdout)
	}
	r = e.mustRun(t, 0, "volume", "prune", "-f", "-a")
	if hasName(e.volumeNames(t), "e2e-prunable") || !strings.Contains(r.stdout, "e2e-prunable") {
		t.Errorf("volume prune -a left e2e-prunable or did not say so: %q", r.stdout)
	}
	e.checkClean(t, before)
}

// Volumes nested in one another are mounted parents first, whatever the
// order of the -v flags, as docker does: the outer volume does not hide
// the inner one, and each keeps its own files.
func TestNestedVolumes(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	t.Cleanup(func() { e.run(t, "volume", "rm", "-f", "e2e-outer", "e2e-inner") })
	e.mustRun(t, 0, "run", "--rm", "-v", "e2e-inner:/x/y", "-v", "e2e-outer:/x", "busybox", "sh", "-c",
		"echo in > /x/y/f && echo out > /x/g")
	r := e.mustRun(t, 0, "run", "--rm", "-v", "e2e-inner:/i", "-v", "e2e-outer:/o", "busybox", "cat", "/i/f", "/o/g")
	if r.stdout != "in\nout\n" {
		t.Errorf("inner and outer volumes hold %q, want \"in\\nout\\n\"", r.stdout)
	}
	e.checkClean(t, before)
}

// Bad requests fail in one line and leave nothing behind.
func TestVolumeBadInput(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	vols := len(e.volumeNames(t))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create", "x"}, `invalid volume name "x"`},
		{[]string{"volume", "create", "bad/name"}, `invalid volume name "bad/name"`},
		{[]string{"volume", "create", "--opt", "type=nfs", "okname"}, `invalid volume option "type"`},
		{[]string{"volume", "create", "--opt", "size=1k", "okname"}, `invalid volume size "1k"`},
		{[]string{"run", "--rm", "-v", "/etc/hostname:/host", "busybox", "true"}, "bind mounts of files are not supported: /etc/hostname is not a directory"},
		{[]string{"run", "--rm", "-v", "newvol:data", "busybox", "true"}, `invalid mount path "data"`},
		{[]string{"run", "--rm", "-v", "newvol:/a/../etc", "busybox", "true"}, `must not contain ..`},
		{[]string{"volume", "rm", "no-such-volume"}, "no such volume: no-such-volume"},
	} {
		r := e.run(t, tc.args...)
		if r.code == 0 {
			t.Errorf("vmctl %s succeeded", strings.Join(tc.args, " "))
			continue
		}
		oneLine(t, r, tc.want)
	}
	if n := len(e.volumeNames(t)); n != vols {
		t.Errorf("volumes after refused requests: %d, want %d", n, vols)
	}
	e.checkClean(t, before)
}

// The real docker CLI against vmctld: volume create/ls/rm, run -v, and a
// volume's data surviving docker rm.
func TestDockerCLIVolumes(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	const vol = "dockervol"

	d.mustDocker(t, 0, "", "volume", "create", "--opt", "size=256m", vol)
	r := d.mustDocker(t, 0, "", "volume", "ls", "--format", "{{.Driver}} {{.Name}}")
	if !strings.Contains(r.stdout, "local "+vol) {
		t.Errorf("docker volume ls = %q, want local %s", r.stdout, vol)
	}
	d.mustDocker(t, 0, "", "run", "--name", "dwriter", "-v", vol+":/data", "busybox", "sh", "-c", "echo from-docker > /data/f")
	r = d.mustDocker(t, 0, "", "inspect", "-f", "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}", "dwriter")
	if got := strings.TrimSpace(r.stdout); got != "volume "+vol+" /data true" {
		t.Errorf("docker inspect Mounts = %q, want \"volume %s /data true\"", got, vol)
	}
	r = d.docker(t, "", "volume", "rm", vol)
	if r.code == 0 || !strings.Contains(r.stderr, "in use") {
		t.Errorf("docker volume rm of a volume in use: exit %d, stderr %q", r.code, r.stderr)
	}
	d.mustDocker(t, 0, "", "rm", "dwriter")
	r = d.mustDocker(t, 0, "", "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/f")
	if r.stdout != "from-docker\n" {
		t.Errorf("a new container reads %q, want \"from-docker\\n\"", r.stdout)
	}
	// docker rm keeps a container's anonymous volumes; docker rm -v takes
	// them along (named ones stay either way).
	count := func() int { return len(strings.Fields(d.mustDocker(t, 0, "", "volume", "ls", "-q").stdout)) }
	d.mustDocker(t, 0, "", "create", "--name", "anon1", "-v", "/scratch", "-v", vol+":/data", "busybox", "true")
	d.mustDocker(t, 0, "", "create", "--name", "anon2", "-v", "/scratch", "busybox", "true")
	n := count()
	d.mustDocker(t, 0, "", "rm", "anon1")
	if got := count(); got != n {
		t.Errorf("volumes after docker rm: %d, want %d (anonymous volumes stay without -v)", got, n)
	}
	d.mustDocker(t, 0, "", "rm", "-v", "anon2")
	if got := count(); got != n-1 {
		t.Errorf("volumes after docker rm -v: %d, want %d", got, n-1)
	}
	if r := d.mustDocker(t, 0, "", "volume", "ls", "-q"); !strings.Contains(r.stdout, vol) {
		t.Errorf("the named volume went with docker rm: %q", r.stdout)
	}
	r = d.docker(t, "", "run", "--rm", "-v", "/etc/hostname:/host", "busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "bind mounts of files are not supported: /etc/hostname is not a directory") {
		t.Errorf("docker run with a bind mount of a host file: exit %d, stderr %q", r.code, r.stderr)
	}
	// Unused volumes go with prune; the API 1.41 daemon prunes named ones too.
	d.mustDocker(t, 0, "", "volume", "create", "prunable")
	r = d.mustDocker(t, 0, "", "volume", "prune", "-f")
	if !strings.Contains(r.stdout, "prunable") || !strings.Contains(r.stdout, vol) {
		t.Errorf("docker volume prune -f printed %q, want prunable and %s", r.stdout, vol)
	}
	r = d.mustDocker(t, 0, "", "volume", "ls", "-q")
	if strings.Contains(r.stdout, vol) {
		t.Errorf("docker volume ls after rm = %q", r.stdout)
	}
}
