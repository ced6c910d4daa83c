// Package containers holds the container domain type, its state machine and
// its persistent store.
//
// A container is a record: what to run (resolved from the image and the
// user's options at create time, down to the hypervisor, the image disk and
// the OCI spec), and what happened to it (state, exit status). It does not
// know how a container is run; engine/services does.
package containers

import (
	"regexp"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/engine/errs"
)

// Status is the state of a container.
//
//	Created --Start--> Running --(process exits)--> Exited --Start--> Running
//	Created, Exited --Remove--> (gone); Running --Remove(force)--> (gone)
type Status string

const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusExited  Status = "exited"
)

// Config is what the container runs, fixed at create time.
type Config struct {
	Image   string `json:"image"`   // the reference the user gave
	ImageID string `json:"imageId"` // "sha256:..."
	// Args is the resolved command: Entrypoint + (user command or image Cmd).
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir"`
	// User is "UID[:GID]".
	User     string `json:"user,omitempty"`
	Hostname string `json:"hostname"`
	// Domainname is docker run --domainname.
	Domainname string `json:"domainname,omitempty"`
	Tty        bool   `json:"tty"`
	OpenStdin  bool   `json:"openStdin"`
	// StdinOnce closes stdin when the first attached client's stdin ends.
	StdinOnce bool `json:"stdinOnce,omitempty"`
	// StopSignal is what a stop sends first; empty means SIGTERM.
	StopSignal string `json:"stopSignal,omitempty"`
	// ConsoleRows/Cols is the initial terminal size when Tty is set.
	ConsoleRows uint16 `json:"consoleRows,omitempty"`
	ConsoleCols uint16 `json:"consoleCols,omitempty"`
	// MemoryBytes limits the container's cgroup; 0 means no limit.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// NanoCPUs limits CPU time (1e9 = one CPU); 0 means no limit.
	NanoCPUs int64 `json:"nanoCpus,omitempty"`
	// Hypervisor is the hypervisor chosen at create from the user's request
	// ("auto", "kvm" or "qemu"): "kvm" (the native VMM) or "qemu". Every
	// start uses it, as docker keeps the runtime a container was created
	// with. A record of an earlier version holds the request itself and no
	// Accel (see Resolved).
	Hypervisor string `json:"hypervisor"`
	// Accel is the accelerator chosen with Hypervisor: "kvm" or "tcg".
	Accel      string `json:"accel,omitempty"`
	AutoRemove bool   `json:"autoRemove"`
	// Pause makes the container run nothing of its own: its init waits
	// and the container serves execs only (a build's steps).
	Pause bool `json:"pause,omitempty"`
	// Init keeps an init as the container's PID 1 over its command
	// (docker run --init): signals forwarded, orphans reaped.
	Init bool `json:"init,omitempty"`
	// Healthcheck is how the container's health is probed (docker run
	// --health-cmd and friends, or the image's HEALTHCHECK); nil: none.
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// GroupAdd are more groups for the container's processes (docker run
	// --group-add): names resolved in the container, or numbers.
	GroupAdd []string `json:"groupAdd,omitempty"`
	// StopTimeout is how many seconds a stop that names no timeout waits
	// for the stop signal before SIGKILL (docker run --stop-timeout);
	// nil: 10, negative: forever.
	StopTimeout *int `json:"stopTimeout,omitempty"`
	// Labels are the user's metadata (docker run --label), matched by
	// label filters.
	Labels map[string]string `json:"labels,omitempty"`
	// Mounts are the volumes mounted into the container.
	Mounts []Mount `json:"mounts,omitempty"`
	// Binds are the host directories mounted into the container.
	Binds []Bind `json:"binds,omitempty"`
	// Security is docker run's confinement and limit options; the zero
	// value is Docker's default confinement.
	Security Security `json:"security,omitzero"`
	// LogOptions are the log options as given (--log-opt: max-size,
	// max-file), LogMaxSize and LogMaxFiles what they came to with the
	// daemon's defaults (0 in records of earlier versions: the defaults of
	// the daemon that opens the log).
	LogOptions  map[string]string `json:"logOptions,omitempty"`
	LogMaxSize  int64             `json:"logMaxSize,omitempty"`
	LogMaxFiles int               `json:"logMaxFiles,omitempty"`
	// RestartPolicy says when the daemon starts the container again.
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	// Network is what the container asked of the network at create; nil
	// in records of versions before networking (see NetworkMode).
	Network *NetworkConfig `json:"network,omitempty"`

	// ImageDisks are the image's read-only disks, top layer first, built
	// at create (see rootfs.Builder.ImageDisks).
	ImageDisks []string `json:"imageDisks,omitempty"`
	// ImageDisk is the single flattened disk that records of earlier
	// versions have instead of ImageDisks.
	ImageDisk string `json:"imageDisk,omitempty"`
	// Spec is the OCI runtime spec the guest runs, built at create from
	// the fields above.
	Spec *specs.Spec `json:"spec,omitempty"`
}

