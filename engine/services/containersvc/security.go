package containersvc

import (
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// capAll is docker's name for every capability in --cap-add/--cap-drop.
const capAll = "ALL"

// normalizeCaps upper-cases capability names and adds the CAP_ prefix, as
// docker accepts "net_admin" for CAP_NET_ADMIN, and refuses unknown ones.
func normalizeCaps(flag string, caps []string) ([]string, error) {
	var out []string
	for _, c := range caps {
		n := strings.ToUpper(strings.TrimSpace(c))
		if n != capAll && !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		if n != capAll && !slices.Contains(contract.Capabilities, n) {
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid %s: unknown capability: %q", flag, c)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// capSet is the bounding set of a container's processes: Docker's default
// with --cap-add and --cap-drop applied as docker applies them (ALL in
// --cap-add is every capability but the dropped ones; ALL in --cap-drop
// leaves only the added ones); every capability for a privileged
// container, whatever the others say.
func capSet(sec containers.Security) []string {
	var base []string
	switch {
	case sec.Privileged:
		return slices.Clone(contract.Capabilities)
	case slices.Contains(sec.CapAdd, capAll):
		base = slices.Clone(contract.Capabilities)
	case slices.Contains(sec.CapDrop, capAll):
		base = nil
	default:
		base = slices.Clone(DefaultCapabilities)
	}
	if !slices.Contains(sec.CapAdd, capAll) {
		for _, c := range sec.CapAdd {
			if !slices.Contains(base, c) {
				base = append(base, c)
			}
		}
	}
	if !slices.Contains(sec.CapDrop, capAll) {
		base = slices.DeleteFunc(base, func(c string) bool { return slices.Contains(sec.CapDrop, c) })
	}
	if base == nil {
		base = []string{}
	}
	return base
}

// SecurityOpts is what docker's --security-opt values ask.
type SecurityOpts struct {
	NoNewPrivileges bool
	// Seccomp is the seccomp profile: "" or "builtin" for Docker's
	// default, "unconfined" for none, else a profile's JSON (the docker
	// CLI sends a profile file's content).
	Seccomp string
}

// ParseSecurityOpt reads docker's --security-opt values. What a VM's
// guest has decides what can be honoured: no-new-privileges and seccomp
// are (a profile is checked with the container's capabilities at create);
// AppArmor and SELinux are not in the guest, so only their unconfined and
// disabled forms, which say what a container gets anyway, pass.
func ParseSecurityOpt(opts []string) (SecurityOpts, error) {
	var o SecurityOpts
	for _, opt := range opts {
		k, v, hasV := strings.Cut(opt, "=")
		if !hasV {
			k, v, hasV = strings.Cut(opt, ":")
		}
		switch {
		case k == "no-new-privileges" && (!hasV || v == "true"):
			o.NoNewPrivileges = true
		case k == "no-new-privileges" && v == "false":
			o.NoNewPrivileges = false
		case k == "seccomp" && v != "":
			o.Seccomp = v
		case k == "apparmor" && v == "unconfined", k == "label" && v == "disable":
		case k == "apparmor" || k == "label":
			return SecurityOpts{}, errs.New(errdefs.ErrInvalidArgument, "--security-opt %s is not supported: a container's VM runs no %s profile of the host; only %s=unconfined", opt, k, k)
		default:
			return SecurityOpts{}, errs.New(errdefs.ErrInvalidArgument, "invalid --security-opt: %q", opt)
		}
	}
	return o, nil
}

// checkSecurity validates sec and normalizes its capability names.
func checkSecurity(sec *containers.Security) error {
	var err error
	if sec.CapAdd, err = normalizeCaps("--cap-add", sec.CapAdd); err != nil {
		return err
	}
	if sec.CapDrop, err = normalizeCaps("--cap-drop", sec.CapDrop); err != nil {
		return err
	}
	probe := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: capSet(*sec)}}}
	if _, err := seccompProfile(probe, *sec); err != nil {
		return err
	}
	if sec.OOMScoreAdj < -1000 || sec.OOMScoreAdj > 1000 {
		return errs.New(errdefs.ErrInvalidArgument, "invalid --oom-score-adj %d: it must be from -1000 to 1000", sec.OOMScoreAdj)
	}
	for _, u := range sec.Ulimits {
		if _, err := (&units.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard}).GetRlimit(); err != nil {
			return errs.New(errdefs.ErrInvalidArgument, "invalid --ulimit %s: %v", u.Name, err)
		}
		if u.Soft > u.Hard {
			return errs.New(errdefs.ErrInvalidArgument, "invalid --ulimit %s: the soft limit %d is above the hard limit %d", u.Name, u.Soft, u.Hard)
		}
	}
	for k, v := range sec.Sysctls {
		if k == "" || strings.ContainsAny(k, "/ \x00") || strings.Contains(k, "..") || strings.ContainsAny(v, "\x00\n") {
			return errs.New(errdefs.ErrInvalidArgument, "invalid --sysctl %q", k+"="+v)
		}
	}
	clean := map[string]string{}
	for dst, opts := range sec.Tmpfs {
		c, err := checkDestination(dst)
		if err != nil {
			return err
		}
		if strings.ContainsAny(opts, "\x00\n") {
			return errs.New(errdefs.ErrInvalidArgument, "invalid --tmpfs options %q", opts)
		}
		if _, dup := clean[c]; dup {
			return errs.New(errdefs.ErrInvalidArgument, "duplicate mount point: %s", c)
		}
		clean[c] = opts
	}
	if len(clean) > 0 {
		sec.Tmpfs = clean
	}
	return nil
}

// applySecurity puts sec into a container's spec. A privileged container
// (docker run --privileged) is confined by its VM alone, as Docker's is by
// its host: every capability, no seccomp filter, nothing masked or
// read-only in /proc and /sys, and every device of its VM
// (contract.AnnotationPrivileged).
func applySecurity(s *specs.Spec, sec containers.Security) error {
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: capSet(sec)}
	s.Process.NoNewPrivileges = sec.NoNewPrivileges
	var err error
	if s.Linux.Seccomp, err = seccompProfile(s, sec); err != nil {
		return err
	}
	if sec.Privileged {
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		for i, m := range s.Mounts {
			if m.Destination == "/sys" {
				s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" })
			}
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[contract.AnnotationPrivileged] = "true"
	}
	if sec.ReadOnlyRootfs {
		s.Root.Readonly = true
	}
	if sec.OOMScoreAdj != 0 {
		adj := sec.OOMScoreAdj
		s.Process.OOMScoreAdj = &adj
	}
	for _, u := range sec.Ulimits {
		s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{
			Type: "RLIMIT_" + strings.ToUpper(u.Name), Soft: uint64(u.Soft), Hard: uint64(u.Hard),
		})
	}
	if sec.PidsLimit > 0 {
		limit := sec.PidsLimit
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
	}
	if len(sec.Sysctls) > 0 {
		s.Linux.Sysctl = map[string]string{}
		for k, v := range sec.Sysctls {
			s.Linux.Sysctl[k] = v
		}
	}
	dsts := make([]string, 0, len(sec.Tmpfs))
	for d := range sec.Tmpfs {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	for _, d := range dsts {
		// Docker's defaults, then the user's options.
		opts := []string{"nosuid", "nodev", "noexec"}
		for _, o := range strings.Split(sec.Tmpfs[d], ",") {
			if o = strings.TrimSpace(o); o != "" {
				opts = append(opts, o)
			}
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: path.Clean(d), Type: "tmpfs", Source: "tmpfs", Options: opts})
	}
	return nil
}
