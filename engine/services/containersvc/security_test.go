package containersvc

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/containers"
)

func TestCapSet(t *testing.T) {
	for _, tc := range []struct {
		name       string
		add, drop  []string
		has, lacks []string
		n          int
	}{
		{name: "default", has: DefaultCapabilities, lacks: []string{"CAP_SYS_ADMIN"}, n: len(DefaultCapabilities)},
		{name: "add", add: []string{"CAP_NET_ADMIN"}, has: []string{"CAP_NET_ADMIN", "CAP_CHOWN"}, n: len(DefaultCapabilities) + 1},
		{name: "drop", drop: []string{"CAP_CHOWN"}, lacks: []string{"CAP_CHOWN"}, n: len(DefaultCapabilities) - 1},
		{name: "drop all, add one", add: []string{"CAP_NET_BIND_SERVICE"}, drop: []string{"ALL"}, has: []string{"CAP_NET_BIND_SERVICE"}, n: 1},
		{name: "add all, drop one", add: []string{"ALL"}, drop: []string{"CAP_SYS_ADMIN"}, lacks: []string{"CAP_SYS_ADMIN"}, n: len(contract.Capabilities) - 1},
		{name: "drop all", drop: []string{"ALL"}, n: 0},
	} {
		got := capSet(containers.Security{CapAdd: tc.add, CapDrop: tc.drop})
		if len(got) != tc.n {
			t.Errorf("%s: %d capabilities %v, want %d", tc.name, len(got), got, tc.n)
		}
		for _, c := range tc.has {
			if !slices.Contains(got, c) {
				t.Errorf("%s: %s missing from %v", tc.name, c, got)
			}
		}
		for _, c := range tc.lacks {
			if slices.Contains(got, c) {
				t.Errorf("%s: %s in %v", tc.name, c, got)
			}
		}
	}
}

func TestCheckSecurity(t *testing.T) {
	sec := containers.Security{CapAdd: []string{"net_admin", "CAP_SYS_PTRACE", "NET_ADMIN"}, CapDrop: []string{"all"}}
	if err := checkSecurity(&sec); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sec.CapAdd, []string{"CAP_NET_ADMIN", "CAP_SYS_PTRACE"}) || !slices.Equal(sec.CapDrop, []string{"ALL"}) {
		t.Errorf("normalized to add %v drop %v", sec.CapAdd, sec.CapDrop)
	}
	for _, tc := range []struct {
		sec  containers.Security
		want string
	}{
		{containers.Security{CapAdd: []string{"CAP_NOPE"}}, `invalid --cap-add: unknown capability: "CAP_NOPE"`},
		{containers.Security{CapDrop: []string{"fly"}}, `invalid --cap-drop: unknown capability: "fly"`},
		{containers.Security{OOMScoreAdj: 1001}, "invalid --oom-score-adj 1001"},
		{containers.Security{Ulimits: []containers.Ulimit{{Name: "nofiles", Soft: 1, Hard: 1}}}, "invalid --ulimit nofiles"},
		{containers.Security{Ulimits: []containers.Ulimit{{Name: "nofile", Soft: 10, Hard: 1}}}, "soft limit 10 is above the hard limit 1"},
		{containers.Security{Sysctls: map[string]string{"../x": "1"}}, "invalid --sysctl"},
		{containers.Security{Tmpfs: map[string]string{"rel": ""}}, "invalid mount path"},
	} {
		err := checkSecurity(&tc.sec)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkSecurity(%+v) = %v, want %q", tc.sec, err, tc.want)
		}
	}
}

