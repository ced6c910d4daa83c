package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroup is a container's cgroup v2 directory.
type cgroup struct {
	path string
	// dir is the open directory, used as clone3's CLONE_INTO_CGROUP target
	// so processes start inside the cgroup with no window outside it.
	dir *os.File
}

// cgroupFiles turns OCI resources into cgroup v2 interface file writes.
func cgroupFiles(r *specs.LinuxResources, hasSwapFile bool) []struct{ file, value string } {
	var out []struct{ file, value string }
	add := func(f, v string) { out = append(out, struct{ file, value string }{f, v}) }
	if r == nil {
		return nil
	}
	if m := r.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		add("memory.max", strconv.FormatInt(*m.Limit, 10))
		if hasSwapFile {
			// OCI's swap is memory+swap; no swap unless asked for.
			swap := "0"
			if m.Swap != nil && *m.Swap == -1 {
				swap = "max"
			} else if m.Swap != nil && *m.Swap > *m.Limit {
				swap = strconv.FormatInt(*m.Swap-*m.Limit, 10)
			}
			add("memory.swap.max", swap)
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit > 0 {
		add("pids.max", strconv.FormatInt(*p.Limit, 10))
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			// The conversion runc and crun use: shares 2..262144 onto
			// weight 1..10000.
			s := min(max(*c.Shares, 2), 262144)
			add("cpu.weight", strconv.FormatUint(1+((s-2)*9999)/262142, 10))
		}
		if c.Quota != nil && *c.Quota > 0 {
			period := uint64(100000)
			if c.Period != nil && *c.Period > 0 {
				period = *c.Period
			}
			add("cpu.max", fmt.Sprintf("%d %d", *c.Quota, period))
		}
	}
	return out
}

// newCgroup creates root/id and applies the limits.
func newCgroup(root, id string, r *specs.LinuxResources) (*cgroup, error) {
	p := filepath.Join(root, id)
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup %s: %w", id, err)
	}
	cg := &cgroup{path: p}
	_, swapErr := os.Stat(filepath.Join(p, "memory.swap.max"))
	files := cgroupFiles(r, swapErr == nil)
	if _, err := os.Stat(filepath.Join(p, "pids.max")); err == nil && !hasPidsLimit(r) {
		// No limit asked for: the container may take every task of its VM
		// but the agent's reserve, so a fork bomb cannot leave the agent
		// unable to start a thread.
		if limit, ok := defaultPidsLimit(); ok {
			files = append(files, struct{ file, value string }{"pids.max", strconv.Itoa(limit)})
		}
	}
	for _, w := range files {
		if err := os.WriteFile(filepath.Join(p, w.file), []byte(w.value), 0); err != nil {
			cg.remove()
			if errors.Is(err, os.ErrNotExist) {
				controller, _, _ := strings.Cut(w.file, ".")
				return nil, fmt.Errorf("set %s: cgroup controller %q is not enabled", w.file, controller)
			}
			return nil, fmt.Errorf("set %s to %s: %w", w.file, w.value, err)
		}
	}
	dir, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		cg.remove()
		return nil, fmt.Errorf("open cgroup %s: %w", id, err)
	}
	cg.dir = dir
	return cg, nil
}

// fd is the descriptor for SysProcAttr.CgroupFD.
func (c *cgroup) fd() int { return int(c.dir.Fd()) }

// kill sends SIGKILL to every process in the cgroup.
func (c *cgroup) kill() error {
	err := os.WriteFile(filepath.Join(c.path, "cgroup.kill"), []byte("1"), 0)
	if err == nil || !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	// Kernels before 5.14 have no cgroup.kill.
	b, err := os.ReadFile(filepath.Join(c.path, "cgroup.procs"))
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	return nil
}

// oomKilled reports whether the kernel OOM-killed a process of the cgroup.
func (c *cgroup) oomKilled() bool {
	f, err := os.Open(filepath.Join(c.path, "memory.events"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if k == "oom_kill" {
			n, _ := strconv.Atoi(v)
			return n > 0
		}
	}
	return false
}

// remove deletes the cgroup directory once its processes are gone; exited
// processes leave the cgroup asynchronously, so EBUSY is retried briefly.
func (c *cgroup) remove() error {
	if c.dir != nil {
		c.dir.Close()
		c.dir = nil
	}
	var err error
	for i := 0; i < 100; i++ {
		err = unix.Rmdir(c.path)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", c.path, err)
}

// freeze sets the cgroup's freezer (cgroup v2 cgroup.freeze) and, when
// freezing, waits until the kernel reports every process frozen
// (cgroup.events "frozen 1"), as runc's pause does.
func (c *cgroup) freeze(ctx context.Context, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(c.path, "cgroup.freeze"), []byte(v), 0); err != nil {
		return fmt.Errorf("cgroup freezer: %w", err)
	}
	if !on {
		return nil
	}
	for {
		b, err := os.ReadFile(filepath.Join(c.path, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("cgroup freezer: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line == "frozen 1" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup freezer: processes not frozen: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// agentPidsReserve is how many tasks of the VM a container without a pids
// limit leaves to the agent.
const agentPidsReserve = 512

func hasPidsLimit(r *specs.LinuxResources) bool {
	return r != nil && r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0
}

// defaultPidsLimit is the VM's pid_max less the agent's reserve.
func defaultPidsLimit() (int, bool) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 2*agentPidsReserve {
		return 0, false
	}
	return n - agentPidsReserve, true
}