// Resolved reports whether create chose the hypervisor, built the image
// disk and the spec. Records written by earlier versions did not: their
// next start does it once and records the result.
func (c *Config) Resolved() bool {
	return c.Accel != "" && len(c.Disks()) > 0 && c.Spec != nil
}

// Disks are the image's read-only disks, top first: ImageDisks, or the
// one ImageDisk of an earlier version's record.
func (c *Config) Disks() []string {
	if len(c.ImageDisks) > 0 {
		return c.ImageDisks
	}
	if c.ImageDisk != "" {
		return []string{c.ImageDisk}
	}
	return nil
}

// Mount is a volume mounted into a container.
type Mount struct {
	// Name is the volume's name (64 hex digits for an anonymous volume).
	Name string `json:"name"`
	// Source is the volume's disk on the host.
	Source string `json:"source"`
	// Destination is the absolute, clean path inside the container.
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"readOnly,omitempty"`
	// Anonymous volumes were made for this container alone (docker run -v
	// /path) and are removed with it when it was run with AutoRemove.
	Anonymous bool `json:"anonymous,omitempty"`
}

// Bind is a host directory mounted into a container (docker run -v
// /host:/ctr, --mount type=bind), shared with its VM over virtio-9p.
type Bind struct {
	// Source is the host path as given: absolute and clean. Symlinks in
	// it are resolved at each start.
	Source string `json:"source"`
	// Destination is the absolute, clean path inside the container.
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"readOnly,omitempty"`
	// CreateSource makes a start create a missing Source as a directory,
	// as docker does for -v (and not for --mount).
	CreateSource bool `json:"createSource,omitempty"`
}

// Security is what docker run's --privileged, --cap-add, --cap-drop,
// --security-opt, --read-only, --pids-limit, --ulimit, --sysctl, --tmpfs and
// --oom-score-adj ask of a container, checked and normalized at create.
type Security struct {
	// CapAdd and CapDrop are capability names (CAP_...) or ALL.
	CapAdd  []string `json:"capAdd,omitempty"`
	CapDrop []string `json:"capDrop,omitempty"`
	// SecurityOpt is HostConfig.SecurityOpt as given, for inspect; a
	// seccomp profile is there as its JSON.
	SecurityOpt []string `json:"securityOpt,omitempty"`
	// Privileged is docker run --privileged: the container is confined by
	// its VM alone.
	Privileged      bool `json:"privileged,omitempty"`
	NoNewPrivileges bool `json:"noNewPrivileges,omitempty"`
	ReadOnlyRootfs  bool `json:"readOnlyRootfs,omitempty"`
	// PidsLimit caps the container's tasks; 0 or less is no limit.
	PidsLimit int64    `json:"pidsLimit,omitempty"`
	Ulimits   []Ulimit `json:"ulimits,omitempty"`
	// Sysctls are set in the container's namespaces (its VM's kernel).
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// Tmpfs maps a path in the container to its tmpfs mount options.
	Tmpfs       map[string]string `json:"tmpfs,omitempty"`
	OOMScoreAdj int               `json:"oomScoreAdj,omitempty"`
}

