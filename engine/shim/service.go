package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// Service is the task service of one shim: one VM, and its task with the
// task's execs, or a pod: its sandbox and its containers.
type Service struct {
	cfg       Config
	namespace string
	// events reaches containerd.
	events Publisher
	// shutdown ends the shim process (the library's shutdown service).
	shutdown func()
	// ctx lives as long as the shim; it ends every pump and agent call.
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	containers map[string]*container // guarded by mu
	creating   map[string]bool       // guarded by mu: IDs whose Create runs
	// vm is the running VM; nil before the first Create, and once its task
	// (or pod) has ended.
	vm *vm // guarded by mu
	// pod is set when the VM is a pod's: its sandbox created it.
	pod *pod // guarded by mu
}

// container is a task: its bundle, spec, init and execs.
type container struct {
	id, bundle string
	kind       kind
	spec       *specs.Spec
	rootfs     string // where the rootfs is mounted; "" if the bundle brought its own
	// inPod is where a pod member's rootfs is bound in the pod's shared
	// directory, volumes where its host directories are.
	inPod   string
	volumes []string
	init    *process
	execs   map[string]*process
	paused  bool
}

var _ taskapi.TTRPCTaskService = (*Service)(nil)

// Publisher sends events to containerd.
type Publisher interface {
	Publish(ctx context.Context, topic string, event proto.Message) error
}

// NewService returns the task service of a shim serving namespace.
func NewService(ctx context.Context, cfg Config, namespace string, publisher Publisher, shutdown func()) *Service {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &Service{cfg: cfg, namespace: namespace, events: publisher, shutdown: shutdown, ctx: ctx, cancel: cancel,
		containers: map[string]*container{}, creating: map[string]bool{}}
}

// RegisterTTRPC serves the task API on server.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskapi.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *Service) publish(topic string, ev proto.Message) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	_ = s.events.Publish(ctx, topic, ev) // containerd gone: nothing to tell
}

// wire converts an error for containerd: errdefs classes become gRPC codes.
func wire(err error) error { return errgrpc.ToGRPC(err) }

