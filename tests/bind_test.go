package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// bindDir makes a host directory for bind mounts, removed after the test.
func bindDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vmctl-bind-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// heldBy lists the processes that have a descriptor or their working
// directory in dir: a share that went away with its container leaves none.
func heldBy(dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		links, _ := filepath.Glob(p + "/fd/*")
		for _, l := range append(links, p+"/cwd", p+"/root") {
			if target, err := os.Readlink(l); err == nil && (target == dir || strings.HasPrefix(target, dir+"/")) {
				cmd, _ := os.ReadFile(p + "/comm")
				out = append(out, filepath.Base(p)+" "+strings.TrimSpace(string(cmd)))
				break
			}
		}
	}
	return out
}

// A host directory bound into a container: the container reads what the
// host wrote and the host reads what the container wrote, with the
// container user's owner; :ro refuses writes; neither .. nor symlinks (the
// host's or the container's) reach outside the directory; the share goes
// away with the container.
func TestBindMounts(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	dir := bindDir(t)
	outside := bindDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "from-host"), []byte("host wrote this\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("outside the share\n"), 0o644))
	// A symlink on the host pointing out of the share: the guest resolves
	// it in the container, never on the host.
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "hostlink")))
	must(t, os.Chmod(dir, 0o777))

	script := `cat /b/from-host
echo container wrote this > /b/from-ctr
su -s /bin/sh nobody -c 'echo nobody > /b/by-nobody' 2>/dev/null || echo nobody-failed
ln -s ../../../../../../../ /b/up
cat /b/up` + outside + `/secret 2>/dev/null && echo ESCAPED-UP
cat /b/hostlink 2>/dev/null && echo ESCAPED-LINK
cat /b/../../../../` + outside + `/secret 2>/dev/null && echo ESCAPED-DOTDOT
echo pwned > /b/hostlink 2>/dev/null
echo done`
	r := e.mustRun(t, 0, "run", "--rm", "-v", dir+":/b", "busybox", "sh", "-c", script)
	if r.stdout != "host wrote this\ndone\n" {
		t.Errorf("container printed %q, want the host's file and no escape", r.stdout)
	}
	got, err := os.ReadFile(filepath.Join(dir, "from-ctr"))
	if err != nil || string(got) != "container wrote this\n" {
		t.Errorf("host reads %q, %v from the container's file", got, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "by-nobody")); err != nil {
		t.Errorf("file written by nobody: %v", err)
	} else if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
		t.Errorf("file written by the container's nobody is owned by uid %d on the host, want 65534", uid)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "outside the share\n" {
		t.Errorf("a file outside the share changed: %q", b)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "up")); target != "../../../../../../../" {
		t.Errorf("the container's symlink is %q on the host, want it stored as made", target)
	}
	if held := heldBy(dir); len(held) > 0 {
		t.Errorf("the share outlived its container: %v hold %s", held, dir)
	}

	// Read-only: writes fail in the container, the host is unchanged.
	r = e.run(t, "run", "--rm", "-v", dir+":/b:ro", "busybox", "sh", "-c",
		"cat /b/from-ctr; echo x > /b/from-host; rm /b/from-ctr; mkdir /b/new")
	if r.code == 0 || r.stdout != "container wrote this\n" || strings.Count(r.stderr, "Read-only file system") != 3 {
		t.Errorf("writes to a :ro bind: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "from-host")); string(b) != "host wrote this\n" {
		t.Errorf("a :ro bind let the container change a host file: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("a :ro bind let the container create a directory")
	}

	// -v creates a missing host directory; a relative path is made
	// absolute by vmctl, as by the docker CLI.
	missing := filepath.Join(dir, "made", "by", "run")
	e.mustRun(t, 0, "run", "--rm", "-v", missing+":/m", "busybox", "touch", "/m/x")
	if _, err := os.Stat(filepath.Join(missing, "x")); err != nil {
		t.Errorf("-v with a missing host directory: %v", err)
	}
	e.checkClean(t, before)
}

// Bind mounts through the docker CLI against vmctld (-v and --mount), and
// what inspect shows of them; --mount with a missing source and a file are
// refused in one line and leave no container.
func TestDockerBindMounts(t *testing.T) {
	d := startDaemon(t)
	dir := bindDir(t)
	must(t, os.WriteFile(filepath.Join(dir, "in"), []byte("hi\n"), 0o644))
	r := d.mustDocker(t, 0, "", "run", "--rm", "-v", dir+":/b", "busybox", "sh", "-c", "cat /b/in; echo out > /b/out")
	if r.stdout != "hi\n" {
		t.Errorf("docker run -v printed %q", r.stdout)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "out\n" {
		t.Errorf("host reads %q", b)
	}
	d.mustDocker(t, 0, "", "create", "--name", "bound", "--mount", "type=bind,source="+dir+",target=/b,readonly", "busybox", "cat", "/b/in")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "bound") })
	r = d.mustDocker(t, 0, "", "inspect", "-f", "{{json .Mounts}}", "bound")
	var mounts []struct{ Type, Source, Destination, Mode, Propagation string }
	if err := json.Unmarshal([]byte(r.stdout), &mounts); err != nil || len(mounts) != 1 {
		t.Fatalf("inspect Mounts = %q (%v)", r.stdout, err)
	}
	if m := mounts[0]; m.Type != "bind" || m.Source != dir || m.Destination != "/b" || m.Mode != "ro" || m.Propagation != "rprivate" {
		t.Errorf("inspect Mounts = %+v", m)
	}
	if r := d.mustDocker(t, 0, "", "start", "-a", "bound"); r.stdout != "hi\n" {
		t.Errorf("docker start -a of the --mount container printed %q", r.stdout)
	}
	r = d.mustDocker(t, 0, "", "ps", "-a", "-q", "--filter", "volume="+dir)
	if strings.TrimSpace(r.stdout) == "" {
		t.Error("ps --filter volume=<host dir> does not list the container")
	}
	count := len(strings.Fields(d.mustDocker(t, 0, "", "ps", "-a", "-q").stdout))
	for _, args := range [][]string{
		{"--mount", "type=bind,source=" + dir + "/nope,target=/b"},
		{"-v", dir + "/in:/b"},
	} {
		r := d.docker(t, "", append(append([]string{"run", "--rm"}, args...), "busybox", "true")...)
		if r.code == 0 || !strings.Contains(r.stderr, "bind source path does not exist") && !strings.Contains(r.stderr, "bind mounts of files are not supported") {
			t.Errorf("docker run %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if n := len(strings.Fields(d.mustDocker(t, 0, "", "ps", "-a", "-q").stdout)); n != count {
		t.Errorf("refused runs left containers: %d, want %d", n, count)
	}

	// The raw API: HostConfig.Mounts of type bind.
	body := `{"Image":"busybox","Cmd":["cat","/r/in"],"HostConfig":{"Mounts":[{"Type":"bind","Source":"` + dir + `","Target":"/r","ReadOnly":true}]}}`
	resp, err := d.http().Post("http://d/v1.41/containers/create?name=rawbind", "application/json", strings.NewReader(body))
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create with a bind Mount = %d %s", resp.StatusCode, b)
	}
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "rawbind") })
	if r := d.mustDocker(t, 0, "", "start", "-a", "rawbind"); r.stdout != "hi\n" {
		t.Errorf("the raw API's bind container printed %q", r.stdout)
	}
}
