package containersvc

// docker top and docker stats: what runs in a container and what it uses,
// read by the guest agent in the container's VM (its /proc and cgroup).

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/errs"
)

// TopResult is a ps table of a container's processes: docker top's
// answer, a header per column and a row per process.
type TopResult struct {
	Titles    []string
	Processes [][]string
}

// Top lists a running container's processes as ps with psArgs would (see
// ps.go for the options it renders; empty is -ef). Options it cannot
// render are bad input; a container that does not run is a conflict, as
// under dockerd.
func (s *Service) Top(ctx context.Context, ref, psArgs string) (TopResult, error) {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return TopResult{}, err
	}
	cols, err := parsePsArgs(psArgs)
	if err != nil {
		return TopResult{}, err
	}
	t := s.task(c.ID)
	if t == nil || t.booted() != nil {
		return TopResult{}, errs.New(errdefs.ErrConflict, "Container %s is not running", c.ID)
	}
	procs, err := t.agent.ListProcesses(ctx, c.ID)
	if err != nil {
		return TopResult{}, t.queryError("list the processes of", err)
	}
	var memTotal uint64
	if psNeedsMemory(cols) {
		st, err := t.agent.Stats(ctx, c.ID)
		if err != nil {
			return TopResult{}, t.queryError("read the memory of", err)
		}
		memTotal = st.GuestMemory
	}
	return renderPs(cols, procs, time.Now(), memTotal), nil
}

// queryError explains a failed ListProcesses or Stats: a container whose
// run ended meanwhile is no longer running.
func (t *task) queryError(what string, err error) error {
	select {
	case <-t.done:
		return errs.New(errdefs.ErrConflict, "Container %s is not running", t.c.ID)
	default:
	}
	return fmt.Errorf("%s container %s: %w", what, t.c.Name, err)
}

// ResourceStats is a running container's resource statistics, as its
// guest agent reads them (agent.Stats).
type ResourceStats = agent.Stats

// StatsSample is one sample of a container's statistics: docker stats's
// record.
type StatsSample struct {
	ID, Name string
	// Running says whether the container runs; when it does not (or is
	// still booting, or its run ended meanwhile), Stats is zero: dockerd
	// sends such records for a container that does not run.
	Running bool
	Stats   ResourceStats
}

// Stats samples a container's statistics. Only an unknown container, or
// a guest that fails to answer for one that runs, is an error.
func (s *Service) Stats(ctx context.Context, ref string) (StatsSample, error) {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return StatsSample{}, err
	}
	sample := StatsSample{ID: c.ID, Name: c.Name}
	t := s.task(c.ID)
	if t == nil || t.booted() != nil {
		return sample, nil
	}
	st, err := t.agent.Stats(ctx, c.ID)
	if err != nil {
		if err = t.queryError("read the statistics of", err); errdefs.IsConflict(err) {
			return sample, nil // it ended meanwhile
		}
		return sample, err
	}
	sample.Running, sample.Stats = true, st
	return sample, nil
}
