// Package control serves a VM's control API (api/vmm/v1) over ttrpc on a
// unix socket: start, pause, resume, stop, status and wait. It is the only
// hypervisor package that knows the wire types; it converts them to and
// from the machine's own.
//
// It does not build VMs or decide when the process exits (cmd/vmctl-vmm
// does).
package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vmmapi "github.com/vmctl/vmctl/api/vmm/v1"
	"github.com/vmctl/vmctl/hypervisor/devices"
	"github.com/vmctl/vmctl/hypervisor/machine"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

// VM is what the service drives (machine.Machine implements it).
type VM interface {
	Start() error
	Pause() error
	Resume() error
	Stop()
	Wait() vcpu.Result
	Done() <-chan struct{}
	State() vcpu.State
	BootEvents() []devices.BootEvent
}

// Info is the static description Status reports.
type Info struct {
	VCPUs     int
	MemoryMiB int
	Cmdline   string
}

// Saver is a VM that can be saved (machine.Machine implements it).
type Saver interface {
	Save(state io.Writer, mem *os.File) (machine.SaveStats, error)
}

// SaveFiles are where Save writes: files the VMM opened (empty) before it
// confined itself. Memory is nil when the guest's RAM is a shared file
// already (machine.Config.RAM); State may then be a pipe.
type SaveFiles struct {
	State, Memory *os.File
}

// Service implements vmmapi.TTRPCVMMService over a VM.
type Service struct {
	vm   VM
	info Info

	saveMu sync.Mutex
	saver  Saver
	files  *SaveFiles // nil once used
}

var _ vmmapi.TTRPCVMMService = (*Service)(nil)

// NewService returns the control service for vm.
func NewService(vm VM, info Info) *Service { return &Service{vm: vm, info: info} }

// EnableSave lets Save write vm into files, once.
func (s *Service) EnableSave(vm Saver, files SaveFiles) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.saver, s.files = vm, &files
}

func (s *Service) Save(ctx context.Context, _ *vmmapi.SaveRequest) (*vmmapi.SaveResponse, error) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.saver == nil {
		return nil, status.Error(codes.FailedPrecondition, "this VMM has no files to save into (vmctl-vmm -save-to DIR)")
	}
	if s.files == nil {
		return nil, status.Error(codes.FailedPrecondition, "the VM was saved already")
	}
	f := s.files
	st, err := s.saver.Save(f.State, f.Memory)
	if errors.Is(err, machine.ErrState) {
		return nil, toStatus(err)
	}
	if err != nil && s.vm.State() == vcpu.Running {
		// It failed before the devices stopped and the VM runs on: the
		// files are still unused.
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	s.files = nil
	if err == nil {
		if err = f.State.Sync(); errors.Is(err, syscall.EINVAL) {
			err = nil // a pipe: nothing to flush
		}
		// Closed: a reader at the other end of a pipe sees the end.
		if cerr := f.State.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &vmmapi.SaveResponse{StateBytes: int64(st.StateBytes), MemoryBytes: st.MemoryBytes, PausedNs: int64(st.Paused)}, nil
}

// toStatus classifies an error once, at the edge: lifecycle calls in the
// wrong state are FailedPrecondition, anything else Internal.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, machine.ErrState) || errors.Is(err, vcpu.ErrExited) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *Service) Start(ctx context.Context, _ *vmmapi.StartRequest) (*vmmapi.StartResponse, error) {
	return &vmmapi.StartResponse{}, toStatus(s.vm.Start())
}

func (s *Service) Pause(ctx context.Context, _ *vmmapi.PauseRequest) (*vmmapi.PauseResponse, error) {
	return &vmmapi.PauseResponse{}, toStatus(s.vm.Pause())
}

func (s *Service) Resume(ctx context.Context, _ *vmmapi.ResumeRequest) (*vmmapi.ResumeResponse, error) {
	return &vmmapi.ResumeResponse{}, toStatus(s.vm.Resume())
}