// lookup returns the container and the process execID of id.
func (s *Service) lookup(id, execID string) (*container, *process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.containers[id]
	if c == nil {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p := c.execs[execID]
	if p == nil {
		return nil, nil, fmt.Errorf("exec %s in container %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// runningAgent returns the agent of the running VM.
func (s *Service) runningAgent() (*agent.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vm == nil {
		return nil, fmt.Errorf("the container's VM has ended: %w", errdefs.ErrFailedPrecondition)
	}
	return s.vm.agent, nil
}

// Create mounts the rootfs, boots the VM and creates the container in it,
// stopped before its command runs.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (_ *taskapi.CreateTaskResponse, err error) {
	if err := s.checkCreate(r); err != nil {
		return nil, wire(err)
	}
	opts, err := parseOptions(r.Options)
	if err != nil {
		return nil, wire(err)
	}
	cfg := s.cfg
	if opts.Hypervisor != "" {
		cfg.Hypervisor = opts.Hypervisor
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, wire(err)
	}
	if spec.Process != nil && spec.Process.Terminal != r.Terminal {
		return nil, wire(fmt.Errorf("%w: the spec's process.terminal (%v) and the request's (%v) differ", errdefs.ErrInvalidArgument, spec.Process.Terminal, r.Terminal))
	}
	if err := checkResources(spec); err != nil {
		return nil, wire(err)
	}
	k := taskKind(spec)
	if err := s.reserve(r.ID, k, spec); err != nil {
		return nil, wire(err)
	}
	defer s.unreserve(r.ID)
	c := &container{id: r.ID, bundle: r.Bundle, kind: k, spec: spec, execs: map[string]*process{}}
	var v *vm
	switch k {
	case kindSandbox:
		v, err = s.createSandbox(ctx, cfg, c)
	case kindMember:
		v, err = s.createMember(ctx, c, r)
	default:
		v, err = s.createTask(ctx, cfg, c, r)
	}
	if err != nil {
		return nil, wire(err)
	}
	c.init = newProcess(r.ID, "", stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}, uint32(v.sb.Pid()))
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()

	s.publish(topicCreate, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid: c.init.pid,
	})
	return &taskapi.CreateTaskResponse{Pid: c.init.pid}, nil
}

// reserve claims id for a Create: a task or a pod's sandbox has the VM to
// itself; a pod's container needs its pod's VM.
func (s *Service) reserve(id string, k kind, spec *specs.Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.containers[id] != nil || s.creating[id] {
		return fmt.Errorf("%w: task %s", errdefs.ErrAlreadyExists, id)
	}
	switch k {
	case kindMember:
		if s.pod == nil || s.pod.id != spec.Annotations[annoSandboxID] {
			return fmt.Errorf("%w: container %s belongs to pod %s, whose VM this shim does not run", errdefs.ErrFailedPrecondition, id, spec.Annotations[annoSandboxID])
		}
	default:
		if s.vm != nil || len(s.containers) > 0 || len(s.creating) > 0 {
			return fmt.Errorf("%w: this shim's VM runs another task: one task (or pod) per VM", errdefs.ErrAlreadyExists)
		}
	}
	s.creating[id] = true
	return nil
}

func (s *Service) unreserve(id string) {
	s.mu.Lock()
	delete(s.creating, id)
	s.mu.Unlock()
}

// createTask boots a VM for a task of its own, with its rootfs and host
// directories shared, and creates the container in it.
func (s *Service) createTask(ctx context.Context, cfg Config, c *container, r *taskapi.CreateTaskRequest) (_ *vm, err error) {
	spec := c.spec
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	binds, bindStorages, err := hostBinds(spec)
	if err != nil {
		return nil, err
	}
	rootfs, mounted, err := mountRootfs(r.Bundle, spec, r.Rootfs)
	if err != nil {
		return nil, err
	}
	if mounted {
		c.rootfs = rootfs
	}
	defer func() {
		if err != nil && mounted {
			unmountRootfs(rootfs)
		}
	}()
	choice, err := sandbox.Choose(cfg.Hypervisor)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	v, err := cfg.bootVM(ctx, choice, s.namespace, r.ID, r.Bundle, spec, vmDevices{
		shares: append([]sandbox.Share{{Path: rootfs, Tag: contract.RootfsShareTag, ReadOnly: spec.Root != nil && spec.Root.Readonly}}, binds...)})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			v.destroy()
		}
	}()
	network := agent.ContainerNetwork{ShareGuestNetwork: !hasNamespace(spec, specs.NetworkNamespace)}
	readOnly := spec.Root != nil && spec.Root.Readonly
	storages := append([]agent.Storage{v.rootfsStorage(readOnly, "")}, bindStorages(v.shareFS)...)
	if err := v.agent.CreateContainer(ctx, r.ID, spec, storages, network); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.vm = v
	s.mu.Unlock()
	return v, nil
}

// createSandbox boots a pod's VM, sharing the pod's directory that will
// hold its containers' rootfs. The sandbox (CRI's pause container) runs
// nothing in it: the VM is what holds the pod together.
func (s *Service) createSandbox(ctx context.Context, cfg Config, c *container) (_ *vm, err error) {
	if err := sandboxSpecOK(c.spec); err != nil {
		return nil, err
	}
	choice, err := sandbox.Choose(cfg.Hypervisor)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	if choice.Driver == "kvm" {
		if cfg.Hypervisor != "auto" {
			return nil, fmt.Errorf("%w: pods on vmctl-vmm: its 9P server does not see mounts made after the VM booted yet; use qemu", errdefs.ErrNotImplemented)
		}
		// The pod's containers arrive after its VM booted, through mount
		// propagation, which QEMU's virtiofsd follows.
		if choice, err = sandbox.Choose("qemu"); err != nil {
			return nil, fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err)
		}
	}
	sid := sandboxID(s.namespace, c.id)
	shared := cfg.podSharedDir(sid)
	if err := makeShared(shared); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			removeShared(shared)
		}
	}()
	dev := vmDevices{shares: []sandbox.Share{{Path: shared, Tag: contract.RootfsShareTag}}, podShared: shared}
	var pn *podNetwork
	if nsPath := namespacePath(c.spec, specs.NetworkNamespace); nsPath != "" {
		// CNI set the pod's network up in this namespace: the VM joins it.
		if pn, err = wirePodNetwork(nsPath); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				unwirePodNetwork(nsPath)
			}
		}()
		dev.nics, dev.netNS = []sandbox.NIC{pn.nic}, nsPath
	}
	v, err := cfg.bootVM(ctx, choice, s.namespace, c.id, c.bundle, c.spec, dev)
	if err != nil {
		return nil, err
	}
	if pn != nil {
		if err := v.agent.ConfigureNetwork(ctx, []agent.Interface{pn.iface}, pn.routes); err != nil {
			v.destroy()
			return nil, fmt.Errorf("configure the pod's network in the guest: %w", err)
		}
	}
	s.mu.Lock()
	s.vm, s.pod = v, &pod{id: c.id, shared: shared, netNS: dev.netNS}
	s.mu.Unlock()
	return v, nil
}

