package containersvc

import (
	"slices"

	"github.com/containerd/errdefs"
	profiles "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// seccompProfile is the seccomp profile of a container whose spec s has
// its capabilities set, chosen as dockerd chooses it: none for a
// privileged container or with --security-opt seccomp=unconfined, the
// user's profile (JSON) if one was given, else Docker's default profile,
// which allows more with more capabilities (mount and unshare with
// CAP_SYS_ADMIN...). The guest agent compiles and installs it.
func seccompProfile(s *specs.Spec, sec containers.Security) (*specs.LinuxSeccomp, error) {
	opts, err := ParseSecurityOpt(sec.SecurityOpt)
	if err != nil {
		return nil, err
	}
	var p *specs.LinuxSeccomp
	switch {
	case sec.Privileged, opts.Seccomp == "unconfined":
		return nil, nil
	case opts.Seccomp == "" || opts.Seccomp == "builtin":
		p, err = profiles.GetDefaultProfile(s)
	default:
		p, err = profiles.LoadProfile(opts.Seccomp, s)
	}
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "invalid --security-opt seccomp profile: %v", err)
	}
	if err := checkSeccomp(p); err != nil {
		return nil, err
	}
	return p, nil
}

// checkSeccomp refuses at create what the guest agent would refuse at
// start: the contract says what it compiles. System call names it does
// not know are no error, as under runc: they do not exist in its guest.
func checkSeccomp(p *specs.LinuxSeccomp) error {
	if p == nil {
		return nil
	}
	bad := func(format string, a ...any) error {
		return errs.New(errdefs.ErrInvalidArgument, "invalid --security-opt seccomp profile: "+format, a...)
	}
	checkAction := func(where string, a specs.LinuxSeccompAction, errnoRet *uint) error {
		switch {
		case a == "":
			return bad("%s has no action", where)
		case a == specs.ActNotify:
			return bad("%s: %s is not supported: nothing in a container's VM listens for seccomp notifications", where, a)
		case !slices.Contains(contract.SeccompActions, string(a)):
			return bad("%s: unknown action %q", where, a)
		case errnoRet != nil && *errnoRet > contract.SeccompMaxErrno:
			return bad("%s: errnoRet %d is above %d", where, *errnoRet, contract.SeccompMaxErrno)
		}
		return nil
	}
	if p.ListenerPath != "" {
		return bad("listenerPath is not supported: nothing in a container's VM listens for seccomp notifications")
	}
	if err := checkAction("defaultAction", p.DefaultAction, p.DefaultErrnoRet); err != nil {
		return err
	}
	for _, f := range p.Flags {
		if !slices.Contains(contract.SeccompFlags, string(f)) {
			return bad("flag %q is not supported", f)
		}
	}
	for _, r := range p.Syscalls {
		where := "the rule for no system call"
		if len(r.Names) > 0 {
			where = "the rule for " + r.Names[0]
		}
		if err := checkAction(where, r.Action, r.ErrnoRet); err != nil {
			return err
		}
		for _, a := range r.Args {
			switch {
			case a.Index > contract.SeccompMaxArg:
				return bad("%s compares argument %d; a system call has %d", where, a.Index, contract.SeccompMaxArg+1)
			case !slices.Contains(contract.SeccompOperators, string(a.Op)):
				return bad("%s: unknown operator %q", where, a.Op)
			}
		}
	}
	return nil
}
