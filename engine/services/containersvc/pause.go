package containersvc

// docker pause and unpause freeze the container's whole VM: every vCPU
// stops (QMP stop under QEMU, the VMM's Pause under vmctl-vmm), so nothing
// in the guest runs, its agent included. The container stays running and
// shows as paused; exec, cp and the other calls that need the agent are
// refused as dockerd refuses exec into a paused container; stop, kill,
// restart and rm -f let the VM run again first. A daemon restarted meanwhile
// re-adopts the VM and leaves it paused.

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// Pause freezes a running container's VM.
func (s *Service) Pause(ctx context.Context, ref string) error {
	t, err := s.running(ref)
	if err != nil {
		return err
	}
	if t.paused.Load() {
		return errs.New(errdefs.ErrConflict, "container %s is already paused", t.c.Name)
	}
	p, ok := t.sb.(sandbox.Pauser)
	if !ok {
		return errs.New(errdefs.ErrNotImplemented, "container %s: its hypervisor cannot pause a VM", t.c.Name)
	}
	if err := p.Pause(ctx); err != nil {
		return fmt.Errorf("pause container %s: %w", t.c.Name, err)
	}
	t.paused.Store(true)
	if err := s.recordPaused(t.c.ID, true); err != nil {
		return err
	}
	s.publish("pause", t.c, nil)
	return nil
}

// Unpause lets a paused container's VM run again.
func (s *Service) Unpause(ctx context.Context, ref string) error {
	t, err := s.running(ref)
	if err != nil {
		return err
	}
	if !t.paused.Load() {
		return errs.New(errdefs.ErrConflict, "container %s is not paused", t.c.Name)
	}
	if err := s.resume(ctx, t); err != nil {
		return err
	}
	s.publish("unpause", t.c, nil)
	return nil
}

// resume lets a paused run's VM run again (a no-op for one that runs).
func (s *Service) resume(ctx context.Context, t *task) error {
	if !t.paused.Load() {
		return nil
	}
	if p, ok := t.sb.(sandbox.Pauser); ok {
		if err := p.Resume(ctx); err != nil {
			return fmt.Errorf("unpause container %s: %w", t.c.Name, err)
		}
	}
	t.paused.Store(false)
	return s.recordPaused(t.c.ID, false)
}

func (s *Service) recordPaused(id string, paused bool) error {
	c, err := s.cfg.Store.Get(id)
	if err != nil {
		return err
	}
	if c.State.Status != containers.StatusRunning {
		return nil
	}
	c.State.Paused = paused
	return s.cfg.Store.Update(c)
}

// refusePaused is the error of a call the agent of a paused VM would
// never answer.
func refusePaused(t *task) error {
	if t != nil && t.paused.Load() {
		return errs.New(errdefs.ErrConflict, "container %s is paused, unpause the container before exec", t.c.Name)
	}
	return nil
}
