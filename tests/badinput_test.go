package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad input gets one clear line, a non-zero status, and leaves nothing behind.
func TestBadInput(t *testing.T) {
	e := e2e(t)
	corrupt := filepath.Join(t.TempDir(), "corrupt.tar")
	good, err := os.ReadFile(filepath.Join(e.root, "build/busybox.tar"))
	must(t, err)
	must(t, os.WriteFile(corrupt, good[:len(good)/2], 0o644))
	garbage := filepath.Join(t.TempDir(), "garbage.tar")
	must(t, os.WriteFile(garbage, []byte("this is not a tarball\n"), 0o644))

	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"unknown image", nil, []string{"run", "--rm", "--pull", "never", "no-such-image", "true"}, 125, "No such image: no-such-image:latest"},
		{"bad pull policy", nil, []string{"run", "--pull", "sometimes", "busybox"}, 125, "invalid --pull"},
		{"bad flag", nil, []string{"run", "--no-such-flag", "busybox"}, 125, "unknown flag: --no-such-flag"},
		{"bad memory", nil, []string{"run", "--memory", "lots", "busybox"}, 125, "invalid --memory"},
		{"memory above the host's", nil, []string{"run", "--rm", "--memory", "1000000g", "busybox", "true"}, 125, "is more than this host's memory"},
		{"empty image name", nil, []string{"run", "", "true"}, 125, "invalid reference format: the image name is empty"},
		{"bad log option", nil, []string{"run", "--rm", "--log-opt", "max-size=x", "busybox", "true"}, 125, `invalid log option max-size "x"`},
		{"unknown log option", nil, []string{"run", "--rm", "--log-opt", "compress=true", "busybox", "true"}, 125, `unknown log option "compress"`},
		{"bad cpus", nil, []string{"run", "--cpus", "-1", "busybox"}, 125, "invalid --cpus"},
		{"bad hypervisor", nil, []string{"run", "--hypervisor", "xen", "busybox"}, 125, "invalid --hypervisor"},
		{"unknown user", nil, []string{"run", "--rm", "-u", "nosuch", "busybox", "id"}, 125, "unable to find user nosuch: no matching entries in passwd file"},
		{"bad name", nil, []string{"run", "--rm", "--name", "a/b", "busybox", "true"}, 125, "invalid container name"},
		{"missing kernel", nil, []string{"--kernel", "/nonexistent/vmlinuz", "run", "--rm", "busybox", "true"}, 125, "guest kernel not found at /nonexistent/vmlinuz"},
		{"missing qemu", []string{"PATH=/usr/sbin:/sbin"}, []string{"run", "--rm", "busybox", "true"}, 125, "qemu-system-x86_64 not found"},
		{"command not found", nil, []string{"run", "--rm", "busybox", "no-such-command"}, 127, "no-such-command"},
		{"not executable", nil, []string{"run", "--rm", "busybox", "/etc/passwd"}, 126, "/etc/passwd"},
		{"corrupt tarball", nil, []string{"load", "-i", corrupt}, 125, ""},
		{"not a tarball", nil, []string{"load", "-i", garbage}, 125, ""},
		{"missing tarball", nil, []string{"load", "-i", "/nonexistent.tar"}, 125, "no such file or directory"},
		{"rm unknown", nil, []string{"rm", "no-such-container"}, 1, "no such container: no-such-container"},
	}
	// A missing image on a registry nobody serves (a closed local port):
	// progress lines first, then one error line, and nothing left behind.
	t.Run("unreachable registry", func(t *testing.T) {
		before := e.containerCount(t)
		r := e.run(t, "run", "--rm", "127.0.0.1:9/no-such-image", "true")
		if r.code != 125 {
			t.Errorf("exit %d, want 125; stderr %q", r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "vmctl: ") || !strings.Contains(last, "127.0.0.1:9") {
			t.Errorf("last stderr line %q, want one vmctl: error naming the registry", last)
		}
		e.checkClean(t, before)
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.containerCount(t)
			imagesBefore := e.mustRun(t, 0, "images", "-q").stdout
			r := e.runWith(t, nil, tt.env, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			oneLine(t, r, tt.want)
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			e.checkClean(t, before)
			if after := e.mustRun(t, 0, "images", "-q").stdout; after != imagesBefore {
				t.Errorf("images changed: %q -> %q", imagesBefore, after)
			}
		})
	}
}
