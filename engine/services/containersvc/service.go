// Package containersvc is the container service: it creates container
// records, runs each container in its own VM (sandbox driver + guest agent),
// carries its stdio, and records how it ended.
//
// It is the domain logic shared by the in-process CLI and the daemon; it
// has no transport code. Its collaborators are small interfaces so it can be
// wired to the real image store and drivers, or to fakes in tests.
package containersvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/errs"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/snapshot"
)

// ImageInfo is what the service needs to know of an image.
type ImageInfo struct {
	ID         string // "sha256:..."
	Name       string // the reference it was found by, familiar form
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	// StopSignal is the image's STOPSIGNAL; a create option overrides it.
	StopSignal string
	// Volumes are the image's VOLUME paths: each gets an anonymous volume
	// unless the container mounts one there.
	Volumes []string
	// ExposedPorts are the image's EXPOSE ports, "80/tcp" form (the image
	// config's keys), sorted.
	ExposedPorts []string
	// Healthcheck is the image's HEALTHCHECK, nil if it has none.
	Healthcheck *containers.Healthcheck
}

// ImageSource resolves image references and builds their read-only disks.
type ImageSource interface {
	// Resolve returns errdefs.ErrNotFound for an unknown reference.
	Resolve(ctx context.Context, ref string) (ImageInfo, error)
	// Disks returns the paths of the image's read-only disks, top first
	// and at most budget of them, building what is missing.
	Disks(ctx context.Context, imageID string, budget int) ([]string, error)
}

// Config wires a Service.
type Config struct {
	Store  *containers.Store
	Images ImageSource
	// LogLimits are the daemon's default log options (daemon.json
	// log-opts); nil: DefaultLogLimits.
	LogLimits *LogLimits
	// NewWritableDisk creates a container's empty read-write disk.
	NewWritableDisk func(path string, size int64) error
	// ChooseDriver chooses the hypervisor for a request ("auto", "kvm",
	// "qemu") on this host and checks that a VM can boot on it (guest
	// files, VMM binary). Create calls it, once; the container keeps the
	// choice. Its errors are one clear line.
	ChooseDriver func(name string) (sandbox.Choice, error)
	// OpenDriver returns the driver for a choice made earlier (recorded with
	// a container) without choosing again, or one clear line saying why it
	// cannot run on this host now.
	OpenDriver func(sandbox.Choice) (sandbox.Driver, error)
	// Kernel and Initrd are the guest kernel and the guest image.
	Kernel, Initrd string
	// ExecRoot holds per-VM runtime state (sockets); keep it short, unix
	// socket paths are limited to 108 bytes.
	ExecRoot string
	// BootTimeout bounds boot to agent-ready.
	BootTimeout time.Duration
	// WritableDiskSize is the size of each container's read-write disk.
	WritableDiskSize int64
	// Volumes holds named volumes; nil means containers cannot have any.
	Volumes VolumeService
	// Network plumbs each run's network; nil means every container has
	// only loopback.
	Network Network
	// Events receives the container events (create, start, die...); nil
	// reports none.
	Events events.Publisher
	// Snapshots, if set, keeps the saved VM states runs start from
	// instead of booting (package snapshot); nil: every run boots.
	Snapshots *snapshot.Store
	// RestartPolicies is set in a daemon, which applies the containers'
	// restart policies (restart.go); elsewhere a create with one is
	// refused.
	RestartPolicies bool
}

