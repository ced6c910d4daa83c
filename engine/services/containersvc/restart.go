package containersvc

// Restart policies (docker run --restart), as dockerd applies them: when a
// run ends, "always" and "unless-stopped" start the container again unless
// a user stopped it, "on-failure[:N]" when it exited non-zero (at most N
// times). Starts back off as dockerd's do: 100 ms after the first exit,
// doubling up to a minute, back to 100 ms after a run of 10 s or more.
// When the daemon starts, it starts the containers whose policy says so:
// "always" ones even if a user had stopped them, "unless-stopped" and
// "on-failure" ones only if not. Only a daemon applies policies
// (Config.RestartPolicies): a container that a foreground vmctl runs has
// no one to restart it once vmctl exits, so such a create is refused.

import (
	"context"
	"log"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// RestartPolicy is docker run --restart.
type RestartPolicy = containers.RestartPolicy

const (
	restartFirstDelay = 100 * time.Millisecond
	restartMaxDelay   = time.Minute
	restartResetAfter = 10 * time.Second
)

// checkRestartPolicy refuses what dockerd refuses: unknown names, a count
// with a policy other than on-failure, a negative count, a policy on a
// container removed when it exits.
func checkRestartPolicy(p RestartPolicy, autoRemove bool) error {
	switch p.Name {
	case "", "no", "always", "unless-stopped":
		if p.MaximumRetryCount != 0 {
			return errs.New(errdefs.ErrInvalidArgument, "invalid restart policy: maximum retry count can only be used with 'on-failure'")
		}
	case "on-failure":
		if p.MaximumRetryCount < 0 {
			return errs.New(errdefs.ErrInvalidArgument, "invalid restart policy: maximum retry count cannot be negative")
		}
	default:
		return errs.New(errdefs.ErrInvalidArgument, "invalid restart policy: unknown policy %q; use one of 'no', 'always', 'on-failure', or 'unless-stopped'", p.Name)
	}
	if autoRemove && p.Name != "" && p.Name != "no" {
		return errs.New(errdefs.ErrInvalidArgument, "can't create 'AutoRemove' container with restart policy")
	}
	return nil
}

// checkRestart is checkRestartPolicy, and a policy refused where no
// daemon applies it.
func (s *Service) checkRestart(p RestartPolicy, autoRemove bool) error {
	if err := checkRestartPolicy(p, autoRemove); err != nil {
		return err
	}
	if p.Name != "" && p.Name != "no" && !s.cfg.RestartPolicies {
		return errs.New(errdefs.ErrInvalidArgument, "restart policy %s needs vmctld, which restarts containers: start it and run with -H (or on its default socket)", p.Name)
	}
	return nil
}

// restartState is a container's back-off, and its pending start.
type restartState struct {
	delay time.Duration
	timer *time.Timer // nil when no start is pending
	gen   uint64      // names the pending start
}

// afterExit applies c's restart policy to a run that ended with exitCode
// after ranFor: it schedules the next start, or nothing.
func (s *Service) afterExit(c *containers.Container, exitCode int, ranFor time.Duration) {
	if !s.cfg.RestartPolicies || c.State.ManuallyStopped {
		return
	}
	p := c.Config.RestartPolicy
	switch p.Name {
	case "always", "unless-stopped":
	case "on-failure":
		if exitCode == 0 || (p.MaximumRetryCount > 0 && c.State.RestartCount >= p.MaximumRetryCount) {
			return
		}
	default:
		return
	}
	id := c.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.restarts[id]
	if st == nil {
		st = &restartState{}
		s.restarts[id] = st
	}
	switch {
	case ranFor >= restartResetAfter || st.delay == 0:
		st.delay = restartFirstDelay
	default:
		st.delay = min(2*st.delay, restartMaxDelay)
	}
	st.gen++
	gen := st.gen
	st.timer = time.AfterFunc(st.delay, func() { s.restartNow(id, gen) })
}

// restartNow makes the start a policy scheduled, unless a user stopped,
// started or removed the container meanwhile (which cancels the timer).
func (s *Service) restartNow(id string, gen uint64) {
	s.mu.Lock()
	st := s.restarts[id]
	if st == nil || st.timer == nil || st.gen != gen {
		s.mu.Unlock()
		return
	}
	st.timer = nil
	s.mu.Unlock()
	c, err := s.cfg.Store.Get(id)
	if err != nil || c.State.ManuallyStopped {
		return
	}
	if err := s.start(context.Background(), id, Stdio{}, c.State.RestartCount+1); err != nil {
		log.Printf("container %s: restart policy %s: %v", c.Name, c.Config.RestartPolicy.Name, err)
	}
}

// cancelRestart drops a pending start and the back-off: a user's start,
// stop or removal takes over.
func (s *Service) cancelRestart(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.restarts[id]; st != nil && st.timer != nil {
		st.timer.Stop()
	}
	delete(s.restarts, id)
}

// Restarting reports whether a start by the container's restart policy
// is pending (inspect's State.Restarting).
func (s *Service) Restarting(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.restarts[id]
	return st != nil && st.timer != nil
}

// RestartOnBoot starts, in the background, the stopped containers whose
// restart policy wants them running when the daemon starts, and returns
// their IDs.
func (s *Service) RestartOnBoot() ([]string, error) {
	if !s.cfg.RestartPolicies {
		return nil, nil
	}
	all, err := s.List() // reconciled
	if err != nil {
		return nil, err
	}
	var started []string
	for _, c := range all {
		if c.State.Status != containers.StatusExited || s.task(c.ID) != nil || s.Restarting(c.ID) {
			continue
		}
		p, st := c.Config.RestartPolicy, c.State
		want := false
		switch p.Name {
		case "always":
			want = true
		case "unless-stopped":
			want = !st.ManuallyStopped
		case "on-failure":
			want = !st.ManuallyStopped && st.ExitCode != 0 && (p.MaximumRetryCount == 0 || st.RestartCount < p.MaximumRetryCount)
		}
		if !want {
			continue
		}
		started = append(started, c.ID)
		go func(c *containers.Container) {
			if err := s.start(context.Background(), c.ID, Stdio{}, c.State.RestartCount); err != nil {
				log.Printf("container %s: restart policy %s at daemon start: %v", c.Name, p.Name, err)
			}
		}(c)
	}
	return started, nil
}
