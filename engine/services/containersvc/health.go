package containersvc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// Docker's health check defaults and limits.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 30 * time.Second
	defaultHealthRetries  = 3
	minHealthDuration     = time.Millisecond
	healthLogEntries      = 5
	healthOutputMax       = 4096
)

// checkHealthcheck validates a create's health check; a Test of ["NONE"]
// (--no-healthcheck) is no check at all.
func checkHealthcheck(h *containers.Healthcheck) (*containers.Healthcheck, error) {
	if h == nil || len(h.Test) == 0 || h.Test[0] == "NONE" {
		return nil, nil
	}
	bad := func(format string, a ...any) error { return errs.New(errdefs.ErrInvalidArgument, format, a...) }
	switch h.Test[0] {
	case "CMD":
		if len(h.Test) < 2 || h.Test[1] == "" {
			return nil, bad("invalid health check: CMD needs a command")
		}
	case "CMD-SHELL":
		if len(h.Test) != 2 || h.Test[1] == "" {
			return nil, bad("invalid health check: CMD-SHELL takes one command line")
		}
	default:
		return nil, bad("invalid health check test %q: want NONE, CMD or CMD-SHELL", h.Test[0])
	}
	for name, d := range map[string]time.Duration{"interval": h.Interval, "timeout": h.Timeout, "start period": h.StartPeriod} {
		if d != 0 && d < minHealthDuration {
			return nil, bad("invalid health check %s %v: it must be at least %v", name, d, minHealthDuration)
		}
	}
	if h.Retries < 0 {
		return nil, bad("invalid health check retries %d: it must not be negative", h.Retries)
	}
	c := *h
	return &c, nil
}

// healthArgs is the command a probe runs.
func healthArgs(h *containers.Healthcheck) []string {
	if h.Test[0] == "CMD-SHELL" {
		return []string{"/bin/sh", "-c", h.Test[1]}
	}
	return h.Test[1:]
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// watchHealth probes a run's health until it ends, as dockerd does: every
// interval an exec of the check, killed after the timeout; a success makes
// the run healthy, retries failures in a row unhealthy; failures during
// the start period do not count. Each change of status is recorded and
// reported (health_status events). h is the run's check, read before the
// run started: the run's end rewrites its record's Config.
func (t *task) watchHealth(h *containers.Healthcheck) {
	if h == nil {
		return
	}
	interval, timeout, retries := h.Interval, h.Timeout, h.Retries
	if interval == 0 {
		interval = defaultHealthInterval
	}
	if timeout == 0 {
		timeout = defaultHealthTimeout
	}
	if retries == 0 {
		retries = defaultHealthRetries
	}
	started := time.Now()
	health := &containers.Health{Status: containers.HealthStarting}
	t.svc.recordHealth(t.c.ID, health)
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.done:
			return
		case <-time.After(interval):
		}
		probe := t.probe(healthArgs(h), timeout)
		if t.ctx.Err() != nil {
			return
		}
		health.Log = append(health.Log, probe)
		if len(health.Log) > healthLogEntries {
			health.Log = health.Log[len(health.Log)-healthLogEntries:]
		}
		old := health.Status
		switch {
		case probe.ExitCode == 0:
			health.Status, health.FailingStreak = containers.HealthHealthy, 0
		case time.Since(started) < h.StartPeriod:
			// Failures while the container starts do not count.
		default:
			health.FailingStreak++
			if health.FailingStreak >= retries {
				health.Status = containers.HealthUnhealthy
			}
		}
		t.svc.recordHealth(t.c.ID, health)
		if health.Status != old {
			t.svc.publish("health_status: "+health.Status, t.c, nil)
		}
	}
}

// probe runs one health check in the container.
func (t *task) probe(args []string, timeout time.Duration) containers.HealthProbe {
	p := containers.HealthProbe{Start: time.Now().UTC(), ExitCode: -1}
	out := &limitedBuffer{max: healthOutputMax}
	id, err := t.svc.ExecCreate(t.c.ID, ExecOptions{Cmd: args, AttachStdout: true, AttachStderr: true})
	if err != nil {
		p.Output = err.Error()
		p.End = time.Now().UTC()
		return p
	}
	defer t.svc.forgetExec(id)
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	err = t.svc.ExecStart(ctx, id, Stdio{Stdout: out, Stderr: out}, false)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		p.Output = fmt.Sprintf("Health check exceeded timeout (%v)", timeout)
	case err != nil:
		p.Output = err.Error()
	default:
		if info, err := t.svc.ExecInspect(id); err == nil && info.ExitCode != nil {
			p.ExitCode = *info.ExitCode
		}
		p.Output = out.String()
	}
	p.End = time.Now().UTC()
	return p
}

// recordHealth stores a run's health in its record.
func (s *Service) recordHealth(id string, h *containers.Health) {
	c, err := s.cfg.Store.Get(id)
	if err != nil || c.State.Status != containers.StatusRunning {
		return
	}
	copied := *h
	copied.Log = append([]containers.HealthProbe(nil), h.Log...)
	c.State.Health = &copied
	s.cfg.Store.Update(c)
}

// HealthSuffix is what docker ps adds to a running container's status.
func HealthSuffix(h *containers.Health) string {
	if h == nil {
		return ""
	}
	if h.Status == containers.HealthStarting {
		return " (health: starting)"
	}
	return " (" + strings.TrimSpace(h.Status) + ")"
}

// forgetExec drops an exec's record (a health probe's, read already).
func (s *Service) forgetExec(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tasks {
		delete(t.execs, id)
	}
}

// mergeHealthcheck is a container's check over its image's, as dockerd
// merges them: an empty Test and zero fields take the image's.
func mergeHealthcheck(c, img *containers.Healthcheck) *containers.Healthcheck {
	switch {
	case img == nil:
		return c
	case c == nil:
		return img
	}
	m := *c
	if len(m.Test) == 0 {
		m.Test = img.Test
	}
	if m.Interval == 0 {
		m.Interval = img.Interval
	}
	if m.Timeout == 0 {
		m.Timeout = img.Timeout
	}
	if m.StartPeriod == 0 {
		m.StartPeriod = img.StartPeriod
	}
	if m.Retries == 0 {
		m.Retries = img.Retries
	}
	return &m
}
