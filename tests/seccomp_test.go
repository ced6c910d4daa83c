package tests

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// sysprobeImage is "sysprobe:test": busybox with /bin/sysprobe
// (tests/testdata/sysprobe), which prints what system calls answer, written
// as a docker save archive once per run. It returns the archive's path.
var sysprobeImage = sync.OnceValues(func() (string, error) { return busyboxWith("sysprobe") })

// confinementScript prints what a container's process may do: the system
// calls Docker's profile judges (sysprobe), the seccomp mode, and what
// busybox makes of namespaces, mounts, the kernel log and the VM's disk
// (through /dev/vda where the container sees it, else a node it makes).
const confinementScript = `sysprobe keyctl unshare clone3 mount syslog
grep -E '^(CapBnd|Seccomp|Seccomp_filters):' /proc/self/status
unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-refused
mkdir -p /tmp/m && mount -t tmpfs none /tmp/m 2>/dev/null && echo mount-allowed || echo mount-refused
dmesg >/dev/null 2>&1 && echo dmesg-allowed || echo dmesg-refused
disk=/dev/vda
if [ ! -b $disk ]; then dev=$(cat /sys/block/vda/dev); disk=/tmp/vda; [ -b $disk ] || mknod $disk b ${dev%:*} ${dev#*:}; fi
echo "disk $(head -c 512 $disk 2>/dev/null | wc -c)"
`

// What confinementScript prints. The guest kernel has no keys (keyctl is
// ENOSYS once a filter lets it through) and restricts its log to
// CAP_SYSLOG.
const (
	dockerDefault = "keyctl=EPERM unshare=EPERM clone3=ENOSYS mount=EPERM syslog=EPERM\n" +
		"CapBnd:\t00000000a80425fb\nSeccomp:\t2\nSeccomp_filters:\t1\n" +
		"unshare-refused\nmount-refused\ndmesg-refused\ndisk 0\n"
	// --security-opt seccomp=unconfined --cap-add SYS_ADMIN --cap-add SYSLOG
	unconfinedAdmin = "keyctl=ENOSYS unshare=OK clone3=EINVAL mount=EFAULT syslog=OK\n" +
		"CapBnd:\t00000004a82425fb\nSeccomp:\t0\nSeccomp_filters:\t0\n" +
		"unshare-allowed\nmount-allowed\ndmesg-allowed\ndisk 0\n"
	privileged = "keyctl=ENOSYS unshare=OK clone3=EINVAL mount=EFAULT syslog=OK\n" +
		"CapBnd:\t000001ffffffffff\nSeccomp:\t0\nSeccomp_filters:\t0\n" +
		"unshare-allowed\nmount-allowed\ndmesg-allowed\ndisk 512\n"
)

// writeProfile writes a seccomp profile that allows everything but mkdir,
// which fails with EACCES, and returns its path.
func writeProfile(t *testing.T, action string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deny-mkdir.json")
	must(t, os.WriteFile(p, []byte(`{
	"defaultAction": "SCMP_ACT_ALLOW",
	"syscalls": [{"names": ["mkdir", "mkdirat"], "action": "`+action+`", "errnoRet": 13}]
}
`), 0o644))
	return p
}