// Service runs containers.
type Service struct {
	cfg Config

	mu    sync.Mutex
	tasks map[string]*task // guarded by mu; one per running container
	// maint holds the containers whose VM runs for a maintenance boot
	// (maint.go); guarded by mu.
	maint map[string]bool
	// pending holds clients attached to a stopped container, for its next
	// start. Guarded by mu.
	pending map[string][]*Attachment
	// exits holds the exits this service saw, for waiters. Guarded by mu.
	exits map[string]*exitRecord
	// restarts holds the restart policies' back-offs and pending starts
	// (restart.go). Guarded by mu.
	restarts map[string]*restartState
	// changed is closed and replaced on every start, exit and removal, to
	// wake waiters. Guarded by mu.
	changed chan struct{}

	// newAgent wraps a VM's agent channel: agent.New, or a fake in tests.
	newAgent func(net.Conn) guestAgent
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 60 * time.Second
	}
	if cfg.WritableDiskSize == 0 {
		cfg.WritableDiskSize = 4 << 30
	}
	return &Service{
		cfg: cfg, tasks: map[string]*task{}, pending: map[string][]*Attachment{},
		exits: map[string]*exitRecord{}, restarts: map[string]*restartState{}, changed: make(chan struct{}),
		newAgent: func(conn net.Conn) guestAgent { return agent.New(conn) },
	}
}

// CreateOptions is what a user asks for at create (docker run's flags).
type CreateOptions struct {
	Image      string
	Name       string
	Cmd        []string // nil: the image's Cmd
	Entrypoint []string // nil: the image's Entrypoint
	Env        []string
	WorkingDir string
	User       string
	Hostname   string
	// Domainname is the container's NIS domain name and its /etc/hosts
	// entry's domain (docker run --domainname).
	Domainname string
	Tty        bool
	OpenStdin  bool
	// StdinOnce closes the container's stdin when the first attached
	// client's stdin ends (docker run -i).
	StdinOnce bool
	// StopSignal is the signal Stop sends first ("SIGTERM" when empty).
	StopSignal               string
	ConsoleRows, ConsoleCols uint16
	MemoryBytes              int64
	NanoCPUs                 int64
	Hypervisor               string
	AutoRemove               bool
	// RestartPolicy is docker run --restart (restart.go).
	RestartPolicy RestartPolicy
	// Volumes are mounted into the container; missing named volumes are
	// created (docker's behaviour).
	Volumes []VolumeMount
	Labels  map[string]string
	// Pause runs nothing of the image's: the container serves execs only
	// (a build's steps). Cmd and Entrypoint are not used.
	Pause bool
	// Security is the confinement and limit options (security.go).
	Security containers.Security
	// Init keeps an init as the container's PID 1 (docker run --init).
	Init bool
	// StopTimeout is --stop-timeout in seconds (nil: the default).
	StopTimeout *int
	// GroupAdd is --group-add: group names or numbers.
	GroupAdd []string
	// Healthcheck is --health-cmd and friends; nil: none.
	Healthcheck *containers.Healthcheck
	// LogOptions are --log-opt's (max-size, max-file), over the daemon's.
	LogOptions map[string]string

	// The network options (docker run --network, -p, -P, --dns...), checked
	// by the REST server against the API's rules; the network service
	// checks what only it can (addresses free and in the subnet).
	//
	// NetworkMode is HostConfig.NetworkMode as given, which inspect shows:
	// NetworkDefault or NetworkBridge (the default network), NetworkNone,
	// or a network's name or ID.
	NetworkMode string
	// Networks are the networks the container joins at create, by name,
	// with the options of its endpoint on each. NetworkMode's network is
	// one of them, the container's first (eth0, the default route and the
	// published ports); for NetworkDefault and NetworkBridge it is the
	// default network. Empty for NetworkNone.
	Networks map[string]EndpointOptions
	// PortBindings are the ports to publish (-p); HostPort 0 asks for one
	// chosen at start.
	PortBindings []PortBinding
	// PublishAll publishes every exposed port, the create's and the
	// image's, on a port chosen at start (-P).
	PublishAll bool
	// ExposedPorts are the create's exposed ports (--expose, and the
	// container ports of -p); the record holds them with the image's.
	ExposedPorts []Port
	// DNS servers, search domains and resolver options for the container's
	// resolv.conf; empty DNS means the network's own DNS server.
	DNS, DNSSearch, DNSOptions []string
	// ExtraHosts are "name:address" lines for /etc/hosts; the address
	// "host-gateway" stands for the first network's gateway.
	ExtraHosts []string
	// MacAddress is the MAC asked for the first network's interface
	// (Config.MacAddress of API 1.41, or that network's endpoint
	// settings), kept for inspect; it is also that network's
	// EndpointOptions.MAC.
	MacAddress string
}