// createMember creates a pod's container in the pod's VM: its rootfs is
// mounted on the host and bound into the pod's shared directory.
func (s *Service) createMember(ctx context.Context, c *container, r *taskapi.CreateTaskRequest) (_ *vm, err error) {
	s.mu.Lock()
	v, p := s.vm, s.pod
	s.mu.Unlock()
	if v == nil {
		return nil, fmt.Errorf("%w: the pod's VM has ended", errdefs.ErrFailedPrecondition)
	}
	network, volumes, err := memberSpec(c.spec)
	if err != nil {
		return nil, err
	}
	rootfs, mounted, err := mountRootfs(r.Bundle, c.spec, r.Rootfs)
	if err != nil {
		return nil, err
	}
	if mounted {
		c.rootfs = rootfs
	}
	defer func() {
		if err != nil && mounted {
			unmountRootfs(rootfs)
		}
	}()
	if c.inPod, err = bindIntoPod(p, c.id, rootfs); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unbindFromPod(c.inPod)
		}
	}()
	volStorages, made, err := bindVolumesIntoPod(p, c.id, volumes, v.shareFS)
	if err != nil {
		return nil, err
	}
	c.volumes = made
	defer func() {
		if err != nil {
			for _, d := range made {
				unbindFromPod(d)
			}
		}
	}()
	readOnly := c.spec.Root != nil && c.spec.Root.Readonly
	storages := append([]agent.Storage{v.rootfsStorage(readOnly, c.id)}, volStorages...)
	if err := v.agent.CreateContainer(ctx, c.id, c.spec, storages, network); err != nil {
		return nil, err
	}
	return v, nil
}

// checkCreate refuses what the shim does not do, before anything is made.
func (s *Service) checkCreate(r *taskapi.CreateTaskRequest) error {
	if r.ID == "" {
		return fmt.Errorf("%w: empty container ID", errdefs.ErrInvalidArgument)
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return fmt.Errorf("%w: checkpoint and restore", errdefs.ErrNotImplemented)
	}
	return nil
}

// readSpec reads the bundle's config.json.
func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("%w: bundle %s: %v", errdefs.ErrInvalidArgument, bundle, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%w: bundle %s: config.json: %v", errdefs.ErrInvalidArgument, bundle, err)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("%w: bundle %s: the spec has no process", errdefs.ErrInvalidArgument, bundle)
	}
	return &spec, nil
}

// checkSpec refuses what a container in a VM cannot have: namespaces of
// the host's (a path), which do not exist in the guest.
func checkSpec(spec *specs.Spec) error {
	if spec.Linux == nil {
		return nil
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path != "" {
			return fmt.Errorf("%w: the %s namespace at %s is the host's: a container in a VM cannot join it", errdefs.ErrNotImplemented, ns.Type, ns.Path)
		}
	}
	return nil
}

func hasNamespace(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// Start runs the container's command, or an exec.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	if st, _, _ := p.state(); st != statusCreated {
		return nil, wire(fmt.Errorf("%w: process %s already started", errdefs.ErrFailedPrecondition, procName(p)))
	}
	if c.kind == kindSandbox && r.ExecID == "" {
		// The pod's VM runs already; the sandbox has no process of its own.
		p.setRunning()
		s.publish(topicStart, &eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
		return &taskapi.StartResponse{Pid: p.pid}, nil
	}
	a, err := s.runningAgent()
	if err != nil {
		return nil, wire(err)
	}
	stdout, stderr, err := p.openOutputs(s.ctx)
	if err != nil {
		return nil, wire(fmt.Errorf("open the output FIFOs: %w", err))
	}
	if r.ExecID == "" {
		err = a.StartContainer(ctx, c.id)
	} else {
		err = a.ExecProcess(ctx, p.ref(), p.procSpec)
	}
	if err != nil {
		p.closeFifos()
		return nil, wire(err)
	}
	p.setRunning()
	if err := p.pumpStdin(s.ctx, a); err != nil {
		// The process runs: its stdin stays open, its output still flows.
		fmt.Fprintf(os.Stderr, "vmctl shim: %s: stdin: %v\n", procName(p), err)
	}
	go s.run(a, c, p, stdout, stderr)
	if r.ExecID == "" {
		s.publish(topicStart, &eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
	} else {
		s.publish(topicExecStarted, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: r.ExecID, Pid: p.pid})
	}
	return &taskapi.StartResponse{Pid: p.pid}, nil
}