func TestParseSecurityOpt(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want SecurityOpts
		err  string
	}{
		{in: nil},
		{in: []string{"no-new-privileges"}, want: SecurityOpts{NoNewPrivileges: true}},
		{in: []string{"no-new-privileges:true"}, want: SecurityOpts{NoNewPrivileges: true}},
		{in: []string{"no-new-privileges=false"}},
		{in: []string{"seccomp=unconfined", "apparmor=unconfined", "label=disable"}, want: SecurityOpts{Seccomp: "unconfined"}},
		{in: []string{`seccomp={"defaultAction":"SCMP_ACT_ALLOW"}`}, want: SecurityOpts{Seccomp: `{"defaultAction":"SCMP_ACT_ALLOW"}`}},
		{in: []string{"seccomp:builtin"}, want: SecurityOpts{Seccomp: "builtin"}},
		{in: []string{"apparmor=docker-default"}, err: "is not supported"},
		{in: []string{"seccomp="}, err: `invalid --security-opt: "seccomp="`},
		{in: []string{"bogus"}, err: `invalid --security-opt: "bogus"`},
	} {
		got, err := ParseSecurityOpt(tc.in)
		if tc.err != "" {
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSecurityOpt(%q) = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSecurityOpt(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

// The options reach the spec the agent runs.
func TestSecurityInSpec(t *testing.T) {
	c := &containers.Container{ID: "c1", Config: containers.Config{Args: []string{"sh"}, Security: containers.Security{
		CapAdd: []string{"CAP_NET_ADMIN"}, NoNewPrivileges: true, ReadOnlyRootfs: true, PidsLimit: 50,
		Ulimits: []containers.Ulimit{{Name: "nofile", Soft: 100, Hard: 200}}, Sysctls: map[string]string{"net.ipv4.ip_forward": "1"},
		Tmpfs: map[string]string{"/run": "size=1m"}, OOMScoreAdj: 500,
	}}}
	s, err := BuildSpec(c)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	switch {
	case !slices.Contains(p.Capabilities.Bounding, "CAP_NET_ADMIN"), !p.NoNewPrivileges, !s.Root.Readonly:
		t.Errorf("process %+v root %+v", p, s.Root)
	case s.Linux.Resources.Pids == nil || *s.Linux.Resources.Pids.Limit != 50:
		t.Errorf("pids %+v", s.Linux.Resources.Pids)
	case len(p.Rlimits) != 1 || p.Rlimits[0].Type != "RLIMIT_NOFILE" || p.Rlimits[0].Soft != 100 || p.Rlimits[0].Hard != 200:
		t.Errorf("rlimits %+v", p.Rlimits)
	case s.Linux.Sysctl["net.ipv4.ip_forward"] != "1", p.OOMScoreAdj == nil || *p.OOMScoreAdj != 500:
		t.Errorf("sysctl %v oom %v", s.Linux.Sysctl, p.OOMScoreAdj)
	}
	last := s.Mounts[len(s.Mounts)-1]
	if last.Destination != "/run" || last.Type != "tmpfs" || !slices.Equal(last.Options, []string{"nosuid", "nodev", "noexec", "size=1m"}) {
		t.Errorf("tmpfs mount %+v", last)
	}
}

func TestCheckHealthcheck(t *testing.T) {
	for _, tc := range []struct {
		h    *containers.Healthcheck
		none bool
		want string
	}{
		{h: nil, none: true},
		{h: &containers.Healthcheck{Test: []string{"NONE"}}, none: true},
		{h: &containers.Healthcheck{Test: []string{"CMD", "true"}}},
		{h: &containers.Healthcheck{Test: []string{"CMD-SHELL", "exit 0"}, Interval: time.Second, Retries: 2}},
		{h: &containers.Healthcheck{Test: []string{"CMD"}}, want: "CMD needs a command"},
		{h: &containers.Healthcheck{Test: []string{"CMD-SHELL", "a", "b"}}, want: "CMD-SHELL takes one command line"},
		{h: &containers.Healthcheck{Test: []string{"EXEC", "x"}}, want: `invalid health check test "EXEC"`},
		{h: &containers.Healthcheck{Test: []string{"CMD", "x"}, Interval: time.Microsecond}, want: "interval"},
		{h: &containers.Healthcheck{Test: []string{"CMD", "x"}, Retries: -1}, want: "retries -1"},
	} {
		got, err := checkHealthcheck(tc.h)
		switch {
		case tc.want != "":
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("checkHealthcheck(%+v) = %v, want %q", tc.h, err, tc.want)
			}
		case err != nil || (got == nil) != tc.none:
			t.Errorf("checkHealthcheck(%+v) = %+v, %v", tc.h, got, err)
		}
	}
	if args := healthArgs(&containers.Healthcheck{Test: []string{"CMD-SHELL", "exit 3"}}); !slices.Equal(args, []string{"/bin/sh", "-c", "exit 3"}) {
		t.Errorf("healthArgs = %q", args)
	}
}

func TestMergeHealthcheck(t *testing.T) {
	img := &containers.Healthcheck{Test: []string{"CMD", "img"}, Interval: time.Minute, Retries: 5}
	got := mergeHealthcheck(&containers.Healthcheck{Interval: time.Second}, img)
	if !slices.Equal(got.Test, img.Test) || got.Interval != time.Second || got.Retries != 5 {
		t.Errorf("merged = %+v", got)
	}
	if got := mergeHealthcheck(&containers.Healthcheck{Test: []string{"NONE"}}, img); got.Test[0] != "NONE" {
		t.Errorf("--no-healthcheck over an image's: %+v", got)
	}
	if mergeHealthcheck(nil, img) != img || mergeHealthcheck(nil, nil) != nil {
		t.Error("merge with nothing")
	}
}