// EndpointOptions are what a container asks of its endpoint on one network
// (NetworkingConfig.EndpointsConfig, docker run --ip, --network-alias).
type EndpointOptions struct {
	// IP is the address asked for; the zero Addr lets the network choose.
	IP netip.Addr
	// Aliases are extra DNS names of the container on this network.
	Aliases []string
	// MAC is the interface's address asked for; nil lets the engine
	// choose.
	MAC net.HardwareAddr
}

// checkLimits refuses, as dockerd does, a memory limit below its minimum
// and a number of CPUs out of range; 0 is no limit.
func checkLimits(memory, nanoCPUs int64) error {
	if memory != 0 && memory < minMemory {
		return errs.New(errdefs.ErrInvalidArgument, "minimum memory limit allowed is 6MB")
	}
	// The VM's RAM is the limit and some more (vmShape): more than the
	// host has could never start.
	if total := hostMemory(); memory > 0 && total > 0 && memory > total {
		return errs.New(errdefs.ErrInvalidArgument, "memory limit %s is more than this host's memory (%s)",
			units.BytesSize(float64(memory)), units.BytesSize(float64(total)))
	}
	if nanoCPUs < 0 || nanoCPUs > int64(maxVCPUs)*1e9 {
		return errs.New(errdefs.ErrInvalidArgument, "range of CPUs is from 0.01 to %d", maxVCPUs)
	}
	return nil
}

// minMemory is the smallest memory limit accepted (Docker's is 6 MiB).
const minMemory = 6 << 20

// hostMemory is the host's RAM in bytes (0 if unknown); replaced in tests.
var hostMemory = func() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// maxVCPUs bounds --cpus: more vCPUs than host CPUs only slows a guest down.
var maxVCPUs = 8

