package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	profiles "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

// dockerConfined is testSpec(args) confined as dockerd confines a
// container: Docker's capabilities and its default seccomp profile.
func dockerConfined(t *testing.T, args ...string) *specs.Spec {
	t.Helper()
	s := testSpec(args...)
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: testenv.DockerCapabilities}
	p, err := profiles.GetDefaultProfile(s)
	if err != nil {
		t.Fatal(err)
	}
	s.Linux.Seccomp = p
	return s
}

// execOut runs p in container id and returns its output and status.
func execOut(t *testing.T, rt *Runtime, id, execID string, p *specs.Process) (stdout, stderr string, status int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if p.Env == nil {
		p.Env = []string{"PATH=/bin"}
	}
	if err := rt.Exec(ctx, id, execID, p); err != nil {
		t.Fatalf("exec %v: %v", p.Args, err)
	}
	proc, err := rt.Process(id, execID)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr = readAll(t, proc, Stdout), readAll(t, proc, Stderr)
	return stdout, stderr, wait(t, proc).Status
}

// seccompStatus is what /proc/self/status says of the process's seccomp
// mode and filters.
const seccompStatus = `grep -E '^Seccomp(_filters)?:' /proc/self/status`

const filtered = "Seccomp:\t2\nSeccomp_filters:\t1\n"