// Docker's confinement through the docker CLI against vmctld: every
// container and every exec runs under Docker's default seccomp profile
// (namespaces, mounts, keys and the kernel log refused with EPERM, clone3
// with ENOSYS); seccomp=unconfined with the matching capabilities lifts
// it; --privileged leaves only the VM (every capability, no filter, the
// VM's disk readable); a custom profile's errno reaches the process; a
// profile the guest cannot run is refused at create.
func TestSeccompDocker(t *testing.T) {
	d := startDaemon(t)
	archive, err := sysprobeImage()
	must(t, err)
	d.mustDocker(t, 0, "", "load", "-i", archive)
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s printed\n%s\nwant\n%s", what, got, want)
		}
	}

	r := d.mustDocker(t, 0, "", "run", "--rm", "sysprobe:test", "sh", "-c", confinementScript)
	check("docker run", r.stdout, dockerDefault)

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, dockerDefault},
		{"unconfined", []string{"--security-opt", "seccomp=unconfined", "--cap-add", "SYS_ADMIN", "--cap-add", "SYSLOG"}, unconfinedAdmin},
		{"privileged", []string{"--privileged"}, privileged},
	} {
		name := "sc-" + c.name
		d.mustDocker(t, 0, "", append(append([]string{"run", "-d", "--name", name}, c.args...), "sysprobe:test", "sleep", "600")...)
		t.Cleanup(func() { d.docker(t, "", "rm", "-f", name) })
		r := d.mustDocker(t, 0, "", "exec", name, "sh", "-c", confinementScript)
		check("docker exec into the "+c.name+" container", r.stdout, c.want)
	}
	// docker exec --privileged: every capability, the container's
	// filter still (as under Docker).
	r = d.mustDocker(t, 0, "", "exec", "--privileged", "sc-default", "sh", "-c", "sysprobe mount; grep -E '^(CapBnd|Seccomp):' /proc/self/status")
	check("docker exec --privileged", r.stdout, "mount=EPERM\nCapBnd:\t000001ffffffffff\nSeccomp:\t2\n")
	r = d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.Privileged}} {{.HostConfig.SecurityOpt}}", "sc-privileged", "sc-unconfined")
	check("inspect", r.stdout, "true []\nfalse [seccomp=unconfined]\n")

	// A profile file: the CLI sends its JSON, which inspect shows.
	profile := writeProfile(t, "SCMP_ACT_ERRNO")
	d.mustDocker(t, 0, "", "create", "--name", "sc-custom", "--security-opt", "seccomp="+profile, "sysprobe:test",
		"sh", "-c", "mkdir /tmp/d; sysprobe mkdir; touch /tmp/f && echo touched")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "sc-custom") })
	r = d.mustDocker(t, 0, "", "inspect", "-f", "{{json .HostConfig.SecurityOpt}}", "sc-custom")
	if !strings.Contains(r.stdout, `seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"`) {
		t.Errorf("inspect SecurityOpt = %s, want the profile's JSON", r.stdout)
	}
	r = d.mustDocker(t, 0, "", "start", "-a", "sc-custom")
	check("custom profile", r.stdout, "mkdir=EACCES\ntouched\n")
	if !strings.Contains(r.stderr, "can't create directory '/tmp/d': Permission denied") {
		t.Errorf("mkdir under the custom profile: stderr %q", r.stderr)
	}

	r = d.docker(t, "", "run", "--rm", "--security-opt", "seccomp="+writeProfile(t, "SCMP_ACT_NOTIFY"), "sysprobe:test", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "SCMP_ACT_NOTIFY is not supported") {
		t.Errorf("a notify profile: exit %d, %q; want 125 and why", r.code, r.stderr)
	}
}

// The same options through vmctl's own CLI, in-process and with a daemon.
func TestSeccompVmctl(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 1, "run", "--rm", "--security-opt", "seccomp="+writeProfile(t, "SCMP_ACT_ERRNO"), "busybox", "mkdir", "/tmp/d")
	oneLine(t, r, "can't create directory '/tmp/d': Permission denied")
	r = e.mustRun(t, 0, "run", "--rm", "--privileged", "busybox", "sh", "-c",
		"grep -E '^(CapBnd|Seccomp):' /proc/self/status; head -c 512 /dev/vda | wc -c; dmesg | grep -c 'Linux version'")
	if r.stdout != "CapBnd:\t000001ffffffffff\nSeccomp:\t0\n512\n1\n" {
		t.Errorf("vmctl run --privileged printed %q (stderr %q)", r.stdout, r.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--security-opt", "seccomp=" + writeProfile(t, "SCMP_ACT_NOTIFY")}, "SCMP_ACT_NOTIFY is not supported"},
	} {
		r := e.run(t, append(append([]string{"run", "--rm"}, tc.args...), "busybox", "true")...)
		if r.code != 125 {
			t.Errorf("run %v: exit %d, want 125", tc.args, r.code)
		}
		oneLine(t, r, tc.want)
	}

	d := startDaemon(t)
	d.mustVmctl(t, 0, "", "run", "-d", "--name", "sc", "busybox", "sleep", "300")
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "sc") })
	if r := d.mustVmctl(t, 0, "", "exec", "sc", "grep", "-E", "^(CapBnd|Seccomp):", "/proc/self/status"); r.stdout != "CapBnd:\t00000000a80425fb\nSeccomp:\t2\n" {
		t.Errorf("vmctl exec: %q", r.stdout)
	}
	if r := d.mustVmctl(t, 0, "", "exec", "--privileged", "sc", "grep", "-E", "^(CapBnd|Seccomp):", "/proc/self/status"); r.stdout != "CapBnd:\t000001ffffffffff\nSeccomp:\t2\n" {
		t.Errorf("vmctl exec --privileged: %q", r.stdout)
	}
}
