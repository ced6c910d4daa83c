package containersvc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// readoptTimeout bounds the adoption of one VM: QMP, QEMU's reconnection
// to the agent socket (about a second) and the agent's health answer.
const readoptTimeout = 20 * time.Second

// Readopt takes over the containers that an earlier process of this
// service left running (a daemon that crashed or was restarted, with VMs
// that outlive it). For each record that says running, whose owner is gone
// and whose VMM process still runs the VM of this exec root, it re-attaches
// the VM, reconnects the agent, and carries on as if it had started the
// container: output goes to the log again, attach, logs, stop and exec work,
// and the exit is recorded. A record whose VM is gone, or cannot be adopted
// (the VM is then ended), is marked exited with State.Error saying why, and
// its runtime state is removed.
//
// Call it once at start-up, before serving. It returns the IDs adopted; a
// failure to adopt one container is recorded on that container, not
// returned.
func (s *Service) Readopt(ctx context.Context) ([]string, error) {
	all, err := s.cfg.Store.List()
	if err != nil {
		return nil, fmt.Errorf("re-adopt containers: %w", err)
	}
	var adopted []string
	for _, c := range all {
		if c.State.Status != containers.StatusRunning || s.task(c.ID) != nil {
			continue
		}
		if c.State.OwnerPid != os.Getpid() && processAlive(c.State.OwnerPid) {
			continue // another live process (a CLI run) owns it
		}
		if err := s.readopt(ctx, c); err != nil {
			s.markLost(c, err.Error())
			continue
		}
		adopted = append(adopted, c.ID)
	}
	return adopted, nil
}

// readopt adopts one container's VM and starts its run.
func (s *Service) readopt(ctx context.Context, c *containers.Container) error {
	stateDir := filepath.Join(s.cfg.ExecRoot, c.ShortID())
	if !s.vmmAlive(c) {
		os.RemoveAll(stateDir)
		return fmt.Errorf("the VM ended while no daemon was running (VMM process %d is gone)", c.State.VMMPid)
	}
	// The driver of the VM that runs, as recorded at its start.
	drv, err := s.cfg.OpenDriver(sandbox.Choice{Driver: c.State.Driver, Accel: c.State.Accel})
	if err != nil {
		return fmt.Errorf("cannot re-adopt the VM: %w", err)
	}
	ra, ok := drv.(sandbox.Reattacher)
	if !ok {
		return fmt.Errorf("cannot re-adopt the VM: the %s driver cannot reattach to a running VM", drv.Name())
	}
	ctx, cancel := context.WithTimeout(ctx, readoptTimeout)
	defer cancel()
	sb, err := ra.Reattach(ctx, sandbox.Config{ID: c.ShortID(), StateDir: stateDir, ConsoleLog: s.ConsoleLog(c.ID)}, c.State.VMMPid)
	if err != nil {
		// Not our VM (a recycled pid) or unusable: leave the process alone.
		return fmt.Errorf("cannot re-adopt the VM: %w", err)
	}
	logPath := filepath.Join(s.cfg.Store.Dir(c.ID), logFileName)
	// The pumps resume where the log ends: a chunk the agent sent to the
	// dead process but that never reached the log is sent again.
	resume, err := logOffsets(logPath, c.State.StartedAt)
	if err != nil {
		sb.Destroy()
		return err
	}
	log, err := openLog(logPath)
	if err != nil {
		sb.Destroy()
		return err
	}
	t := &task{
		svc: s, c: c, sb: sb, ready: make(chan struct{}), done: make(chan struct{}), log: log,
		outputDone: make(chan struct{}), stdinCh: make(chan *Attachment, 16), resume: resume,
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	fail := func(what string, err error) error {
		t.destroy()
		t.endOutput()
		return fmt.Errorf("cannot re-adopt the VM: %s: %w", what, err)
	}
	conn, err := sb.DialAgent(ctx)
	if err != nil {
		return fail("reconnect the agent channel", err)
	}
	t.agent = s.newAgent(conn)
	if _, err := t.agent.Health(ctx); err != nil {
		return fail("wait for the guest agent", err)
	}

	c.State.OwnerPid = os.Getpid()
	if err := s.cfg.Store.Update(c); err != nil {
		return fail("record the new owner", err)
	}
	s.mu.Lock()
	s.tasks[c.ID] = t
	s.mu.Unlock()
	close(t.ready)
	s.notify()
	go t.run()
	return nil
}

// vmmAlive reports whether the container's recorded VMM process still runs
// the container's VM: its command line names the VM's state directory in
// this exec root, so a recycled pid does not count.
func (s *Service) vmmAlive(c *containers.Container) bool {
	if c.State.VMMPid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(c.State.VMMPid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte(filepath.Join(s.cfg.ExecRoot, c.ShortID())+"/"))
}

// markLost records that a container's run ended without its exit being
// seen.
func (s *Service) markLost(c *containers.Container, why string) {
	c.State.Status = containers.StatusExited
	c.State.ExitCode = 255
	c.State.Error = why
	c.State.FinishedAt = time.Now().UTC()
	c.State.VMMPid, c.State.OwnerPid = 0, 0
	// Recorded for waiters, as a run's exit is (see task.run).
	s.mu.Lock()
	s.exitRecord(c.ID).record(ExitStatus{Code: c.State.ExitCode, Error: why})
	s.mu.Unlock()
	s.publishExit(c, ExitStatus{Code: c.State.ExitCode, Error: why})
	if c.Config.AutoRemove {
		// --rm: the run is over, so the container goes, as after any exit.
		s.cfg.Store.Delete(c.ID)
		s.dropAnonymousVolumes(c)
		s.mu.Lock()
		s.forgetLocked(c.ID)
		s.mu.Unlock()
		s.publish("destroy", c, nil)
	} else {
		s.cfg.Store.Update(c)
	}
	s.notify()
}