// run carries a process's output until it exits, then records and
// publishes the exit. The init's exit ends the VM.
func (s *Service) run(a *agent.Client, c *container, p *process, stdout, stderr io.WriteCloser) {
	var pumps sync.WaitGroup
	pump := func(read agent.ReadFunc, w io.WriteCloser) {
		defer pumps.Done()
		pumpOutput(s.ctx, p.ref(), read, w)
	}
	pumps.Add(1)
	go pump(a.ReadStdout, stdout)
	if !p.io.terminal {
		pumps.Add(1)
		go pump(a.ReadStderr, stderr)
	}
	code := uint32(255)
	if end, err := a.WaitProcess(s.ctx, p.ref()); err == nil {
		code = uint32(end.Status)
		if end.OOMKilled {
			s.publish(topicOOM, &eventstypes.TaskOOM{ContainerID: c.id})
		}
	}
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(outputDrain):
	}
	p.setExited(code)
	if p.execID == "" && c.kind == kindTask {
		// Every exec ends with the container (its pid namespace's init
		// is gone); the VM has nothing left to run.
		s.endVM()
	}
	close(p.exited)
	_, _, at := p.state()
	s.publish(topicExit, &eventstypes.TaskExit{
		ContainerID: c.id, ID: procID(c, p), Pid: p.pid, ExitStatus: code, ExitedAt: timestamppb.New(at),
	})
}

// endVM shuts the VM down once its task's init has exited, or its pod's
// sandbox was killed.
func (s *Service) endVM() {
	s.mu.Lock()
	v := s.vm
	s.vm = nil
	var waiting []*process
	for _, c := range s.containers {
		for _, p := range append(c.execList(), c.init) {
			if st, _, _ := p.state(); st == statusCreated && p != c.init || c.kind == kindMember && st == statusCreated {
				waiting = append(waiting, p)
			}
		}
	}
	s.mu.Unlock()
	if v == nil {
		return
	}
	// Processes never started learn that their VM is gone.
	for _, p := range waiting {
		p.mu.Lock()
		if p.status == statusCreated {
			p.status, p.exitCode, p.exitedAt = statusStopped, 255, time.Now().UTC()
			close(p.exited)
		}
		p.mu.Unlock()
	}
	// Processes that run see their agent calls fail and end with 255.
	v.shutdown()
}

func (c *container) execList() []*process {
	out := make([]*process, 0, len(c.execs))
	for _, p := range c.execs {
		out = append(out, p)
	}
	return out
}

// procName names a process in errors.
func procName(p *process) string {
	if p.execID == "" {
		return p.containerID
	}
	return p.containerID + "/" + p.execID
}

// procID is the ID containerd knows a process by: the container's for its
// init, the exec ID otherwise.
func procID(c *container, p *process) string {
	if p.execID == "" {
		return c.id
	}
	return p.execID
}

// Delete removes an exec, or the container: its VM (if it still runs),
// its rootfs mount and its record.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	st, code, at := p.state()
	if st == statusRunning {
		return nil, wire(fmt.Errorf("%w: process %s is running: kill it first", errdefs.ErrFailedPrecondition, procName(p)))
	}
	if st == statusCreated {
		// Never started: it ends here, and a Wait on it returns.
		p.mu.Lock()
		if p.status == statusCreated {
			p.status, p.exitCode, p.exitedAt = statusStopped, 137, time.Now().UTC()
			close(p.exited)
		}
		code, at = p.exitCode, p.exitedAt
		p.mu.Unlock()
	}
	p.closeFifos()
	if r.ExecID != "" {
		s.mu.Lock()
		delete(c.execs, r.ExecID)
		s.mu.Unlock()
		return &taskapi.DeleteResponse{Pid: p.pid, ExitStatus: code, ExitedAt: timestamppb.New(at)}, nil
	}
	if err := s.remove(ctx, c); err != nil {
		return nil, wire(err)
	}
	s.publish(topicDelete, &eventstypes.TaskDelete{
		ContainerID: c.id, ID: c.id, Pid: p.pid, ExitStatus: code, ExitedAt: timestamppb.New(at),
	})
	return &taskapi.DeleteResponse{Pid: p.pid, ExitStatus: code, ExitedAt: timestamppb.New(at)}, nil
}

