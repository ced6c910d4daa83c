package container

import (
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/seccomp"
)

// nsFlags maps the namespace types the runtime can create to clone flags.
// The cgroup namespace is not a clone flag here: the init unshares it once
// it is inside the container's cgroup, so the namespace is rooted there.
var nsFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.CgroupNamespace:  0,
}

// DefaultPath is used when the process environment has no PATH.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ValidSpec is an OCI spec that ValidateSpec accepted. Runtime.Create takes
// nothing else: a spec is checked once, where it enters the guest (the
// agent service, before it mounts anything), and cannot reach the runtime
// unchecked.
type ValidSpec struct {
	spec *specs.Spec
	// filter is the spec's seccomp profile, compiled; nil for none.
	filter *seccomp.Filter
}

// ValidateSpec checks what the runtime needs from an OCI spec, so that a bad
// request fails with ErrInvalid before anything is created, and returns it
// for Runtime.Create with its seccomp profile compiled. The caller must not
// change s afterwards.
func ValidateSpec(s *specs.Spec) (ValidSpec, error) {
	if err := validateSpec(s); err != nil {
		return ValidSpec{}, err
	}
	filter, err := filters.Compile(s.Linux.Seccomp)
	if err != nil {
		return ValidSpec{}, errorf(ErrInvalid, "seccomp profile: %v", err)
	}
	return ValidSpec{spec: s, filter: filter}, nil
}

// filters keeps the compiled profiles of this agent's containers.
var filters seccomp.Cache

func validateSpec(s *specs.Spec) error {
	if s == nil {
		return errorf(ErrInvalid, "spec is missing")
	}
	if err := ValidateProcess(s.Process); err != nil {
		return err
	}
	if s.Linux == nil {
		return errorf(ErrInvalid, "spec has no linux section")
	}
	seen := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range s.Linux.Namespaces {
		if _, ok := nsFlags[ns.Type]; !ok {
			return errorf(ErrInvalid, "namespace type %q is not supported", ns.Type)
		}
		if ns.Path != "" {
			return errorf(ErrInvalid, "joining an existing %s namespace is not supported", ns.Type)
		}
		if seen[ns.Type] {
			return errorf(ErrInvalid, "namespace %s listed twice", ns.Type)
		}
		seen[ns.Type] = true
	}
	if (s.Hostname != "" || s.Domainname != "") && !seen[specs.UTSNamespace] {
		return errorf(ErrInvalid, "hostname needs a uts namespace")
	}
	if len(s.Hostname) > 64 {
		return errorf(ErrInvalid, "hostname is longer than 64 bytes")
	}
	for _, m := range s.Mounts {
		if err := validateMount(m); err != nil {
			return err
		}
	}
	for _, p := range append(append([]string{}, s.Linux.MaskedPaths...), s.Linux.ReadonlyPaths...) {
		if !cleanAbs(p) {
			return errorf(ErrInvalid, "path %q must be absolute and clean", p)
		}
	}
	for k := range s.Linux.Sysctl {
		if k == "" || strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
			return errorf(ErrInvalid, "sysctl %q is not a valid key", k)
		}
	}
	for _, d := range s.Linux.Devices {
		if !cleanAbs(d.Path) || !strings.HasPrefix(d.Path, "/dev/") {
			return errorf(ErrInvalid, "device path %q must be under /dev", d.Path)
		}
		if d.Type != "c" && d.Type != "b" && d.Type != "u" && d.Type != "p" {
			return errorf(ErrInvalid, "device %s has unknown type %q", d.Path, d.Type)
		}
	}
	if r := s.Linux.Resources; r != nil {
		if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit < -1 {
			return errorf(ErrInvalid, "memory limit %d is negative", *r.Memory.Limit)
		}
		if r.CPU != nil && r.CPU.Quota != nil && *r.CPU.Quota > 0 && r.CPU.Period != nil && *r.CPU.Period == 0 {
			return errorf(ErrInvalid, "cpu period must not be zero")
		}
	}
	return nil
}

