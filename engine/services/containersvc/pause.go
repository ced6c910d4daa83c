package containersvc

// docker pause and unpause freeze the container's processes, execs
// included, with the cgroup v2 freezer of the container in its guest, as
// runc (and Kata, through its agent) do; the guest and its agent keep
// running. The container stays running and shows as paused; exec and the
// file calls (cp, export, diff, commit) are refused as dockerd refuses exec
// into a paused container; stop, kill, restart and rm -f thaw it first. A
// daemon restarted meanwhile re-adopts it paused.
//
// Freezing the whole VM (QMP stop) was tried first: a daemon that died
// while the VM was stopped left the guest's agent with the dead daemon's
// requests still open on the virtio-serial stream, which the next daemon's
// reuse of their stream IDs ran into, so its re-adoption failed.

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
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
	if err := t.booted(); err != nil {
		return err
	}
	if err := t.agent.PauseContainer(ctx, t.c.ID); err != nil {
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
	if err := t.agent.ResumeContainer(ctx, t.c.ID); err != nil {
		return fmt.Errorf("unpause container %s: %w", t.c.Name, err)
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

// refusePaused refuses what dockerd refuses on a paused container.
func refusePaused(t *task) error {
	if t != nil && t.paused.Load() {
		return errs.New(errdefs.ErrConflict, "container %s is paused, unpause the container before exec", t.c.Name)
	}
	return nil
}
