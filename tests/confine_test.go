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

// docker run's confinement and limit options are honoured in the guest:
// capabilities added and dropped, no-new-privileges, a read-only root with
// a tmpfs, a pids limit (the container cannot fork past it; the agent
// outside its cgroup is unharmed), ulimits, sysctls, the OOM score.
func TestConfinementOptions(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	script := `grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status
touch /x 2>/dev/null && echo root-writable || echo root-readonly
touch /scratch/y && echo tmpfs-writable
echo "nofile $(ulimit -n) $(ulimit -Hn)"
echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
echo "oom_score_adj $(cat /proc/self/oom_score_adj)"
# Past the limit busybox's sh cannot fork and exits: a subshell takes
# that; the check after it uses builtins only, the limit being used up.
(for i in $(seq 40); do sleep 60 & done) 2>/scratch/errs
while read -r line; do case "$line" in *"can't fork"*) echo pids-limited; break;; esac; done </scratch/errs
`
	r := e.mustRun(t, 0, "run", "--rm", "--cap-drop", "ALL", "--cap-add", "net_bind_service", "--security-opt", "no-new-privileges",
		"--read-only", "--tmpfs", "/scratch:size=1m", "--pids-limit", "20", "--ulimit", "nofile=123:456",
		"--sysctl", "net.ipv4.ip_forward=1", "--oom-score-adj", "300", "busybox", "sh", "-c", script)
	want := "CapBnd:\t0000000000000400\nNoNewPrivs:\t1\nroot-readonly\ntmpfs-writable\nnofile 123 456\nip_forward 1\noom_score_adj 300\npids-limited\n"
	if r.stdout != want {
		t.Errorf("confined container printed\n%s\nwant\n%s(stderr %q)", r.stdout, want, r.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "/dev/sda"}, "--device) is not supported: the host's devices do not reach a container's VM"},
		{[]string{"--cap-add", "CAP_FLY"}, `invalid --cap-add: unknown capability: "CAP_FLY"`},
		{[]string{"--security-opt", "seccomp=/no/profile.json"}, "--security-opt seccomp=/no/profile.json: open /no/profile.json: no such file or directory"},
		{[]string{"--security-opt", "apparmor=docker-default"}, "is not supported"},
		{[]string{"--ulimit", "nofile=10:5"}, "ulimit soft limit must be less than or equal to hard limit: 10 > 5"},
	} {
		r := e.run(t, append(append([]string{"run", "--rm"}, tc.args...), "busybox", "true")...)
		if r.code != 125 {
			t.Errorf("run %v: exit %d, want 125", tc.args, r.code)
		}
		oneLine(t, r, tc.want)
	}
	e.checkClean(t, before)
}

// The same options through the docker CLI against vmctld, and inspect
// shows them as dockerd does.
func TestDockerConfinementOptions(t *testing.T) {
	d := startDaemon(t)
	d.mustDocker(t, 0, "", "create", "--name", "caps", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "--pids-limit", "30",
		"--read-only", "--security-opt", "no-new-privileges", "busybox", "grep", "-E", "^(CapBnd|NoNewPrivs)", "/proc/self/status")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "caps") })
	r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.CapAdd}} {{.HostConfig.CapDrop}} {{.HostConfig.PidsLimit}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.SecurityOpt}}", "caps")
	if r.stdout != "[CAP_NET_ADMIN] [CAP_CHOWN] 30 true [no-new-privileges]\n" {
		t.Errorf("inspect = %q", r.stdout)
	}
	// Docker's default set, plus NET_ADMIN (bit 12), minus CHOWN (bit 0).
	if r := d.mustDocker(t, 0, "", "start", "-a", "caps"); r.stdout != "CapBnd:\t00000000a80435fa\nNoNewPrivs:\t1\n" {
		t.Errorf("docker start -a printed %q", r.stdout)
	}
}

