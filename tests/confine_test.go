package tests

import (
	"strings"
	"testing"
)

// A container's root is confined as under Docker: Docker's default
// capability bounding set (no mount, no module loading, no clock), kernel
// interfaces masked or read-only; what the default set allows still works.
func TestContainerRootIsConfined(t *testing.T) {
	e := e2e(t)
	script := `
grep CapBnd /proc/self/status
mount -t tmpfs none /mnt 2>/dev/null && echo mount-allowed || echo mount-refused
[ -s /proc/kcore ] && echo kcore-visible || echo kcore-masked
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo procsys-writable || echo procsys-readonly
touch /tmp/f && chown 1000:1000 /tmp/f && echo chown-ok
hostname other 2>/dev/null && echo sethostname-allowed || echo sethostname-refused
`
	r := e.mustRun(t, 0, "run", "--rm", "busybox", "sh", "-c", script)
	want := []string{
		"CapBnd:\t00000000a80425fb", // Docker's default set
		"mount-refused", "kcore-masked", "procsys-readonly", "chown-ok", "sethostname-refused",
	}
	got := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("confinement checks printed %q, want %q (stderr %q)", got, want, r.stderr)
	}
	// An exec into a container is confined alike: checked through the
	// daemon, where exec exists.
	d := startDaemon(t)
	d.mustVmctl(t, 0, "", "run", "-d", "--name", "conf", "busybox", "sleep", "300")
	if r := d.mustVmctl(t, 0, "", "exec", "conf", "grep", "CapBnd", "/proc/self/status"); r.stdout != "CapBnd:\t00000000a80425fb\n" {
		t.Errorf("exec CapBnd = %q", r.stdout)
	}
	d.mustVmctl(t, 0, "", "rm", "-f", "conf")
}