// remove takes a container away: a task's or a sandbox's VM ends (a
// sandbox's members with it), a member leaves the pod's VM; then its
// mounts go.
func (s *Service) remove(ctx context.Context, c *container) error {
	s.mu.Lock()
	delete(s.containers, c.id)
	var v *vm
	var p *pod
	if c.kind != kindMember {
		v, p = s.vm, s.pod
		s.vm, s.pod = nil, nil
	} else {
		v = s.vm
	}
	s.mu.Unlock()
	for _, e := range c.execList() {
		e.closeFifos()
	}
	var errs []error
	switch {
	case c.kind == kindMember && v != nil:
		// The guest lets go of the rootfs before the host unmounts it.
		if err := v.agent.RemoveContainer(ctx, c.id); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	case v != nil:
		v.destroy()
	}
	for _, d := range append(c.volumes, c.inPod) {
		if err := unbindFromPod(d); err != nil {
			errs = append(errs, err)
		}
	}
	if c.rootfs != "" {
		if err := unmountRootfs(c.rootfs); err != nil {
			errs = append(errs, err)
		}
	}
	if p != nil {
		if err := removeShared(p.shared); err != nil {
			errs = append(errs, err)
		}
		if p.netNS != "" {
			unwirePodNetwork(p.netNS)
		}
	}
	return errors.Join(errs...)
}

// Exec adds a process to the running container; Start runs it.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, wire(err)
	}
	if r.ExecID == "" {
		return nil, wire(fmt.Errorf("%w: empty exec ID", errdefs.ErrInvalidArgument))
	}
	if c.kind == kindSandbox {
		return nil, wire(fmt.Errorf("%w: a pod's sandbox runs no process to exec beside", errdefs.ErrFailedPrecondition))
	}
	if r.Spec == nil || !strings.HasSuffix(r.Spec.TypeUrl, "/Process") {
		return nil, wire(fmt.Errorf("%w: exec %s: the request carries no OCI process", errdefs.ErrInvalidArgument, r.ExecID))
	}
	var proc specs.Process
	if err := json.Unmarshal(r.Spec.Value, &proc); err != nil {
		return nil, wire(fmt.Errorf("%w: exec %s: process spec: %v", errdefs.ErrInvalidArgument, r.ExecID, err))
	}
	if len(proc.Args) == 0 {
		return nil, wire(fmt.Errorf("%w: exec %s: no command", errdefs.ErrInvalidArgument, r.ExecID))
	}
	proc.Terminal = r.Terminal
	if st, _, _ := c.init.state(); st != statusRunning {
		return nil, wire(fmt.Errorf("%w: container %s is not running", errdefs.ErrFailedPrecondition, c.id))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, wire(fmt.Errorf("%w: exec %s", errdefs.ErrAlreadyExists, r.ExecID))
	}
	p := newProcess(c.id, r.ExecID, stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}, c.init.pid)
	p.procSpec = &proc
	c.execs[r.ExecID] = p
	go s.publish(topicExecAdded, &eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// Kill signals a process; with All, every process of the container.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	sig := syscall.Signal(r.Signal)
	if sig <= 0 || sig > 64 {
		return nil, wire(fmt.Errorf("%w: signal %d", errdefs.ErrInvalidArgument, r.Signal))
	}
	if c.kind == kindSandbox && r.ExecID == "" {
		s.killSandbox(c, sig)
		return &emptypb.Empty{}, nil
	}
	targets := []*process{p}
	if r.All && r.ExecID == "" {
		s.mu.Lock()
		targets = append(targets, c.execList()...)
		s.mu.Unlock()
	}
	var errs []error
	for _, t := range targets {
		switch st, _, _ := t.state(); st {
		case statusStopped:
			if t == p {
				errs = append(errs, fmt.Errorf("process %s has already exited: %w", procName(t), errdefs.ErrNotFound))
			}
			continue
		case statusCreated:
			if t == p && t.execID == "" && (sig == syscall.SIGKILL || sig == syscall.SIGTERM) {
				// A container killed before it started ends without
				// running: its VM goes now.
				s.endCreated(c)
			}
			continue
		}
		a, err := s.runningAgent()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := a.SignalProcess(ctx, t.ref(), sig); err != nil && (t == p || !errdefs.IsNotFound(err)) {
			errs = append(errs, err)
		}
	}
	return &emptypb.Empty{}, wire(errors.Join(errs...))
}

