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
// leaves only the added ones).
func capSet(sec containers.Security) []string {
	var base []string
	switch {
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

// ParseSecurityOpt reads docker's --security-opt values. What a VM's
// guest has (no AppArmor, no SELinux, no seccomp profile yet) decides what
// can be honoured: no-new-privileges is; the unconfined and disabled forms
// of the others say what a container gets anyway; a profile is refused.
func ParseSecurityOpt(opts []string) (noNewPrivileges bool, err error) {
	for _, o := range opts {
		k, v, hasV := strings.Cut(o, "=")
		if !hasV {
			k, v, hasV = strings.Cut(o, ":")
		}
		switch {
		case k == "no-new-privileges" && (!hasV || v == "true"):
			noNewPrivileges = true
		case k == "no-new-privileges" && v == "false":
			noNewPrivileges = false
		case k == "seccomp" && v == "unconfined", k == "apparmor" && v == "unconfined", k == "label" && v == "disable":
		case k == "seccomp" || k == "apparmor" || k == "label":
			return false, errs.New(errdefs.ErrInvalidArgument, "--security-opt %s is not supported: a container's VM runs no %s profile of the host; only %s=unconfined", o, k, k)
		default:
			return false, errs.New(errdefs.ErrInvalidArgument, "invalid --security-opt: %q", o)
		}
	}
	return noNewPrivileges, nil
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

// applySecurity puts sec into a container's spec.
func applySecurity(s *specs.Spec, sec containers.Security) {
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: capSet(sec)}
	s.Process.NoNewPrivileges = sec.NoNewPrivileges
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
}