// Ulimit is one resource limit (docker run --ulimit NAME=SOFT[:HARD]).
type Ulimit struct {
	Name string `json:"name"` // as docker names it: nofile, nproc, core...
	Soft int64  `json:"soft"`
	Hard int64  `json:"hard"`
}

// State is what happened to the container.
type State struct {
	Status     Status    `json:"status"`
	StartedAt  time.Time `json:"startedAt,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitempty"`
	ExitCode   int       `json:"exitCode"`
	OOMKilled  bool      `json:"oomKilled"`
	// Error is why the last start failed, if it did.
	Error string `json:"error,omitempty"`
	// Driver and Accel say which hypervisor ran the last start.
	Driver string `json:"driver,omitempty"`
	Accel  string `json:"accel,omitempty"`
	// VMMPid is the VMM process of the running VM, OwnerPid the process that
	// started it (the CLI or the daemon): if both are gone, the container is
	// not running, whatever the record says.
	VMMPid   int `json:"vmmPid,omitempty"`
	OwnerPid int `json:"ownerPid,omitempty"`
	// Paused says the container's VM is frozen (docker pause): it still
	// runs (Status running), its vCPUs do not.
	Paused bool `json:"paused,omitempty"`
	// RestartCount counts the starts its restart policy made since the
	// last start by a user.
	RestartCount int `json:"restartCount,omitempty"`
	// ManuallyStopped says a user stopped (or killed) the container: its
	// restart policy leaves it stopped (unless-stopped also across daemon
	// restarts). A start by a user clears it.
	ManuallyStopped bool `json:"manuallyStopped,omitempty"`
	// Health is the health of the current run of a container with a
	// Healthcheck; nil otherwise.
	Health *Health `json:"health,omitempty"`
}

// Healthcheck is docker's: Test is ["CMD", args...] or ["CMD-SHELL",
// command]; zero durations and retries take docker's defaults.
type Healthcheck struct {
	Test        []string      `json:"test"`
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	StartPeriod time.Duration `json:"startPeriod,omitempty"`
	Retries     int           `json:"retries,omitempty"`
}

// Health states, as docker names them.
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Health is a run's health: its status, the failures in a row, and the
// last probes (at most five), as docker keeps them.
type Health struct {
	Status        string        `json:"status"`
	FailingStreak int           `json:"failingStreak"`
	Log           []HealthProbe `json:"log,omitempty"`
}

// HealthProbe is one probe's result.
type HealthProbe struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	ExitCode int       `json:"exitCode"`
	Output   string    `json:"output"`
}

// RestartPolicy is docker run --restart: "no" (or ""), "always",
// "unless-stopped" or "on-failure" with an optional limit of restarts.
type RestartPolicy struct {
	Name              string `json:"name,omitempty"`
	MaximumRetryCount int    `json:"maximumRetryCount,omitempty"`
}

// Container is one container record.
type Container struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Config  Config    `json:"config"`
	State   State     `json:"state"`
}

// ShortID is the 12-character form users see.
func (c *Container) ShortID() string { return c.ID[:12] }

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// ValidateName checks a user-chosen container name (Docker's rules).
func ValidateName(name string) error {
	if !validName.MatchString(name) {
		return errs.New(errdefs.ErrInvalidArgument, "invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name)
	}
	return nil
}

// CanStart reports whether a container in this state may be started.
func (s Status) CanStart() error {
	switch s {
	case StatusCreated, StatusExited:
		return nil
	case StatusRunning:
		return errs.New(errdefs.ErrConflict, "container is already running")
	}
	return errs.New(errdefs.ErrFailedPrecondition, "container is in unknown state %q", s)
}

// CanRemove reports whether a container in this state may be removed.
func (s Status) CanRemove(force bool) error {
	if s == StatusRunning && !force {
		return errs.New(errdefs.ErrConflict, "container is running: stop the container before removing or force remove")
	}
	return nil
}
