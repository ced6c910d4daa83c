// Package service implements the agent's ttrpc service (api/agent/v1) on top
// of the container runtime, the storage manager, the network configuration
// and the container's /etc files: it decodes and checks requests, calls
// them, and turns errors into status codes.
//
// It does not listen on anything (see transport) and does not do PID-1
// duties (see pid1); ending the VM is a function it is given.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/container"
	"github.com/vmctl/vmctl/guest-agent/etcfiles"
	"github.com/vmctl/vmctl/guest-agent/metrics"
	"github.com/vmctl/vmctl/guest-agent/netconf"
	"github.com/vmctl/vmctl/guest-agent/restored"
	"github.com/vmctl/vmctl/guest-agent/storage"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// Version is the agent's version, set at build time with
// -ldflags "-X github.com/vmctl/vmctl/guest-agent/service.Version=...".
var Version = "dev"

// Config wires a Service.
type Config struct {
	Runtime *container.Runtime
	Storage *storage.Manager
	// Etc holds the containers' /etc files from the host.
	Etc etcfiles.Dir
	// ConfigureNetwork applies a checked network request in the guest's
	// root network namespace. Nil means netconf.Configure.
	ConfigureNetwork func(netconf.Request) error
	// Restored brings a guest restored from a saved state up to date.
	// Nil means restored.Env{}.Apply.
	Restored func(restored.Request) error
	// Transport names the channel this service answers on, for Health:
	// contract.TransportVsock or contract.TransportSerial.
	Transport string
	// PowerOff ends the VM. Shutdown calls it after its reply was sent.
	// Nil means Shutdown only cleans up (tests).
	PowerOff func()
	// Logf reports errors nobody else would see. Nil discards them.
	Logf func(format string, args ...any)
}

// Service implements agent.TTRPCAgentService.
type Service struct {
	cfg Config
	// lifecycle serializes create and remove, so two requests for one ID
	// cannot interleave their mounts.
	lifecycle sync.Mutex
	// network serializes ConfigureNetwork: two requests must not
	// interleave their changes (or undo each other's).
	network  sync.Mutex
	shutdown sync.Once
	exports  exports
}

var _ agent.TTRPCAgentService = (*Service)(nil)

// New returns a service.
func New(cfg Config) *Service {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.ConfigureNetwork == nil {
		cfg.ConfigureNetwork = netconf.Configure
	}
	if cfg.Restored == nil {
		cfg.Restored = restored.Env{}.Apply
	}
	return &Service{cfg: cfg}
}

// NewServer returns a ttrpc server with the service registered and panics
// in handlers turned into errors: the agent is PID 1, and a panic that
// reached the runtime would end the VM with a kernel panic.
func NewServer(svc *Service) (*ttrpc.Server, error) {
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(svc.recoverInterceptor))
	if err != nil {
		return nil, err
	}
	agent.RegisterTTRPCAgentService(srv, svc)
	return srv, nil
}

func (s *Service) recoverInterceptor(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.cfg.Logf("panic in %s: %v\n%s", info.FullMethod, r, debug.Stack())
			resp, err = nil, status.Errorf(codes.Internal, "agent error in %s: %v", info.FullMethod, r)
		}
	}()
	return method(ctx, unmarshal)
}

// toStatus converts an error to a status error with a one-line message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, container.ErrNotFound), errors.Is(err, storage.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, container.ErrPermission):
		code = codes.PermissionDenied
	case errors.Is(err, container.ErrInvalid), errors.Is(err, storage.ErrInvalid),
		errors.Is(err, netconf.ErrInvalid), errors.Is(err, etcfiles.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, container.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, container.ErrState):
		code = codes.FailedPrecondition
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, strings.ReplaceAll(err.Error(), "\n", "; "))
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// Health reports the agent's version, kernel and transport.
func (s *Service) Health(ctx context.Context, _ *agent.HealthRequest) (*agent.HealthResponse, error) {
	trace.Step("health: request")
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, toStatus(fmt.Errorf("uname: %w", err))
	}
	return &agent.HealthResponse{
		AgentVersion:  Version,
		KernelRelease: unix.ByteSliceToString(u.Release[:]),
		Transport:     s.cfg.Transport,
	}, nil
}