// Create validates the options, chooses the hypervisor, resolves the image,
// builds the image's disk and the OCI spec, and stores a new container
// with all of them and its writable disk: a start uses what Create
// recorded and does none of it again. On error nothing is left behind but
// the image disk, a cache entry.
func (s *Service) Create(ctx context.Context, o CreateOptions) (*containers.Container, error) {
	if o.Name != "" {
		if err := containers.ValidateName(o.Name); err != nil {
			return nil, err
		}
	}
	if err := checkLimits(o.MemoryBytes, o.NanoCPUs); err != nil {
		return nil, err
	}
	if err := checkSecurity(&o.Security); err != nil {
		return nil, err
	}
	for _, g := range o.GroupAdd {
		if g == "" || strings.ContainsAny(g, ",: \t\n\x00") {
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid --group-add %q: want a group name or number", g)
		}
	}
	logLimits, err := ParseLogOptions(o.LogOptions, s.defaultLogLimits())
	if err != nil {
		return nil, err
	}
	if o.Hypervisor == "" {
		o.Hypervisor = "auto"
	}
	if o.StopSignal != "" {
		if _, err := ParseSignal(o.StopSignal); err != nil {
			return nil, err
		}
	}
	if err := s.checkRestart(o.RestartPolicy, o.AutoRemove); err != nil {
		return nil, err
	}
	choice, err := s.cfg.ChooseDriver(o.Hypervisor)
	if err != nil {
		return nil, err
	}
	img, err := s.cfg.Images.Resolve(ctx, o.Image)
	if err != nil {
		return nil, err
	}
	hc, err := checkHealthcheck(mergeHealthcheck(o.Healthcheck, img.Healthcheck))
	if err != nil {
		return nil, err
	}
	entry := img.Entrypoint
	if o.Entrypoint != nil {
		entry = o.Entrypoint
	}
	imageCmd := img.Cmd
	if o.Entrypoint != nil {
		imageCmd = nil // Docker: a new entrypoint resets the image's Cmd
	}
	if o.Pause {
		// Never run: the init waits instead (see BuildSpec).
		entry, imageCmd, o.Cmd = nil, nil, []string{"vmctl-pause"}
	}
	args, err := ResolveArgs(entry, imageCmd, o.Cmd)
	if err != nil {
		return nil, err
	}
	id := containers.NewID()
	hostname := o.Hostname
	if hostname == "" {
		hostname = id[:12]
	}
	if err := validDomainname(o.Domainname); err != nil {
		return nil, err
	}
	env, err := MergeEnv(img.Env, o.Env, hostname, o.Tty)
	if err != nil {
		return nil, err
	}
	user := o.User
	if user == "" {
		user = img.User
	}
	workdir := o.WorkingDir
	if workdir == "" {
		workdir = img.WorkingDir
	}
	c := &containers.Container{
		ID:      id,
		Name:    o.Name,
		Created: time.Now().UTC(),
		Config: containers.Config{
			Image: o.Image, ImageID: img.ID, Args: args, Env: env, WorkingDir: workdir, User: user,
			Hostname: hostname, Domainname: o.Domainname, Tty: o.Tty, OpenStdin: o.OpenStdin, StdinOnce: o.StdinOnce,
			StopSignal: firstNonEmpty(o.StopSignal, img.StopSignal), ConsoleRows: o.ConsoleRows,
			ConsoleCols: o.ConsoleCols, MemoryBytes: o.MemoryBytes, NanoCPUs: o.NanoCPUs,
			Hypervisor: choice.Driver, Accel: choice.Accel, AutoRemove: o.AutoRemove, Labels: o.Labels,
			Pause: o.Pause, Init: o.Init, StopTimeout: o.StopTimeout, GroupAdd: o.GroupAdd, Healthcheck: hc, RestartPolicy: o.RestartPolicy, Security: o.Security,
			LogOptions: o.LogOptions, LogMaxSize: logLimits.MaxSize, LogMaxFiles: logLimits.MaxFiles,
		},
		State: containers.State{Status: containers.StatusCreated},
	}
	if c.Config.Network, err = networkConfig(o, img.ExposedPorts); err != nil {
		return nil, err
	}
	// Spec errors (user, workdir) fail the create, not a start.
	if c.Config.Spec, err = BuildSpec(c); err != nil {
		return nil, err
	}
	vols := WithAnonymousVolumes(o.Volumes, img.Volumes)
	if c.Config.ImageDisks, err = s.cfg.Images.Disks(ctx, img.ID, imageDiskBudget(volumeCount(vols))); err != nil {
		return nil, fmt.Errorf("image disk: %w", err)
	}
	if err := s.createRecord(ctx, c, vols); err != nil {
		return nil, err
	}
	if err := s.cfg.NewWritableDisk(s.writableDisk(c.ID), s.cfg.WritableDiskSize); err != nil {
		s.cfg.Store.Delete(c.ID)
		s.removeAnonymousVolumes(c)
		return nil, fmt.Errorf("create writable disk: %w", err)
	}
	// An engine without networking (Config.Network nil: tests) runs
	// every container on loopback alone.
	if joins := networkJoins(o, c.Config.Network.Mode); len(joins) > 0 && s.cfg.Network != nil {
		if err := s.cfg.Network.Join(ctx, c, joins); err != nil {
			s.cfg.Store.Delete(c.ID)
			s.removeAnonymousVolumes(c)
			return nil, err
		}
	}
	s.publish("create", c, nil)
	return c, nil
}

func (s *Service) writableDisk(id string) string {
	return filepath.Join(s.cfg.Store.Dir(id), "rw.ext4")
}

// ConsoleLog is the path of the guest console log of the container's last start.
func (s *Service) ConsoleLog(id string) string {
	return filepath.Join(s.cfg.Store.Dir(id), "console.log")
}

// Get returns a container by ID, ID prefix or name.
func (s *Service) Get(ref string) (*containers.Container, error) { return s.cfg.Store.Get(ref) }

