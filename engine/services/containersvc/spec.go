package containersvc

import (
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/errs"

	"github.com/vmctl/vmctl/engine/containers"
)

// defaultPath is Docker's PATH for images that set none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// cpuPeriod is the CFS period the cpu.max quota is expressed in (100 ms).
const cpuPeriod = 100000

// ResolveArgs applies Docker's rules: the user's command replaces the
// image's Cmd; an entrypoint, if any, comes first.
func ResolveArgs(entrypoint, imageCmd, userCmd []string) ([]string, error) {
	cmd := imageCmd
	if len(userCmd) > 0 {
		cmd = userCmd
	}
	args := append(append([]string{}, entrypoint...), cmd...)
	if len(args) == 0 {
		return nil, errs.New(errdefs.ErrInvalidArgument, "no command specified: the image has no Cmd or Entrypoint, give one")
	}
	return args, nil
}

// MergeEnv overlays user KEY=VALUE pairs on the image's, keeping order of
// first appearance, and adds PATH, HOSTNAME (and TERM with a tty) when unset.
func MergeEnv(image, user []string, hostname string, tty bool) ([]string, error) {
	var keys []string
	vals := map[string]string{}
	set := func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return errs.New(errdefs.ErrInvalidArgument, "invalid environment variable %q: want KEY=VALUE", kv)
		}
		if !ok {
			// Docker's "-e KEY" without a value drops the variable from the
			// container unless the caller filled it in from its own environment.
			return nil
		}
		if _, seen := vals[k]; !seen {
			keys = append(keys, k)
		}
		vals[k] = v
		return nil
	}
	for _, kv := range image {
		if err := set(kv); err != nil {
			return nil, err
		}
	}
	for _, kv := range user {
		if err := set(kv); err != nil {
			return nil, err
		}
	}
	defaults := []string{defaultPath, "HOSTNAME=" + hostname}
	if tty {
		defaults = append(defaults, "TERM=xterm")
	}
	for _, kv := range defaults {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			if err := set(kv); err != nil {
				return nil, err
			}
		}
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

// ParseUser parses docker's "user[:group]". Numeric IDs are returned as
// they are; a name (of the user or the group) is returned whole in name,
// for the guest to resolve in the container's own /etc/passwd and
// /etc/group when the process starts, as runc resolves it.
func ParseUser(s string) (uid, gid uint32, name string, err error) {
	if s == "" {
		return 0, 0, "", nil
	}
	u, g, hasGID := strings.Cut(s, ":")
	if u == "" || (hasGID && g == "") || strings.ContainsAny(s, "\x00\n\r\t ") || strings.Count(s, ":") > 1 || len(s) > 256 {
		return 0, 0, "", errs.New(errdefs.ErrInvalidArgument, "invalid user %q: want user[:group], each a name or a number", s)
	}
	uv, uerr := strconv.ParseUint(u, 10, 32)
	gv := uint64(0)
	var gerr error
	if hasGID {
		gv, gerr = strconv.ParseUint(g, 10, 32)
	}
	if uerr != nil || gerr != nil {
		return 0, 0, s, nil
	}
	return uint32(uv), uint32(gv), "", nil
}

// DefaultCapabilities is the bounding set of a container's processes:
// Docker's default, so that images behave as under Docker (root may chown,
// bind low ports, use raw sockets...) but may not mount, load modules,
// change the clock or trace other processes. The VM is the isolation
// boundary; this keeps a container's root from reconfiguring its guest.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths are Docker's defaults: kernel interfaces a
// container has no business reading (masked) or changing (read-only).
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// BuildSpec turns a container record into the OCI runtime spec the agent runs.
func BuildSpec(c *containers.Container) (*specs.Spec, error) {
	cfg := c.Config
	uid, gid, username, err := ParseUser(cfg.User)
	if err != nil {
		return nil, err
	}
	cwd := cfg.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	if !strings.HasPrefix(cwd, "/") {
		return nil, errs.New(errdefs.ErrInvalidArgument, "working directory %q must be absolute", cwd)
	}
	proc := &specs.Process{
		Terminal:     cfg.Tty,
		User:         specs.User{UID: uid, GID: gid, Username: username},
		Args:         cfg.Args,
		Env:          cfg.Env,
		Cwd:          cwd,
		Capabilities: &specs.LinuxCapabilities{Bounding: DefaultCapabilities},
	}
	if cfg.Tty && cfg.ConsoleRows > 0 && cfg.ConsoleCols > 0 {
		proc.ConsoleSize = &specs.Box{Height: uint(cfg.ConsoleRows), Width: uint(cfg.ConsoleCols)}
	}
	res := &specs.LinuxResources{}
	if cfg.MemoryBytes > 0 {
		limit := cfg.MemoryBytes
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	if cfg.NanoCPUs > 0 {
		quota := cfg.NanoCPUs * cpuPeriod / 1e9
		period := uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	var annotations map[string]string
	switch {
	case cfg.Pause:
		annotations = map[string]string{contract.AnnotationInit: contract.InitPause}
	case cfg.Init:
		annotations = map[string]string{contract.AnnotationInit: contract.InitReap}
	}
	if len(cfg.GroupAdd) > 0 {
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[contract.AnnotationGroupAdd] = strings.Join(cfg.GroupAdd, ",")
	}
	spec := &specs.Spec{
		Version:     specs.Version,
		Annotations: annotations,
		Process:     proc,
		Root:        &specs.Root{Path: "rootfs"},
		Hostname:    cfg.Hostname,
		Domainname:  cfg.Domainname,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.NetworkNamespace},
			},
			Resources:     res,
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	if err := applySecurity(spec, cfg.Security); err != nil {
		return nil, err
	}
	return spec, nil
}