// Restored brings a guest started from a saved state up to date (package
// restored): entropy, clock, disks and NICs probed afresh, NIC addresses.
// The request is checked whole before anything changes.
func (s *Service) Restored(ctx context.Context, req *agent.RestoredRequest) (*agent.Empty, error) {
	trace.Step("restored: request")
	if req.GetUnixNanos() <= 0 {
		return nil, invalid("restored: no time given")
	}
	r := restored.Request{Seed: req.GetSeed(), Now: time.Unix(0, req.GetUnixNanos()), MACs: map[string]net.HardwareAddr{}}
	for _, m := range req.GetMacs() {
		to, err := net.ParseMAC(m.GetTo())
		if err != nil {
			return nil, invalid("restored: address %q: %v", m.GetTo(), err)
		}
		if _, dup := r.MACs[m.GetFrom()]; dup {
			return nil, invalid("restored: template address %q given twice", m.GetFrom())
		}
		r.MACs[m.GetFrom()] = to
	}
	if err := restored.Check(r); err != nil {
		return nil, invalid("restored: %v", err)
	}
	// Nothing else may touch the disks or NICs meanwhile.
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.network.Lock()
	defer s.network.Unlock()
	if err := s.cfg.Restored(r); err != nil {
		return nil, toStatus(fmt.Errorf("restored: %w", err))
	}
	trace.Step("restored: done")
	return &agent.Empty{}, nil
}

// ConfigureNetwork configures the guest's interfaces and routes (see
// netconf): the whole request is checked before anything changes, and a
// request the kernel refuses partway is undone.
func (s *Service) ConfigureNetwork(ctx context.Context, req *agent.ConfigureNetworkRequest) (*agent.Empty, error) {
	trace.Step("network: request")
	r := netconf.Request{}
	for _, in := range req.GetInterfaces() {
		r.Interfaces = append(r.Interfaces, netconf.Interface{
			MAC: in.GetMac(), Name: in.GetName(), Addresses: in.GetAddresses(), MTU: in.GetMtu(),
		})
	}
	for _, rt := range req.GetRoutes() {
		r.Routes = append(r.Routes, netconf.Route{Destination: rt.GetDestination(), Gateway: rt.GetGateway(), Device: rt.GetDevice()})
	}
	if err := netconf.Check(r); err != nil {
		return nil, toStatus(err)
	}
	s.network.Lock()
	defer s.network.Unlock()
	if err := s.cfg.ConfigureNetwork(r); err != nil {
		return nil, toStatus(err)
	}
	trace.Step("network: configured")
	return &agent.Empty{}, nil
}