// List returns all containers, newest first. A record that says running
// but whose owner and VM are both gone (the exit was never recorded) is
// reported as exited.
func (s *Service) List() ([]*containers.Container, error) {
	all, err := s.cfg.Store.List()
	if err != nil {
		return nil, err
	}
	for _, c := range all {
		s.reconcile(c)
	}
	return all, nil
}

func (s *Service) reconcile(c *containers.Container) {
	if c.State.Status != containers.StatusRunning {
		return
	}
	s.mu.Lock()
	_, ours := s.tasks[c.ID]
	s.mu.Unlock()
	// A VM that outlived its owner (a crashed daemon's, with DetachVMs)
	// still runs the container: the next daemon re-adopts it (Readopt).
	if ours || processAlive(c.State.OwnerPid) || s.vmmAlive(c) {
		return
	}
	c.State.Status = containers.StatusExited
	c.State.ExitCode = 255
	c.State.Error = "the process that ran the container ended without recording its exit"
	if c.State.FinishedAt.IsZero() {
		c.State.FinishedAt = time.Now().UTC()
	}
	if s.cfg.Store.Update(c) == nil {
		s.publishExit(c, ExitStatus{Code: c.State.ExitCode, Error: c.State.Error})
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A process that died and was not reaped yet (a daemon killed a moment
	// ago) is a zombie: signal 0 reaches it, but it owns nothing any more.
	return !isZombie(pid)
}

// isZombie reports whether pid's state in /proc/PID/stat is Z (or X).
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The command name is in parentheses and may hold spaces or ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// RemoveOptions are docker rm's flags.
type RemoveOptions struct {
	// Force kills a running container first.
	Force bool
	// Volumes removes the container's anonymous volumes too (docker rm -v);
	// a --rm container's go with it in any case, named volumes never.
	Volumes bool
}

// Remove deletes a container and its writable disk.
func (s *Service) Remove(ctx context.Context, ref string, opts RemoveOptions) error {
	force := opts.Force
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	s.reconcile(c)
	s.cancelRestart(c.ID)
	if err := c.State.Status.CanRemove(force); err != nil {
		// dockerd's words, which scripts match.
		return fmt.Errorf("cannot remove container %q: %w", "/"+c.Name, err)
	}
	s.mu.Lock()
	busy := s.maint[c.ID]
	s.mu.Unlock()
	if busy {
		return errs.New(errdefs.ErrConflict, "cannot remove container %s: its files are being read or written (a commit, diff, export or cp)", c.Name)
	}
	if t := s.task(c.ID); t != nil {
		// Kill the process first, as docker rm -f does, so the exit is an
		// ordinary 137 rather than a lost VM; end the VM if that fails.
		rctx, cancel := context.WithTimeout(ctx, killGrace)
		resumed := s.resume(rctx, t) == nil
		cancel()
		if resumed && t.signalWithin(ctx, syscall.SIGKILL) == nil {
			s.publishKill(c, syscall.SIGKILL)
			select {
			case <-t.done:
			case <-time.After(killGrace):
			}
		}
		t.destroy()
		<-t.done
	}
	// Addresses go first: a release that fails leaves the container, to
	// be removed again, rather than addresses nobody owns.
	if s.cfg.Network != nil {
		if err := s.cfg.Network.Release(ctx, c.ID); err != nil {
			return fmt.Errorf("cannot remove container %s: releasing its network endpoints: %w", c.Name, err)
		}
	}
	if err := s.cfg.Store.Delete(c.ID); err != nil {
		return err
	}
	if opts.Volumes {
		s.removeAnonymousVolumes(c)
	} else {
		s.dropAnonymousVolumes(c)
	}
	s.mu.Lock()
	s.forgetLocked(c.ID)
	s.mu.Unlock()
	s.notify()
	s.publish("destroy", c, nil)
	return nil
}

// autoRemove removes the record of a --rm container whose run is over,
// with its network endpoints and its anonymous volumes' references, and
// reports whether it did. A release that fails keeps the record (exited),
// as a failed remove does, so that the addresses have an owner to remove.
func (s *Service) autoRemove(c *containers.Container) bool {
	if s.cfg.Network != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.cfg.Network.Release(ctx, c.ID); err != nil {
			log.Printf("container %s: --rm: releasing its network endpoints: %v (remove it again)", c.Name, err)
			return false
		}
	}
	if err := s.cfg.Store.Delete(c.ID); err != nil {
		log.Printf("container %s: --rm: %v", c.Name, err)
		return false
	}
	s.dropAnonymousVolumes(c)
	return true
}

// forgetLocked releases what the service keeps for a removed container.
// Precondition: s.mu is held.
func (s *Service) forgetLocked(id string) {
	for _, a := range s.pending[id] {
		a.finish()
	}
	delete(s.pending, id)
	if r := s.exits[id]; r != nil {
		r.removed = true
	}
	// Waiters keep their own pointer to the record.
	delete(s.exits, id)
}

// notify wakes every waiter to re-check its condition.
func (s *Service) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Service) task(id string) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[id]
}

