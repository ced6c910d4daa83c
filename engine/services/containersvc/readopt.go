package containersvc

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	s.sweepOrphans(all)
	return adopted, nil
}

// sweepOrphans ends the VMs of this exec root that no container runs and
// no live process is starting: a start cut short by the death of its
// process (a daemon killed while QEMU waited, paused, for it) leaves a VMM
// that nothing will ever resume or end. Such a VMM's parent is gone, so it
// is init's child; one whose parent lives belongs to a start under way in
// another process (a foreground vmctl on the same roots) and is left
// alone. State directories without a VMM go too. all are the container
// records as Readopt found them.
func (s *Service) sweepOrphans(all []*containers.Container) {
	entries, err := os.ReadDir(s.cfg.ExecRoot)
	if err != nil {
		return
	}
	keep := map[string]bool{}
	for _, c := range all {
		if s.task(c.ID) != nil || (c.State.Status == containers.StatusRunning && processAlive(c.State.OwnerPid)) {
			keep[c.ShortID()] = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !isShortID(name) || keep[name] {
			continue
		}
		dir := filepath.Join(s.cfg.ExecRoot, name)
		pids := processesNaming(dir + "/")
		if slices.ContainsFunc(pids, func(pid int) bool { ppid := parentOf(pid); return ppid != 1 && ppid != 0 }) {
			continue // its starter lives (a process gone meanwhile, parent 0, is no starter)
		}
		for _, pid := range pids {
			log.Printf("ending VMM process %d of %s: no container runs it (its start was cut short)", pid, name)
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
		os.RemoveAll(dir)
	}
}

// procStat returns the state letter and the parent of pid, from
// /proc/PID/stat; ok is false once pid is gone.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

// parentOf returns pid's parent, or 0 once it is gone.
func parentOf(pid int) int {
	_, ppid, _ := procStat(pid)
	return ppid
}

// isShortID reports whether name is a container's short ID: 12 lower-case
// hex digits.
func isShortID(name string) bool {
	if len(name) != 12 {
		return false
	}
	for _, r := range name {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// processesNaming lists the processes whose command line contains s.
func processesNaming(s string) []int {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits up to limit for pid to end (a child of another process
// is reaped by its parent or by init; a zombie counts as gone).
func waitGone(pid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if state, _, ok := procStat(pid); !ok || state == 'Z' {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	log, err := openLog(logPath, resume, s.logLimits(c))
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
	// A paused container's processes stay frozen in the guest: the run
	// taken over is paused.
	t.paused.Store(c.State.Paused)
	s.mu.Lock()
	s.tasks[c.ID] = t
	s.mu.Unlock()
	close(t.ready)
	s.notify()
	check := t.c.Config.Healthcheck
	go t.run()
	go t.watchHealth(check)
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
	if c.Config.AutoRemove && s.autoRemove(c) {
		// --rm: the run is over, so the container goes, as after any exit.
		s.mu.Lock()
		s.forgetLocked(c.ID)
		s.mu.Unlock()
		s.publish("destroy", c, nil)
	} else {
		s.cfg.Store.Update(c)
		s.afterExit(c, c.State.ExitCode, c.State.FinishedAt.Sub(c.State.StartedAt))
	}
	s.notify()
}
