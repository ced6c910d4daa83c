package seccomp

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/guest-agent/internal/testenv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// probeEnv makes the test binary a probe: it installs the filter the
// variable names on its thread, makes system calls and prints what each
// answered.
const probeEnv = "VMCTL_SECCOMP_PROBE"

func TestMain(m *testing.M) {
	if name := os.Getenv(probeEnv); name != "" {
		os.Exit(probe(name))
	}
	os.Exit(m.Run())
}

// probeProfiles are the profiles a probe can run under.
var probeProfiles = map[string]func(t testing.TB) *specs.LinuxSeccomp{
	"none":   func(testing.TB) *specs.LinuxSeccomp { return nil },
	"docker": func(t testing.TB) *specs.LinuxSeccomp { return dockerProfile(t, testenv.DockerCapabilities...) },
	"docker+sys_admin": func(t testing.TB) *specs.LinuxSeccomp {
		return dockerProfile(t, append(slices.Clone(testenv.DockerCapabilities), "CAP_SYS_ADMIN")...)
	},
	"deny-mkdir": func(testing.TB) *specs.LinuxSeccomp {
		return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(unix.EACCES)}}}
	},
}

// probe runs in the child. Every call it judges is one the kernel refuses
// after the filter lets it through, without a side effect: unshare of
// nothing, clone3 and mount with bad arguments, keyctl with an unknown
// command, mkdir of a bad address.
func probe(profile string) int {
	runtime.LockOSThread()
	var tb testing.TB = &testing.T{}
	f, err := Compile(probeProfiles[profile](tb))
	if err != nil {
		fmt.Println("compile:", err)
		return 1
	}
	// no_new_privs lets an unprivileged thread install a filter.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("no_new_privs:", err)
		return 1
	}
	if err := f.Install(false); err != nil {
		fmt.Println(err)
		return 1
	}
	const badAddress = 1
	calls := []struct {
		name string
		nr   uintptr
		args [3]uintptr
	}{
		{"keyctl", unix.SYS_KEYCTL, [3]uintptr{9999}},
		{"unshare", unix.SYS_UNSHARE, [3]uintptr{0}},
		{"clone3", unix.SYS_CLONE3, [3]uintptr{0, 0}},
		{"mount", unix.SYS_MOUNT, [3]uintptr{0, badAddress, 0}},
		{"mkdir", unix.SYS_MKDIR, [3]uintptr{badAddress, 0o755}},
		{"getpid", unix.SYS_GETPID, [3]uintptr{}},
	}
	var out []string
	for _, c := range calls {
		_, _, errno := unix.RawSyscall(c.nr, c.args[0], c.args[1], c.args[2])
		answer := "OK"
		if errno != 0 {
			answer = unix.ErrnoName(errno)
		}
		out = append(out, c.name+"="+answer)
	}
	// thread-self: the filter is this thread's.
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":\t"); ok && (k == "Seccomp" || k == "Seccomp_filters") {
			out = append(out, k+"="+v)
		}
	}
	fmt.Println(strings.Join(out, " "))
	return 0
}

// TestInstalledFilter runs system calls under installed filters and checks
// what the kernel answered: Docker's EPERM for namespaces, mounts and keys,
// ENOSYS for clone3, and a custom profile's own errno.
func TestInstalledFilter(t *testing.T) {
	if !kernelHasSeccomp() {
		t.Skip("the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)")
	}
	if status, err := os.ReadFile("/proc/self/status"); err != nil || !strings.Contains(string(status), "\nSeccomp:\t0\n") {
		t.Skipf("the tests run under a seccomp filter already (%v): it would answer for the probe too", err)
	}
	tests := []struct {
		profile string
		want    []string
	}{
		{"none", []string{"unshare=OK", "clone3=EINVAL", "mount=EFAULT", "mkdir=EFAULT", "getpid=OK", "Seccomp=0"}},
		{"docker", []string{"keyctl=EPERM", "unshare=EPERM", "clone3=ENOSYS", "mount=EPERM", "mkdir=EFAULT", "getpid=OK", "Seccomp=2", "Seccomp_filters=1"}},
		{"docker+sys_admin", []string{"keyctl=EPERM", "unshare=OK", "clone3=EINVAL", "mount=EFAULT", "getpid=OK", "Seccomp=2"}},
		{"deny-mkdir", []string{"unshare=OK", "clone3=EINVAL", "mkdir=EACCES", "getpid=OK", "Seccomp=2"}},
	}
	for _, tt := range tests {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), probeEnv+"="+tt.profile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: probe: %v: %s", tt.profile, err, out)
			continue
		}
		got := strings.Fields(string(out))
		for _, w := range tt.want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: probe printed %q, want %s", tt.profile, out, w)
			}
		}
	}
}

func kernelHasSeccomp() bool {
	// Strict mode takes no flags: EINVAL means the call exists.
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_STRICT, 1, 0)
	return errno == unix.EINVAL
}