// Kill sends a signal to the container's main process.
func (s *Service) Kill(ctx context.Context, ref string, sig syscall.Signal) error {
	t, err := s.running(ref)
	if err != nil {
		return err
	}
	if sig == syscall.SIGKILL {
		// Killed by a user: its restart policy leaves it stopped.
		t.manualStop.Store(true)
		s.cancelRestart(t.c.ID)
	}
	// A frozen guest cannot take the signal: it runs again, as dockerd
	// lets a paused container take a kill. A guest that stopped answering
	// must not hold the call forever: a SIGKILL then ends its VM.
	rctx, cancel := context.WithTimeout(ctx, killGrace)
	err = s.resume(rctx, t)
	cancel()
	if err != nil {
		if sig != syscall.SIGKILL || ctx.Err() != nil {
			return err
		}
		t.destroy()
		<-t.done
		return nil
	}
	err = t.signalWithin(ctx, sig)
	if sig != syscall.SIGKILL {
		if err != nil {
			return err
		}
		s.publishKill(t.c, sig)
		return nil
	}
	// As dockerd does, a SIGKILL returns once the container is down, so
	// a remove right after it finds it stopped; a guest that does not
	// answer (or let the signal through) has its VM ended.
	if err == nil {
		s.publishKill(t.c, sig)
	}
	return t.awaitKill(ctx)
}

// Resize sets the container's terminal size.
func (s *Service) Resize(ctx context.Context, ref string, rows, cols uint16) error {
	t, err := s.running(ref)
	if err != nil {
		return err
	}
	return t.resize(ctx, rows, cols)
}

func (s *Service) running(ref string) (*task, error) {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return nil, err
	}
	t := s.task(c.ID)
	if t == nil {
		return nil, errs.New(errdefs.ErrConflict, "container %s is not running", c.Name)
	}
	return t, nil
}

// vmShape sizes the VM for a container: a vCPU per (started) CPU of the
// limit, and guest RAM = the memory limit plus room for the guest kernel and
// agent, so the limit, not the VM, is what the container hits.
func vmShape(cfg containers.Config) (vcpus, memMiB int) {
	vcpus = 1
	if cfg.NanoCPUs > 0 {
		vcpus = int(math.Ceil(float64(cfg.NanoCPUs) / 1e9))
	}
	memMiB = 256
	if cfg.MemoryBytes > 0 {
		memMiB = int(cfg.MemoryBytes>>20) + 128
	}
	return vcpus, memMiB
}

// shortLine returns the last non-empty line of a file, for error messages
// that point at the guest console.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// validDomainname checks docker run --domainname: what sethostname and
// setdomainname take (at most 64 bytes) and a host name may hold.
func validDomainname(d string) error {
	if len(d) > 64 {
		return errs.New(errdefs.ErrInvalidArgument, "invalid domainname %q: longer than 64 characters", d)
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return errs.New(errdefs.ErrInvalidArgument, "invalid domainname %q: only letters, digits, '-' and '.'", d)
		}
	}
	return nil
}
