package containersvc

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// ExitStatus is how a container's process ended.
type ExitStatus struct {
	Code      int
	OOMKilled bool
	// Error is set when the container did not end by itself (VM crash).
	Error string
}

// exitRecord counts the exits of one container seen by this service.
// Guarded by Service.mu.
type exitRecord struct {
	seq     int
	last    ExitStatus
	removed bool
}

func (r *exitRecord) record(st ExitStatus) { r.seq++; r.last = st }

// exitRecord returns the container's record, creating it. Precondition:
// s.mu is held.
func (s *Service) exitRecord(id string) *exitRecord {
	r := s.exits[id]
	if r == nil {
		r = &exitRecord{}
		s.exits[id] = r
	}
	return r
}

// WaitCondition is what a waiter waits for (Docker's names).
type WaitCondition string

const (
	// WaitNotRunning returns at once for a container that is not running.
	WaitNotRunning WaitCondition = "not-running"
	// WaitNextExit waits for the next exit, even of a container not yet started.
	WaitNextExit WaitCondition = "next-exit"
	// WaitRemoved waits until the container is removed (after its exit
	// with AutoRemove).
	WaitRemoved WaitCondition = "removed"
)

// ParseWaitCondition accepts Docker's condition names; empty is not-running.
func ParseWaitCondition(s string) (WaitCondition, error) {
	switch WaitCondition(s) {
	case "", WaitNotRunning:
		return WaitNotRunning, nil
	case WaitNextExit, WaitRemoved:
		return WaitCondition(s), nil
	}
	return "", errs.New(errdefs.ErrInvalidArgument, "invalid wait condition %q: want not-running, next-exit or removed", s)
}

// Wait blocks until the container started by this service is not running.
func (s *Service) Wait(ctx context.Context, ref string) (ExitStatus, error) {
	wait, err := s.PrepareWait(ref, WaitNotRunning)
	if err != nil {
		return ExitStatus{}, err
	}
	return wait(ctx)
}

// PrepareWait registers a waiter now, so that an exit that happens before
// the returned function is called still counts (docker run sends wait
// before start), and returns the function that blocks until the condition
// holds.
func (s *Service) PrepareWait(ref string, cond WaitCondition) (func(context.Context) (ExitStatus, error), error) {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return nil, err
	}
	id, name := c.ID, c.Name
	s.mu.Lock()
	rec := s.exitRecord(id)
	seq0 := rec.seq
	s.mu.Unlock()

	return func(ctx context.Context) (ExitStatus, error) {
		for {
			s.mu.Lock()
			changed := s.changed
			_, running := s.tasks[id]
			seq, last, removed := rec.seq, rec.last, rec.removed
			s.mu.Unlock()

			switch cond {
			case WaitNextExit:
				if seq > seq0 {
					return last, nil
				}
				if removed {
					return ExitStatus{}, errs.New(errdefs.ErrNotFound, "container %s was removed before it exited", name)
				}
			case WaitRemoved:
				if removed {
					return last, nil
				}
				if _, err := s.cfg.Store.Get(id); errdefs.IsNotFound(err) {
					return last, nil // removed by another process
				}
			default:
				if !running {
					c, err := s.cfg.Store.Get(id)
					if errdefs.IsNotFound(err) {
						return last, nil
					}
					if err != nil {
						return ExitStatus{}, err
					}
					s.reconcile(c)
					if c.State.Status != containers.StatusRunning {
						return ExitStatus{Code: c.State.ExitCode, OOMKilled: c.State.OOMKilled, Error: c.State.Error}, nil
					}
					return ExitStatus{}, errs.New(errdefs.ErrFailedPrecondition, "container %s is run by another process (pid %d)", c.Name, c.State.OwnerPid)
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return ExitStatus{}, ctx.Err()
			}
		}
	}, nil
}

// DefaultStopTimeout is how long Stop waits for the stop signal to work.
const DefaultStopTimeout = 10 * time.Second

// ContainerStopTimeout asks Stop for the container's own timeout (its
// --stop-timeout, else DefaultStopTimeout): a stop request that named none.
const ContainerStopTimeout = time.Duration(math.MinInt64)