// CreateContainer mounts the storages, builds the rootfs and creates the
// container.
func (s *Service) CreateContainer(ctx context.Context, req *agent.CreateContainerRequest) (*agent.Empty, error) {
	trace.Step("create: request")
	id := req.GetContainerId()
	if err := container.ValidID(id); err != nil {
		return nil, toStatus(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(req.GetOciSpec(), &spec); err != nil {
		return nil, invalid("oci_spec is not a valid OCI runtime spec: %v", err)
	}
	disks := make([]storage.Disk, 0, len(req.GetStorages()))
	for _, st := range req.GetStorages() {
		disks = append(disks, storage.Disk{
			Serial: st.GetSerial(), FSType: st.GetFstype(), Options: st.GetOptions(),
			ReadOnly: st.GetReadonly(), Role: st.GetRole(), MountPoint: st.GetMountPoint(), Subdir: st.GetSubdir(),
		})
	}
	if err := storage.Validate(disks); err != nil {
		return nil, toStatus(err)
	}
	files := etcfiles.Files{Hosts: req.GetHosts(), ResolvConf: req.GetResolvConf(), Hostname: req.GetHostnameFile()}
	if err := files.Check(); err != nil {
		return nil, toStatus(err)
	}
	if req.GetShareGuestNetwork() {
		container.JoinGuestNetwork(&spec)
	}
	// Volumes and the /etc files are bind mounts of what is mounted or
	// written beside the rootfs; the runtime resolves their destinations
	// inside the rootfs. The spec is checked once, with them, before
	// anything is mounted.
	spec.Mounts = append(spec.Mounts, s.cfg.Storage.Binds(id, disks)...)
	spec.Mounts = append(spec.Mounts, s.cfg.Etc.Mounts(id, files, spec.Mounts)...)
	valid, err := container.ValidateSpec(&spec)
	if err != nil {
		return nil, toStatus(err)
	}

	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if _, err := s.cfg.Runtime.Get(id); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "container %q already exists", id)
	}
	trace.Step("create: spec decoded and checked")
	rootfs, err := s.cfg.Storage.Mount(id, disks)
	if err != nil {
		return nil, toStatus(err)
	}
	trace.Step("create: rootfs mounted")
	err = s.cfg.Etc.Write(id, files)
	if err == nil {
		err = s.cfg.Runtime.Create(ctx, id, valid, rootfs)
	}
	if err != nil {
		if uerr := errors.Join(s.cfg.Storage.Unmount(id), s.cfg.Etc.Remove(id)); uerr != nil {
			s.cfg.Logf("create %s: cleanup: %v", id, uerr)
		}
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// StartContainer lets the init exec the user's command.
func (s *Service) StartContainer(ctx context.Context, req *agent.ContainerRequest) (*agent.Empty, error) {
	trace.Step("start: request")
	if err := s.cfg.Runtime.Start(ctx, req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	trace.Step("start: user command exec'd")
	return &agent.Empty{}, nil
}

// pauseTimeout bounds the wait for a container's processes to freeze.
const pauseTimeout = 10 * time.Second

// PauseContainer freezes the container's processes.
func (s *Service) PauseContainer(ctx context.Context, req *agent.ContainerRequest) (*agent.Empty, error) {
	return s.freeze(ctx, req.GetContainerId(), true)
}

// ResumeContainer thaws a paused container.
func (s *Service) ResumeContainer(ctx context.Context, req *agent.ContainerRequest) (*agent.Empty, error) {
	return s.freeze(ctx, req.GetContainerId(), false)
}

func (s *Service) freeze(ctx context.Context, id string, on bool) (*agent.Empty, error) {
	if err := container.ValidID(id); err != nil {
		return nil, toStatus(err)
	}
	ctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	var err error
	if on {
		err = s.cfg.Runtime.Pause(ctx, id)
	} else {
		err = s.cfg.Runtime.Resume(ctx, id)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// removeTimeout bounds the wait for a killed container's processes.
const removeTimeout = 30 * time.Second

// RemoveContainer kills the container and unmounts its storage.
func (s *Service) RemoveContainer(ctx context.Context, req *agent.ContainerRequest) (*agent.Empty, error) {
	id := req.GetContainerId()
	if err := container.ValidID(id); err != nil {
		return nil, toStatus(err)
	}
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if err := s.remove(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// remove needs s.lifecycle held.
func (s *Service) remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, removeTimeout)
	defer cancel()
	if err := s.cfg.Runtime.Remove(ctx, id); err != nil {
		return err
	}
	trace.Step("remove: processes gone, cgroup removed")
	s.exports.mu.Lock()
	delete(s.exports.snaps, id)
	s.exports.mu.Unlock()
	err := s.cfg.Storage.Unmount(id)
	trace.Step("remove: rootfs and disks unmounted")
	return errors.Join(err, s.cfg.Etc.Remove(id))
}

// ExecProcess starts an extra process in a running container.
func (s *Service) ExecProcess(ctx context.Context, req *agent.ExecProcessRequest) (*agent.Empty, error) {
	if req.GetExecId() == "" {
		return nil, invalid("exec_id is required")
	}
	var p specs.Process
	if err := json.Unmarshal(req.GetOciProcess(), &p); err != nil {
		return nil, invalid("oci_process is not a valid OCI process: %v", err)
	}
	if err := s.cfg.Runtime.Exec(ctx, req.GetContainerId(), req.GetExecId(), &p); err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

func (s *Service) process(containerID, execID string) (*container.Process, error) {
	p, err := s.cfg.Runtime.Process(containerID, execID)
	if err != nil {
		return nil, toStatus(err)
	}
	return p, nil
}

// WaitProcess blocks until the process exits.
func (s *Service) WaitProcess(ctx context.Context, req *agent.ProcessRequest) (*agent.WaitProcessResponse, error) {
	p, err := s.process(req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	e, err := p.Wait(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agent.WaitProcessResponse{ExitStatus: int32(e.Status), OomKilled: e.OOMKilled}, nil
}

// SignalProcess delivers a signal.
func (s *Service) SignalProcess(ctx context.Context, req *agent.SignalProcessRequest) (*agent.Empty, error) {
	if req.GetSignal() == 0 || req.GetSignal() > 64 {
		return nil, invalid("signal %d is out of range 1..64", req.GetSignal())
	}
	p, err := s.process(req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := p.Signal(syscall.Signal(req.GetSignal())); err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// WriteStdin writes to the process's input.
func (s *Service) WriteStdin(ctx context.Context, req *agent.WriteStdinRequest) (*agent.WriteStdinResponse, error) {
	p, err := s.process(req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	n, err := p.Write(req.GetData())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agent.WriteStdinResponse{Len: uint32(n)}, nil
}

// CloseStdin ends the process's input.
func (s *Service) CloseStdin(ctx context.Context, req *agent.ProcessRequest) (*agent.Empty, error) {
	p, err := s.process(req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := p.CloseStdin(); err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

func (s *Service) read(req *agent.ReadOutputRequest, which container.Stream) (*agent.ReadOutputResponse, error) {
	p, err := s.process(req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	data, at, eof, err := p.Read(which, int(min(req.GetMaxLen(), container.MaxRead)), req.GetOffset())
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetExecId() == "" && trace.Enabled() {
		if at == 0 && len(data) > 0 {
			trace.Step("read: first output")
		}
		if eof && which == container.Stdout {
			// The init's output has ended: every step of its start is
			// recorded by now.
			s.logTrace()
		}
	}
	return &agent.ReadOutputResponse{Data: data, Eof: eof, Offset: at}, nil
}

// ReadStdout returns the next chunk of stdout (all output on a terminal).
func (s *Service) ReadStdout(ctx context.Context, req *agent.ReadOutputRequest) (*agent.ReadOutputResponse, error) {
	return s.read(req, container.Stdout)
}

// ReadStderr returns the next chunk of stderr.
func (s *Service) ReadStderr(ctx context.Context, req *agent.ReadOutputRequest) (*agent.ReadOutputResponse, error) {
	return s.read(req, container.Stderr)
}

// logTrace prints the steps recorded so far (see trace).
func (s *Service) logTrace() {
	if t := trace.Table(trace.Take()); t != "" {
		for _, line := range strings.Split(strings.TrimSuffix(t, "\n"), "\n") {
			s.cfg.Logf("%s", line)
		}
	}
}

// ResizeTty sets the terminal size.
func (s *Service) ResizeTty(ctx context.Context, req *agent.ResizeTtyRequest) (*agent.Empty, error) {
	p, err := s.process(req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := p.Resize(req.GetRows(), req.GetCols()); err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// powerOffDelay lets the Shutdown reply reach the host before the VM ends.
const powerOffDelay = 100 * time.Millisecond

// Shutdown removes every container, syncs, and then ends the VM.
func (s *Service) Shutdown(ctx context.Context, _ *agent.ShutdownRequest) (*agent.Empty, error) {
	trace.Step("shutdown: request")
	s.lifecycle.Lock()
	var errs []error
	for _, id := range s.cfg.Runtime.IDs() {
		if err := s.remove(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	s.lifecycle.Unlock()
	trace.Step("shutdown: containers removed")
	unix.Sync()
	trace.Step("shutdown: synced")
	s.logTrace()
	if err := errors.Join(errs...); err != nil {
		// The VM ends anyway; the host learns what could not be cleaned.
		s.cfg.Logf("shutdown: %v", err)
	}
	if s.cfg.PowerOff != nil {
		s.shutdown.Do(func() {
			go func() {
				time.Sleep(powerOffDelay)
				s.cfg.PowerOff()
			}()
		})
	}
	return &agent.Empty{}, nil
}

// ListProcesses lists the container's processes (see metrics.Processes).
func (s *Service) ListProcesses(ctx context.Context, req *agent.ContainerRequest) (*agent.ListProcessesResponse, error) {
	src, err := s.metricsSource(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp, err := metrics.Processes(src)
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// Stats reads the container's resource statistics (see metrics.Stats).
func (s *Service) Stats(ctx context.Context, req *agent.ContainerRequest) (*agent.StatsResponse, error) {
	src, err := s.metricsSource(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp, err := metrics.Stats(src)
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

func (s *Service) metricsSource(id string) (metrics.Source, error) {
	if err := container.ValidID(id); err != nil {
		return metrics.Source{}, toStatus(err)
	}
	c, err := s.cfg.Runtime.Get(id)
	if err != nil {
		return metrics.Source{}, toStatus(err)
	}
	return metrics.Source{Cgroup: c.CgroupDir(), InitPid: c.InitPid()}, nil
}
