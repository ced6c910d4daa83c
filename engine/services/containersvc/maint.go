package containersvc

// Maintenance boots: the files of a container that is not running are
// reached the way a running one's are, through its VM's agent, by booting
// that VM for the operation alone. The host never mounts a disk a guest
// wrote, so a stopped container's writable disk is read (and written, by
// docker cp) by a guest.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// withAgent runs fn with the agent of the container's VM: the running
// one's, or, for a created or exited container, a VM booted for fn alone
// (its disks and volumes, no network, its init paused so nothing of the
// container runs) and stopped after. Its volumes are claimed as a start
// claims them, for as long as the VM runs: one that a running container
// has mounted fails the operation as a conflict. The container's state does not
// change; a start or removal meanwhile is refused as busy.
func (s *Service) withAgent(ctx context.Context, ref string, fn func(a guestAgent, id string) error) error {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	if t := s.task(c.ID); t != nil {
		if t.paused.Load() {
			return errs.New(errdefs.ErrConflict, "container %s is paused: unpause it first", c.Name)
		}
		return fn(t.agent, c.ID)
	}
	s.reconcile(c)
	switch c.State.Status {
	case containers.StatusCreated, containers.StatusExited:
	default:
		return errs.New(errdefs.ErrConflict, "container %s is %s", c.Name, c.State.Status)
	}
	s.mu.Lock()
	if _, busy := s.tasks[c.ID]; busy || s.maint[c.ID] {
		s.mu.Unlock()
		return errs.New(errdefs.ErrConflict, "container %s is busy", c.Name)
	}
	if s.maint == nil {
		s.maint = map[string]bool{}
	}
	s.maint[c.ID] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.maint, c.ID)
		s.mu.Unlock()
	}()

	drv, err := s.prepareStart(ctx, c)
	if err != nil {
		return err
	}
	if _, err := os.Stat(s.writableDisk(c.ID)); err != nil {
		return fmt.Errorf("container %s's writable disk: %w", c.Name, err)
	}
	// A path under a volume is the volume's, for docker cp as for the
	// container itself.
	vols, err := s.attachVolumes(ctx, c)
	if err != nil {
		return err
	}
	defer vols.release()
	vcpus, mem := vmShape(containers.Config{})
	stateDir := filepath.Join(s.cfg.ExecRoot, c.ShortID()+"-m")
	sb, err := drv.Start(ctx, sandbox.Config{
		ID: c.ShortID() + "-m", Kernel: s.cfg.Kernel, Initrd: s.cfg.Initrd, VCPUs: vcpus, MemoryMiB: mem,
		Disks: append(append(imageSandboxDisks(c),
			sandbox.Disk{Path: s.writableDisk(c.ID), Serial: contract.WritableDiskSerial},
		), vols.disks...),
		StateDir:   stateDir,
		ConsoleLog: filepath.Join(s.cfg.Store.Dir(c.ID), "maintenance-console.log"),
	})
	if err != nil {
		return err
	}
	defer sb.Destroy()
	bootCtx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancel()
	conn, err := sb.DialAgent(bootCtx)
	if err != nil {
		return fmt.Errorf("the guest agent of container %s's VM: %w", c.Name, err)
	}
	a := s.newAgent(conn)
	defer a.Close()
	if _, err := a.Health(bootCtx); err != nil {
		return fmt.Errorf("the guest agent of container %s's VM: %w", c.Name, err)
	}
	spec, err := pausedSpec(c.Config.Spec)
	if err != nil {
		return err
	}
	err = a.CreateContainer(bootCtx, c.ID, spec, append(append(imageStorages(c),
		agent.Storage{Serial: contract.WritableDiskSerial, FSType: "ext4", Role: contract.RoleWritable},
	), vols.storages...), agent.ContainerNetwork{})
	if err != nil {
		return fmt.Errorf("mounting container %s's disks: %w", c.Name, err)
	}
	fnErr := fn(a, c.ID)
	// The agent unmounts and syncs, then ends the VM: what fn wrote is
	// on the disk.
	stopCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer stop()
	if err := a.Shutdown(stopCtx); err == nil {
		sb.Wait(stopCtx)
	}
	return fnErr
}

// pausedSpec is a copy of the container's spec whose init runs nothing.
func pausedSpec(s *specs.Spec) (*specs.Spec, error) {
	if s == nil || s.Process == nil {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "the container has no runtime spec")
	}
	cp := *s
	cp.Annotations = map[string]string{contract.AnnotationInit: contract.InitPause}
	for k, v := range s.Annotations {
		if k != contract.AnnotationInit {
			cp.Annotations[k] = v
		}
	}
	return &cp, nil
}