// stopTimeoutOf resolves ContainerStopTimeout for c.
func stopTimeoutOf(c *containers.Container, timeout time.Duration) time.Duration {
	if timeout != ContainerStopTimeout {
		return timeout
	}
	if t := c.Config.StopTimeout; t != nil {
		if *t < 0 {
			return -1
		}
		return time.Duration(*t) * time.Second
	}
	return DefaultStopTimeout
}

// killGrace is how long a SIGKILLed process gets before the VM is ended.
var killGrace = 5 * time.Second

// Stop sends the container's stop signal (SIGTERM unless set at create),
// waits up to timeout for it to exit, then sends SIGKILL; a VM that still
// does not finish is destroyed. A negative timeout waits forever. A
// container that is not running gives an errdefs.ErrNotModified error.
func (s *Service) Stop(ctx context.Context, ref string, timeout time.Duration) (err error) {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	timeout = stopTimeoutOf(c, timeout)
	t := s.task(c.ID)
	pending := s.Restarting(c.ID)
	s.cancelRestart(c.ID)
	if t == nil && pending {
		// Between two runs of its restart policy: it stays stopped.
		c.State.ManuallyStopped = true
		if err := s.cfg.Store.Update(c); err != nil {
			return err
		}
		s.publish("stop", c, nil)
		return nil
	}
	if t == nil {
		s.reconcile(c)
		if c.State.Status == containers.StatusRunning {
			return errs.New(errdefs.ErrFailedPrecondition, "container %s is run by another process (pid %d)", c.Name, c.State.OwnerPid)
		}
		return errs.New(errdefs.ErrNotModified, "container %s is not running", c.Name)
	}
	t.manualStop.Store(true)
	// Docker reports stop once the container is down, however it got there.
	defer func() {
		if err == nil {
			s.publish("stop", c, nil)
		}
	}()
	// A frozen guest cannot take the signal. A guest that does not answer
	// (its VM paused by the host, a wedged agent) has its VM ended: every
	// call to it below has a deadline.
	rctx, cancel := context.WithTimeout(ctx, killGrace)
	err = s.resume(rctx, t)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t.destroy()
		<-t.done
		return nil
	}
	sig := syscall.SIGTERM
	if c.Config.StopSignal != "" {
		if parsed, err := ParseSignal(c.Config.StopSignal); err == nil {
			sig = parsed
		}
	}
	// A run still booting is let finish its boot, then stopped.
	select {
	case <-t.ready:
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	if t.signalWithin(ctx, sig) == nil {
		s.publishKill(c, sig)
	}
	var expired <-chan time.Time
	if timeout >= 0 {
		expired = time.After(timeout)
	}
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-expired:
	}
	if t.signalWithin(ctx, syscall.SIGKILL) == nil {
		s.publishKill(c, syscall.SIGKILL)
	}
	return t.awaitKill(ctx)
}

// signalWithin signals the run's process, giving the guest killGrace to
// answer.
func (t *task) signalWithin(ctx context.Context, sig syscall.Signal) error {
	ctx, cancel := context.WithTimeout(ctx, killGrace)
	defer cancel()
	return t.signal(ctx, sig)
}

// awaitKill waits for a run sent SIGKILL to end; a guest that does not
// answer within killGrace has its VM ended (run records the exit).
func (t *task) awaitKill(ctx context.Context) error {
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(killGrace):
	}
	t.destroy()
	<-t.done
	return nil
}

// Restart stops the container if it runs, then starts it again.
func (s *Service) Restart(ctx context.Context, ref string, timeout time.Duration) error {
	if err := s.Stop(ctx, ref, timeout); err != nil && !errdefs.IsNotModified(err) {
		return err
	}
	if err := s.Start(ctx, ref, Stdio{}); err != nil {
		return err
	}
	if c, err := s.cfg.Store.Get(ref); err == nil {
		s.publish("restart", c, nil)
	}
	return nil
}

// ParseSignal accepts a signal as a number or a name, with or without the
// SIG prefix, in any case ("TERM", "sigkill", "9").
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, errs.New(errdefs.ErrInvalidArgument, "invalid signal %q", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, errs.New(errdefs.ErrInvalidArgument, "invalid signal %q", s)
}