// ValidateProcess checks a process description (for the container's init
// or for an exec).
func ValidateProcess(p *specs.Process) error {
	if p == nil {
		return errorf(ErrInvalid, "process is missing")
	}
	if len(p.Args) == 0 || p.Args[0] == "" {
		return errorf(ErrInvalid, "process args are empty")
	}
	for _, a := range p.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return errorf(ErrInvalid, "process argument contains a NUL byte")
		}
	}
	for _, e := range p.Env {
		if strings.IndexByte(e, 0) >= 0 || !strings.Contains(e, "=") {
			return errorf(ErrInvalid, "environment entry %q is not NAME=value", e)
		}
	}
	if p.Cwd != "" && !path.IsAbs(p.Cwd) {
		return errorf(ErrInvalid, "cwd %q must be absolute", p.Cwd)
	}
	if p.ConsoleSize != nil && (p.ConsoleSize.Height > 0xffff || p.ConsoleSize.Width > 0xffff) {
		return errorf(ErrInvalid, "console size %dx%d is too large", p.ConsoleSize.Width, p.ConsoleSize.Height)
	}
	for _, rl := range p.Rlimits {
		if _, ok := rlimitNames[rl.Type]; !ok {
			return errorf(ErrInvalid, "rlimit %q is not supported", rl.Type)
		}
	}
	if p.Capabilities != nil {
		for _, c := range p.Capabilities.Bounding {
			if _, ok := capNumbers[c]; !ok {
				return errorf(ErrInvalid, "capability %q is unknown", c)
			}
		}
	}
	return nil
}

func validateMount(m specs.Mount) error {
	if !cleanAbs(m.Destination) {
		return errorf(ErrInvalid, "mount destination %q must be absolute and clean", m.Destination)
	}
	if m.Destination == "/" {
		return errorf(ErrInvalid, "mount over / is not supported")
	}
	if isBind(m) && !path.IsAbs(m.Source) {
		return errorf(ErrInvalid, "bind mount source %q must be absolute", m.Source)
	}
	return nil
}

func cleanAbs(p string) bool {
	return path.IsAbs(p) && path.Clean(p) == p && strings.IndexByte(p, 0) < 0
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// JoinGuestNetwork makes the container share the guest's root network
// namespace, where the agent configured the VM's interfaces, instead of
// the new one the spec asks for: one container per VM, so the VM is the
// boundary (docs/networking.md). A network namespace given by path is
// left for ValidateSpec to refuse.
func JoinGuestNetwork(s *specs.Spec) {
	if s == nil || s.Linux == nil {
		return
	}
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
		return ns.Type == specs.NetworkNamespace && ns.Path == ""
	})
}

func hasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// cloneFlags returns the flags for the init's clone. A mount namespace is
// always created: the init's pivot_root must not touch the agent's mounts.
func cloneFlags(s *specs.Spec) uintptr {
	flags := uintptr(unix.CLONE_NEWNS)
	for _, ns := range s.Linux.Namespaces {
		flags |= nsFlags[ns.Type]
	}
	return flags
}

// processEnv returns the PATH the command is resolved with.
func pathEnv(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return DefaultPath
}

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// capNumbers are the capability numbers of include/uapi/linux/capability.h.
var capNumbers = func() map[string]uintptr {
	m := make(map[string]uintptr, len(contract.Capabilities))
	for i, c := range contract.Capabilities {
		m[c] = uintptr(i)
	}
	return m
}()

// validID accepts container and exec IDs that are safe as a path element.
func validID(id string) error {
	if id == "" || len(id) > 128 {
		return errorf(ErrInvalid, "id %q must be 1 to 128 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return errorf(ErrInvalid, "id %q may contain only letters, digits, '-', '_' and '.'", id)
		}
	}
	if id == "." || id == ".." {
		return errorf(ErrInvalid, "id %q is not allowed", id)
	}
	return nil
}

// ValidID reports whether id can name a container or an exec.
func ValidID(id string) error { return validID(id) }