func (s *Service) Stop(ctx context.Context, _ *vmmapi.StopRequest) (*vmmapi.StopResponse, error) {
	s.vm.Stop()
	return &vmmapi.StopResponse{}, nil
}

func (s *Service) Status(ctx context.Context, _ *vmmapi.StatusRequest) (*vmmapi.StatusResponse, error) {
	st := s.vm.State()
	resp := &vmmapi.StatusResponse{
		State: stateToAPI(st), Pid: int32(os.Getpid()),
		Vcpus: int32(s.info.VCPUs), MemoryMib: int64(s.info.MemoryMiB), Cmdline: s.info.Cmdline,
	}
	if st == vcpu.Exited {
		select {
		case <-s.vm.Done():
			resp.Exit = exitToAPI(s.vm.Wait())
		default:
		}
	}
	for _, e := range s.vm.BootEvents() {
		resp.BootEvents = append(resp.BootEvents, &vmmapi.BootEvent{Value: e.Value, SinceStartNs: int64(e.Since)})
	}
	return resp, nil
}

func (s *Service) Wait(ctx context.Context, _ *vmmapi.WaitRequest) (*vmmapi.WaitResponse, error) {
	select {
	case <-s.vm.Done():
		return &vmmapi.WaitResponse{Exit: exitToAPI(s.vm.Wait())}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func stateToAPI(s vcpu.State) vmmapi.State {
	switch s {
	case vcpu.Created:
		return vmmapi.State_STATE_CREATED
	case vcpu.Running:
		return vmmapi.State_STATE_RUNNING
	case vcpu.Paused:
		return vmmapi.State_STATE_PAUSED
	case vcpu.Exited:
		return vmmapi.State_STATE_EXITED
	}
	return vmmapi.State_STATE_UNSPECIFIED
}

func exitToAPI(r vcpu.Result) *vmmapi.ExitStatus {
	return &vmmapi.ExitStatus{Reason: r.Reason.String(), ExitCode: int32(r.Reason.ExitCode()), Detail: r.Detail}
}

// Server is a listening control socket.
type Server struct {
	path string
	l    net.Listener
	srv  *ttrpc.Server
	errc chan error
}

// Listen binds a new unix socket at path for svc, reachable only by the
// same user; Serve starts answering on it. A stale socket file at path is
// replaced. Binding first lets a VMM make its socket before it confines
// itself (nothing is reachable by path from its jail) and answer only
// once confined.
func Listen(path string, svc *Service) (*Server, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use by another process", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	srv, err := ttrpc.NewServer(
		ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()),
		ttrpc.WithUnaryServerInterceptor(recoverInterceptor),
	)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("control server: %w", err)
	}
	vmmapi.RegisterTTRPCVMMService(srv, svc)
	return &Server{path: path, l: l, srv: srv, errc: make(chan error, 1)}, nil
}

// Serve starts answering calls in the background.
func (s *Server) Serve() {
	go func() { s.errc <- s.srv.Serve(context.Background(), s.l) }()
}

// recoverInterceptor turns a panic in a handler into an error for that
// call: ttrpc does not recover, and one bad request must not take the VM
// down.
func recoverInterceptor(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (resp interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(codes.Internal, "%s: internal error: %v", info.FullMethod, r)
		}
	}()
	return m(ctx, u)
}

// Shutdown stops accepting calls, lets calls in flight (a Wait answered
// because the VM exited) finish for up to grace, and removes the socket.
func (s *Server) Shutdown(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	os.Remove(s.path)
	return err
}

// Dial connects a client to the control socket at path.
func Dial(path string) (vmmapi.TTRPCVMMService, func() error, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to vmctl-vmm at %s: %w", path, err)
	}
	client := ttrpc.NewClient(c)
	return vmmapi.NewTTRPCVMMClient(client), client.Close, nil
}