// The device policy: a container's root may make device nodes (CAP_MKNOD,
// as under Docker) but not open them, wherever it makes them, so the VM's
// disks and kernel log stay out of its reach; the kernel log cannot be
// read with dmesg either. The standard nodes work; the agent survives a
// container that exhausts its VM's memory (the container's process is the
// one killed).
func TestDevicePolicy(t *testing.T) {
	e := e2e(t)
	script := `dev=$(cat /sys/block/vda/dev)
mknod /tmp/disk b ${dev%:*} ${dev#*:} && echo made-in-rootfs
head -c 512 /tmp/disk >/dev/null 2>&1 && echo ROOTFS-DISK-READ || echo rootfs-disk-refused
mknod /dev/disk b ${dev%:*} ${dev#*:} && echo made-in-dev
head -c 512 /dev/disk >/dev/null 2>&1 && echo DEV-DISK-READ || echo dev-disk-refused
mknod /dev/kmsg2 c 1 11 && { head -c 1 /dev/kmsg2 >/dev/null 2>&1 && echo KMSG-READ || echo kmsg-refused; }
dmesg >/dev/null 2>&1 && echo DMESG-READ || echo dmesg-refused
echo x >/dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c
cat /proc/self/oom_score_adj
`
	r := e.mustRun(t, 0, "run", "--rm", "busybox", "sh", "-c", script)
	want := "made-in-rootfs\nrootfs-disk-refused\nmade-in-dev\ndev-disk-refused\nkmsg-refused\ndmesg-refused\n4\n4\n0\n"
	if r.stdout != want {
		t.Errorf("device policy checks printed\n%s\nwant\n%s(stderr %q)", r.stdout, want, r.stderr)
	}
}

// docker run --init: an init is the container's PID 1 over its command,
// forwards it the stop signal (a command that is not PID 1 dies of
// SIGTERM: 143, where without the init the kernel ignores it for PID 1
// and the stop ends in SIGKILL: 137) and reaps orphans.
func TestInit(t *testing.T) {
	d := startDaemon(t)
	r := d.mustDocker(t, 0, "", "run", "--rm", "--init", "busybox", "sh", "-c", `[ $$ != 1 ] && echo not-pid-1; (sleep 0.1 &); sleep 1; ps -o stat | grep -c Z || true`)
	if r.stdout != "not-pid-1\n0\n" {
		t.Errorf("--init: %q (stderr %q)", r.stdout, r.stderr)
	}
	for _, tc := range []struct {
		init bool
		want string
	}{{true, "143\n"}, {false, "137\n"}} {
		args := []string{"run", "-d", "--name", "stopme", "--stop-timeout", "2", "busybox", "sleep", "600"}
		if tc.init {
			args = append(args[:2], append([]string{"--init"}, args[2:]...)...)
		}
		d.mustDocker(t, 0, "", args...)
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.Init}}", "stopme"); tc.init && r.stdout != "true\n" {
			t.Errorf("inspect HostConfig.Init = %q", r.stdout)
		}
		if tc.init {
			d.mustDocker(t, 0, "", "stop", "-t", "2", "stopme")
		} else {
			// No -t: the container's --stop-timeout (2) applies.
			if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.Config.StopTimeout}}", "stopme"); r.stdout != "2\n" {
				t.Errorf("inspect Config.StopTimeout = %q", r.stdout)
			}
			d.mustDocker(t, 0, "", "stop", "stopme")
		}
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.ExitCode}}", "stopme"); r.stdout != tc.want {
			t.Errorf("init %v: exit code after stop %q, want %q", tc.init, r.stdout, tc.want)
		}
		d.mustDocker(t, 0, "", "rm", "stopme")
	}
}

// docker run --group-add: names are the container's groups, numbers are
// taken as they are; for the container's process and its execs; an
// unknown name fails the start in one line.
func TestGroupAdd(t *testing.T) {
	d := startDaemon(t)
	want := "0 4242 65534\n"
	r := d.mustDocker(t, 0, "", "run", "--rm", "--group-add", "nobody", "--group-add", "4242", "busybox", "sh", "-c",
		"id -G | tr ' ' '\\n' | sort -n | tr '\\n' ' ' | sed 's/ $//'; echo")
	if r.stdout != want {
		t.Errorf("id -G with --group-add nobody,4242 = %q, want %q", r.stdout, want)
	}
	d.mustDocker(t, 0, "", "run", "-d", "--name", "grp", "--group-add", "nobody", "busybox", "sleep", "600")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "grp") })
	if r := d.mustDocker(t, 0, "", "exec", "grp", "id", "-G"); !strings.Contains(r.stdout, "65534") {
		t.Errorf("exec id -G = %q, want the nobody group (65534)", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.HostConfig.GroupAdd}}", "grp"); r.stdout != "[nobody]\n" {
		t.Errorf("inspect GroupAdd = %q", r.stdout)
	}
	r = d.docker(t, "", "run", "--rm", "--group-add", "nosuchgroup", "busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "unable to find group nosuchgroup") {
		t.Errorf("--group-add nosuchgroup: exit %d, %q", r.code, r.stderr)
	}
}