// Rename gives a container a new name, running or not, as docker rename
// does: the name must be valid and free; the networks' DNS answers for the
// new name (and no longer the old) at once; a "rename" event carries the
// old name.
func (s *Service) Rename(ctx context.Context, ref, name string) error {
	name = strings.TrimPrefix(name, "/")
	if err := containers.ValidateName(name); err != nil {
		return err
	}
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	old := c.Name
	if old == name {
		return errs.New(errdefs.ErrInvalidArgument, "renaming a container with the same name as its current name")
	}
	c.Name = name
	if err := s.cfg.Store.Update(c); err != nil {
		return err
	}
	if s.cfg.Network != nil {
		if err := s.cfg.Network.Rename(ctx, c.ID, name); err != nil {
			// The record goes back, so that name and DNS agree.
			c.Name = old
			s.cfg.Store.Update(c)
			return fmt.Errorf("rename container %s: %w", old, err)
		}
	}
	s.publish("rename", c, map[string]string{"oldName": "/" + old})
	return nil
}

// Prune removes the stopped containers (created or exited) that match,
// as docker container prune does, and returns their IDs and the space
// their writable disks took.
func (s *Service) Prune(ctx context.Context, match func(*containers.Container) bool) ([]string, uint64, error) {
	all, err := s.List()
	if err != nil {
		return nil, 0, err
	}
	var deleted []string
	var freed uint64
	for _, c := range all {
		if err := ctx.Err(); err != nil {
			return deleted, freed, err
		}
		if c.State.Status == containers.StatusRunning || s.task(c.ID) != nil || s.Restarting(c.ID) || !match(c) {
			continue
		}
		size := diskUse(s.writableDisk(c.ID))
		if err := s.Remove(ctx, c.ID, RemoveOptions{}); err != nil {
			if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
				continue // gone or started meanwhile
			}
			return deleted, freed, err
		}
		deleted = append(deleted, c.ID)
		freed += size
	}
	return deleted, freed, nil
}

// WritableSize is the space the container's writable disk takes on the
// host (docker ps -s's size, the writable layer).
func (s *Service) WritableSize(id string) int64 {
	return int64(diskUse(s.writableDisk(id)))
}

// diskUse is the space a (sparse) file takes.
func diskUse(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return uint64(st.Blocks) * 512
}

// UpdateOptions are what docker update changes; nil leaves a setting as
// it is (and so does a zero memory or CPU value, as in dockerd).
type UpdateOptions struct {
	MemoryBytes   int64
	NanoCPUs      int64
	RestartPolicy *RestartPolicy
}

// Update changes a container's restart policy, any time, and its memory
// and CPU limits while it is stopped; they apply from its next start. A
// running container's VM was sized when it started, so its limits are
// refused with a 409 that says to stop it first.
func (s *Service) Update(ctx context.Context, ref string, o UpdateOptions) error {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	s.reconcile(c)
	resized := (o.MemoryBytes != 0 && o.MemoryBytes != c.Config.MemoryBytes) || (o.NanoCPUs != 0 && o.NanoCPUs != c.Config.NanoCPUs)
	if resized && (c.State.Status == containers.StatusRunning || s.task(c.ID) != nil) {
		return errs.New(errdefs.ErrConflict, "cannot change the memory or CPUs of running container %s: its VM was sized when it started; stop it, update it, start it", c.Name)
	}
	if err := checkLimits(o.MemoryBytes, o.NanoCPUs); err != nil {
		return err
	}
	if o.MemoryBytes != 0 {
		c.Config.MemoryBytes = o.MemoryBytes
	}
	if o.NanoCPUs != 0 {
		c.Config.NanoCPUs = o.NanoCPUs
	}
	if p := o.RestartPolicy; p != nil {
		if err := s.checkRestart(*p, c.Config.AutoRemove); err != nil {
			return err
		}
		c.Config.RestartPolicy = *p
	}
	if resized && c.Config.Spec != nil {
		// The limits are in the spec the guest runs.
		if c.Config.Spec, err = BuildSpec(c); err != nil {
			return err
		}
	}
	if err := s.cfg.Store.Update(c); err != nil {
		return err
	}
	s.publish("update", c, nil)
	return nil
}