// endCreated ends a container that was created and never started.
func (s *Service) endCreated(c *container) {
	p := c.init
	p.mu.Lock()
	if p.status != statusCreated {
		p.mu.Unlock()
		return
	}
	p.status, p.exitCode, p.exitedAt = statusStopped, 137, time.Now().UTC()
	p.mu.Unlock()
	if c.kind != kindMember {
		s.endVM()
	}
	close(p.exited)
	s.publish(topicExit, &eventstypes.TaskExit{
		ContainerID: c.id, ID: c.id, Pid: p.pid, ExitStatus: 137, ExitedAt: timestamppb.New(p.exitedAt),
	})
}

// killSandbox ends a pod's sandbox on a signal that would end CRI's pause
// process (it ignores the others): the pod's VM ends with it, and the
// containers still running in it with status 255.
func (s *Service) killSandbox(c *container, sig syscall.Signal) {
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
	default:
		return
	}
	p := c.init
	p.mu.Lock()
	if p.status == statusStopped {
		p.mu.Unlock()
		return
	}
	p.status, p.exitCode, p.exitedAt = statusStopped, 128+uint32(sig), time.Now().UTC()
	at := p.exitedAt
	p.mu.Unlock()
	s.endVM()
	close(p.exited)
	s.publish(topicExit, &eventstypes.TaskExit{
		ContainerID: c.id, ID: c.id, Pid: p.pid, ExitStatus: 128 + uint32(sig), ExitedAt: timestamppb.New(at),
	})
}

// Wait blocks until the process has exited.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, wire(ctx.Err())
	}
	_, code, at := p.state()
	return &taskapi.WaitResponse{ExitStatus: code, ExitedAt: timestamppb.New(at)}, nil
}

// State reports a process's status.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	st, code, at := p.state()
	status := task.Status_CREATED
	switch st {
	case statusRunning:
		status = task.Status_RUNNING
		s.mu.Lock()
		if c.paused {
			status = task.Status_PAUSED
		}
		s.mu.Unlock()
	case statusStopped:
		status = task.Status_STOPPED
	}
	resp := &taskapi.StateResponse{
		ID: procID(c, p), Bundle: c.bundle, Pid: p.pid, Status: status,
		Stdin: p.io.stdin, Stdout: p.io.stdout, Stderr: p.io.stderr, Terminal: p.io.terminal,
		ExitStatus: code, ExecID: p.execID,
	}
	if st == statusStopped {
		resp.ExitedAt = timestamppb.New(at)
	}
	return resp, nil
}

// Pause freezes the container.
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return s.setPaused(ctx, r.ID, true)
}

// Resume thaws it.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return s.setPaused(ctx, r.ID, false)
}

func (s *Service) setPaused(ctx context.Context, id string, pause bool) (*emptypb.Empty, error) {
	c, p, err := s.lookup(id, "")
	if err != nil {
		return nil, wire(err)
	}
	if st, _, _ := p.state(); st != statusRunning {
		return nil, wire(fmt.Errorf("%w: container %s is not running", errdefs.ErrFailedPrecondition, id))
	}
	a, err := s.runningAgent()
	if err != nil {
		return nil, wire(err)
	}
	if pause {
		err = a.PauseContainer(ctx, id)
	} else {
		err = a.ResumeContainer(ctx, id)
	}
	if err != nil {
		return nil, wire(err)
	}
	s.mu.Lock()
	c.paused = pause
	s.mu.Unlock()
	if pause {
		s.publish(topicPaused, &eventstypes.TaskPaused{ContainerID: id})
	} else {
		s.publish(topicResumed, &eventstypes.TaskResumed{ContainerID: id})
	}
	return &emptypb.Empty{}, nil
}

