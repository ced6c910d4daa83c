package containersvc

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/containers"
)

func specOf(t *testing.T, sec containers.Security) *specs.Spec {
	t.Helper()
	s, err := BuildSpec(&containers.Container{ID: "c1", Config: containers.Config{Args: []string{"sh"}, Security: sec}})
	if err != nil {
		t.Fatalf("BuildSpec(%+v): %v", sec, err)
	}
	return s
}

// action is what p's rules say of a system call called without arguments
// that its conditional rules look at: the first unconditional rule that
// names it, else the default.
func action(p *specs.LinuxSeccomp, name string) (specs.LinuxSeccompAction, uint) {
	for _, r := range p.Syscalls {
		if slices.Contains(r.Names, name) && len(r.Args) == 0 {
			errno := uint(1)
			if r.ErrnoRet != nil {
				errno = *r.ErrnoRet
			}
			return r.Action, errno
		}
	}
	return p.DefaultAction, *p.DefaultErrnoRet
}

// Every container gets Docker's default profile for its capabilities, as
// dockerd gives it, unless it is privileged or asks for another.
func TestSeccompProfileChoice(t *testing.T) {
	def := specOf(t, containers.Security{}).Linux.Seccomp
	if def == nil || def.DefaultAction != specs.ActErrno || def.DefaultErrnoRet == nil || *def.DefaultErrnoRet != 1 {
		t.Fatalf("default profile %+v, want Docker's (EPERM by default)", def)
	}
	for _, tc := range []struct {
		call   string
		action specs.LinuxSeccompAction
		errno  uint
	}{{"read", specs.ActAllow, 0}, {"mount", specs.ActErrno, 1}, {"keyctl", specs.ActErrno, 1}, {"unshare", specs.ActErrno, 1}, {"clone3", specs.ActErrno, 38}} {
		a, errno := action(def, tc.call)
		if a != tc.action || (a == specs.ActErrno && errno != tc.errno) {
			t.Errorf("default profile: %s is %s %d, want %s %d", tc.call, a, errno, tc.action, tc.errno)
		}
	}
	admin := specOf(t, containers.Security{CapAdd: []string{"CAP_SYS_ADMIN"}}).Linux.Seccomp
	for _, call := range []string{"mount", "unshare", "clone3"} {
		if a, _ := action(admin, call); a != specs.ActAllow {
			t.Errorf("profile with CAP_SYS_ADMIN: %s is %s, want allowed", call, a)
		}
	}
	if b := specOf(t, containers.Security{SecurityOpt: []string{"seccomp=builtin"}}).Linux.Seccomp; len(b.Syscalls) != len(def.Syscalls) {
		t.Errorf("seccomp=builtin has %d rules, the default %d", len(b.Syscalls), len(def.Syscalls))
	}
	if p := specOf(t, containers.Security{SecurityOpt: []string{"seccomp=unconfined"}}).Linux.Seccomp; p != nil {
		t.Errorf("seccomp=unconfined: profile %+v", p)
	}
	custom := specOf(t, containers.Security{SecurityOpt: []string{`seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}`}}).Linux.Seccomp
	if a, errno := action(custom, "mkdir"); custom.DefaultAction != specs.ActAllow || a != specs.ActErrno || errno != 13 {
		t.Errorf("custom profile: default %s, mkdir %s %d", custom.DefaultAction, a, errno)
	}
	// A privileged container is confined by its VM only; a profile it
	// asks for is ignored, as dockerd ignores it.
	priv := specOf(t, containers.Security{Privileged: true, CapDrop: []string{"CAP_CHOWN"}, SecurityOpt: []string{"seccomp=builtin"}})
	switch {
	case priv.Linux.Seccomp != nil:
		t.Errorf("privileged: profile %+v", priv.Linux.Seccomp)
	case !slices.Equal(priv.Process.Capabilities.Bounding, contract.Capabilities):
		t.Errorf("privileged: capabilities %v, want all", priv.Process.Capabilities.Bounding)
	case len(priv.Linux.MaskedPaths) > 0 || len(priv.Linux.ReadonlyPaths) > 0:
		t.Errorf("privileged: masked %v read-only %v", priv.Linux.MaskedPaths, priv.Linux.ReadonlyPaths)
	case priv.Annotations[contract.AnnotationPrivileged] != "true":
		t.Errorf("privileged: annotations %v", priv.Annotations)
	}
	for _, m := range priv.Mounts {
		if m.Destination == "/sys" && slices.Contains(m.Options, "ro") {
			t.Errorf("privileged: /sys mounted %v", m.Options)
		}
	}
	if plain := specOf(t, containers.Security{}); plain.Annotations[contract.AnnotationPrivileged] != "" || len(plain.Linux.MaskedPaths) == 0 {
		t.Errorf("unprivileged: annotations %v masked %v", plain.Annotations, plain.Linux.MaskedPaths)
	}
}

// A profile the guest cannot run is refused at create, in one line.
func TestSeccompProfileRefused(t *testing.T) {
	for _, tc := range []struct{ profile, want string }{
		{`{"defaultAction":`, "invalid --security-opt seccomp profile: Decoding seccomp profile failed"},
		{`{"defaultAction":"SCMP_ACT_NOTIFY"}`, "SCMP_ACT_NOTIFY is not supported"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/s.sock"}`, "listenerPath is not supported"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_SOMETIMES"}]}`, `the rule for mkdir: unknown action "SCMP_ACT_SOMETIMES"`},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":5000}]}`, "errnoRet 5000 is above 4095"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}`, "compares argument 6"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_ODD"}]}]}`, `unknown operator "SCMP_CMP_ODD"`},
		{`{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}`, "flag \"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV\" is not supported"},
		{`{"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}`, "defaultAction has no action"},
	} {
		sec := containers.Security{SecurityOpt: []string{"seccomp=" + tc.profile}}
		err := checkSecurity(&sec)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("profile %s: %v, want one line with %q", tc.profile, err, tc.want)
		}
	}
	// The contract's names pass; an empty profile is none, as in dockerd.
	for _, a := range contract.SeccompActions {
		sec := containers.Security{SecurityOpt: []string{`seccomp={"defaultAction":"` + a + `","flags":["` + strings.Join(contract.SeccompFlags, `","`) + `"]}`}}
		if err := checkSecurity(&sec); err != nil {
			t.Errorf("action %s: %v", a, err)
		}
	}
	if p := specOf(t, containers.Security{SecurityOpt: []string{"seccomp={}"}}).Linux.Seccomp; p != nil {
		t.Errorf("seccomp={}: %+v, want no profile", p)
	}
}

// docker exec --privileged gives the process every capability; the
// container's filter stays (the agent applies it to every exec).
func TestExecPrivileged(t *testing.T) {
	c := &containers.Container{ID: "c1", Config: containers.Config{Args: []string{"sh"}}}
	for _, tc := range []struct {
		privileged bool
		want       []string
	}{{false, DefaultCapabilities}, {true, contract.Capabilities}} {
		p, err := execSpec(c, ExecOptions{Cmd: []string{"id"}, Privileged: tc.privileged})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Capabilities.Bounding, tc.want) {
			t.Errorf("exec privileged %v: capabilities %v, want %v", tc.privileged, p.Capabilities.Bounding, tc.want)
		}
	}
	if !slices.Equal(capSet(c.Config.Security), DefaultCapabilities) {
		t.Errorf("a privileged exec changed the container's capabilities")
	}
}