// A container with Docker's profile runs its command and every exec under
// the filter, whoever they run as, and with or without no_new_privs (the
// filter goes on before the user changes when it needs CAP_SYS_ADMIN);
// namespaces are refused, and the agent's own process is not filtered.
func TestSeccompInitAndExec(t *testing.T) {
	requireRoot(t)
	// filteredThreads counts the agent's (this test's) threads under a
	// filter.
	filteredThreads := func() int {
		tasks, _ := filepath.Glob("/proc/self/task/*/status")
		n := 0
		for _, task := range tasks {
			if b, err := os.ReadFile(task); err == nil && !strings.Contains(string(b), "\nSeccomp:\t0\n") {
				n++
			}
		}
		return n
	}
	before := filteredThreads()
	rt := newTestRuntime(t)
	id := run(t, rt, dockerConfined(t, "sh", "-c", seccompStatus+"; sleep 100"))
	init, _ := rt.Process(id, "")
	// The init's output ends only with the container: read what it
	// printed so far.
	var out string
	for deadline := time.Now().Add(10 * time.Second); out != filtered && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		data, _, _, err := init.Read(Stdout, 4096, 0)
		if err != nil {
			t.Fatal(err)
		}
		out = string(data)
	}
	if out != filtered {
		t.Errorf("the container's command: %q, want %q", out, filtered)
	}
	tests := []struct {
		name string
		user specs.User
		nnp  bool
	}{
		{"root", specs.User{}, false},
		{"another user", specs.User{UID: 1000, GID: 1000}, false},
		{"another user with no_new_privs", specs.User{UID: 1000, GID: 1000}, true},
	}
	for i, tt := range tests {
		p := &specs.Process{Args: []string{"sh", "-c", seccompStatus + "; id -u"}, User: tt.user, NoNewPrivileges: tt.nnp,
			Capabilities: &specs.LinuxCapabilities{Bounding: testenv.DockerCapabilities}}
		stdout, stderr, status := execOut(t, rt, id, fmt.Sprint("e", i), p)
		if want := filtered + fmt.Sprintln(tt.user.UID); stdout != want || status != 0 {
			t.Errorf("exec as %s: %q (stderr %q, status %d), want %q", tt.name, stdout, stderr, status, want)
		}
	}
	_, stderr, status := execOut(t, rt, id, "unshare", &specs.Process{Args: []string{"unshare", "-U", "true"}})
	if status == 0 || !strings.Contains(stderr, "Operation not permitted") {
		t.Errorf("unshare -U under Docker's profile: status %d, %q; want EPERM", status, stderr)
	}
	// Errors keep their kind through the helper.
	if err := rt.Exec(context.Background(), id, "missing", &specs.Process{Args: []string{"nope"}, Env: []string{"PATH=/bin"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("exec of a missing command = %v, want ErrNotFound", err)
	}
	if err := rt.Exec(context.Background(), id, "nouser", &specs.Process{Args: []string{"true"}, User: specs.User{Username: "ghost"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("exec as an unknown user = %v, want ErrInvalid", err)
	}
	// The agent's threads never take a filter: the execs' helpers do.
	if after := filteredThreads(); after != before {
		t.Errorf("the agent had %d threads under a seccomp filter before the execs, %d after", before, after)
	}
}

// A --init container's init stays, under the filter on all its threads,
// and the command it forks inherits it.
func TestSeccompReapingInit(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	spec := dockerConfined(t, "sh", "-c", seccompStatus+"; grep -E '^Seccomp:' /proc/1/task/*/status | grep -vc ':\t2$'")
	spec.Annotations = map[string]string{contract.AnnotationInit: contract.InitReap}
	id := run(t, rt, spec)
	p, _ := rt.Process(id, "")
	// The last line counts the init's threads without the filter.
	if got, want := readAll(t, p, Stdout), filtered+"0\n"; got != want {
		t.Errorf("under a reaping init: %q, want %q", got, want)
	}
}

// A custom profile's own errno reaches the process.
func TestSeccompCustomProfile(t *testing.T) {
	requireRoot(t)
	rt := newTestRuntime(t)
	eacces := uint(unix.EACCES)
	spec := testSpec("sh", "-c", "mkdir /tmp/d; touch /tmp/f && echo touched")
	spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &eacces}}}
	id := run(t, rt, spec)
	p, _ := rt.Process(id, "")
	stdout, stderr := readAll(t, p, Stdout), readAll(t, p, Stderr)
	if stdout != "touched\n" || !strings.Contains(stderr, "Permission denied") {
		t.Errorf("mkdir denied with EACCES: stdout %q, stderr %q", stdout, stderr)
	}
	if _, err := ValidateSpec(&specs.Spec{Process: &specs.Process{Args: []string{"true"}}, Linux: &specs.Linux{
		Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActNotify}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ValidateSpec with a notify profile = %v, want ErrInvalid", err)
	}
}

// A privileged container's /dev has the VM's devices and allows them, and
// so does its root; an unprivileged one's has only the standard nodes, and
// nodes it makes cannot be opened.
func TestPrivilegedDevices(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Skipf("no /dev/kmsg here: %v", err)
	}
	script := `test -c /dev/kmsg && dd if=/dev/kmsg bs=8192 count=1 2>/dev/null | wc -c | grep -qv '^0$' && echo kmsg-read
mknod /root/null2 c 1 3 && echo x > /root/null2 2>/dev/null && echo rootfs-node-used
echo x > /dev/null && echo null-ok`
	for _, tt := range []struct {
		privileged bool
		want       string
	}{{true, "kmsg-read\nrootfs-node-used\nnull-ok\n"}, {false, "null-ok\n"}} {
		rt := newTestRuntime(t)
		spec := testSpec("sh", "-c", script)
		if tt.privileged {
			spec.Annotations = map[string]string{contract.AnnotationPrivileged: "true"}
		}
		// The rootfs is nodev, as the agent's storage mounts it.
		root := testenv.BusyboxRoot(t, "")
		if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
		if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NODEV, ""); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("priv-%v", tt.privileged)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Create(ctx, id, mustValidate(t, spec), root); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Remove(context.Background(), id) })
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		p, _ := rt.Process(id, "")
		if got := readAll(t, p, Stdout); got != tt.want {
			t.Errorf("privileged %v: %q, want %q (stderr %q)", tt.privileged, got, tt.want, readAll(t, p, Stderr))
		}
	}
}