// ResizePty sets the size of a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	if r.Width > 0xffff || r.Height > 0xffff {
		return nil, wire(fmt.Errorf("%w: terminal size %dx%d", errdefs.ErrInvalidArgument, r.Width, r.Height))
	}
	if r.Width == 0 || r.Height == 0 {
		// A client without a terminal of its own (ctr under a pipe)
		// sends 0x0: there is nothing to set.
		return &emptypb.Empty{}, nil
	}
	a, err := s.runningAgent()
	if err != nil {
		return nil, wire(err)
	}
	return &emptypb.Empty{}, wire(a.ResizeTty(ctx, p.ref(), uint16(r.Height), uint16(r.Width)))
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	if !r.Stdin {
		return &emptypb.Empty{}, nil
	}
	a, err := s.runningAgent()
	if err != nil {
		return nil, wire(err)
	}
	p.closeIO(ctx, a)
	return &emptypb.Empty{}, nil
}

// Connect tells containerd the shim's pid and the task's.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if _, p, err := s.lookup(r.ID, ""); err == nil {
		resp.TaskPid = p.pid
	}
	return resp, nil
}

// Shutdown ends the shim once it has no container left.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	busy := len(s.containers) > 0 || len(s.creating) > 0
	s.mu.Unlock()
	if busy && !r.Now {
		return &emptypb.Empty{}, nil
	}
	// Now (a signal, or containerd giving up): every task goes, with the
	// VM, the mounts and a pod's network.
	s.mu.Lock()
	all := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		if c.kind == kindMember {
			s.remove(ctx, c)
		}
	}
	for _, c := range all {
		if c.kind != kindMember {
			s.remove(ctx, c)
		}
	}
	s.mu.Lock()
	v := s.vm
	s.vm = nil
	s.mu.Unlock()
	if v != nil {
		v.destroy()
	}
	s.cancel()
	if s.shutdown != nil {
		s.shutdown()
	}
	return &emptypb.Empty{}, nil
}

// Pids lists the container's processes, by their pids in the container.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	if c, p, err := s.lookup(r.ID, ""); err != nil {
		return nil, wire(err)
	} else if st, _, _ := p.state(); st != statusRunning || c.kind == kindSandbox {
		return &taskapi.PidsResponse{}, nil
	}
	a, err := s.runningAgent()
	if err != nil {
		return nil, wire(err)
	}
	procs, err := a.ListProcesses(ctx, r.ID)
	if err != nil {
		return nil, wire(err)
	}
	return &taskapi.PidsResponse{Processes: processInfos(procs)}, nil
}

// Stats reports the container's resource use: its cgroup v2 statistics in
// the guest.
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	c, p, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, wire(err)
	}
	if st, _, _ := p.state(); st != statusRunning {
		return nil, wire(fmt.Errorf("%w: container %s is not running", errdefs.ErrFailedPrecondition, r.ID))
	}
	if c.kind == kindSandbox {
		return nil, wire(fmt.Errorf("%w: a pod's sandbox runs nothing of its own: ask its containers", errdefs.ErrNotImplemented))
	}
	a, err := s.runningAgent()
	if err != nil {
		return nil, wire(err)
	}
	st, err := a.Stats(ctx, r.ID)
	if err != nil {
		return nil, wire(err)
	}
	any, err := anypb.New(cgroupMetrics(st))
	if err != nil {
		return nil, wire(err)
	}
	// containerd's clients look the type up by its name alone.
	any.TypeUrl = strings.TrimPrefix(any.TypeUrl, "type.googleapis.com/")
	return &taskapi.StatsResponse{Stats: any}, nil
}

// Update changes the container's resources: a VM's size is fixed at boot.
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, wire(fmt.Errorf("%w: update: a VM's resources are fixed when it boots", errdefs.ErrNotImplemented))
}

// Checkpoint is not offered.
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, wire(fmt.Errorf("%w: checkpoint", errdefs.ErrNotImplemented))
}

// The topics of task events (containerd's runtime/events.go).
const (
	topicCreate      = "/tasks/create"
	topicStart       = "/tasks/start"
	topicOOM         = "/tasks/oom"
	topicExit        = "/tasks/exit"
	topicDelete      = "/tasks/delete"
	topicExecAdded   = "/tasks/exec-added"
	topicExecStarted = "/tasks/exec-started"
	topicPaused      = "/tasks/paused"
	topicResumed     = "/tasks/resumed"
)
