package main

// Section shim: `ctr run --rm busybox true` through one containerd
// (Debian's, on a root, state and sockets of the bench's own, with bin/
// first on its PATH) by runtime, interleaved: runc under containerd's own
// runc shim (io.containerd.runc.v2), gVisor's runsc, vmctl's shim
// (io.containerd.vmctl.v1, a VM per task), and, for the same container
// through vmctl's own daemon, `docker run --rm busybox true` against
// vmctld. Each is timed from the client's start to its exit: create,
// start, the process, its exit, delete.
//
// Debian's runsc ships no containerd-shim-runsc-v1, so gVisor runs as
// dockerd runs it: containerd's runc shim with runsc as its OCI binary,
// through a wrapper that adds --network=none (ctr gives the container an
// empty network namespace; runsc's own network stack wants one a CNI
// made). A runtime that cannot run here is one line in its row, and the
// others go on.
//
// The bench's namespace hides the machine's cgroup file systems (`ip
// netns exec` mounts a sysfs of its own); runc and runsc need them, so the
// section mounts the same hierarchies there, in the bench's own mount
// namespace. Everything else lives in one temporary directory: containerd's
// root, state and sockets, ctr's FIFOs, runc's and runsc's state, the
// vmctl shim's VMs; only containerd 1.6's runc shim binds its socket under
// /run/containerd/s, where it removes it when it exits.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

func init() { sections = append(sections, section{"shim", runShim}) }

// shimPeer is one runtime of the table.
type shimPeer struct {
	name string
	// cmd runs the container of round i.
	cmd func(i int) *exec.Cmd
	// cleanup removes round i's container after a failed run.
	cleanup func(i int)
	times   []time.Duration
	// why says, in one line, why the runtime has no figures.
	why string
}

func runShim(n int) error {
	if os.Geteuid() != 0 {
		return skip("containerd needs root")
	}
	for _, bin := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return skip("%s is not installed: `make deps` installs Debian's containerd and runc", bin)
		}
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	for _, f := range []string{"bin/containerd-shim-vmctl-v1", "bin/vmctl", "bin/vmctld", "bin/guest/vmlinuz", "bin/guest/initramfs.img", "build/busybox.tar"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			return fmt.Errorf("%s missing: run `make build kernel image`", f)
		}
	}
	// Short: the shims' sockets live under it.
	tmp, err := os.MkdirTemp("", "vbs")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ctd, err := startBenchContainerd(tmp, filepath.Join(root, "bin"))
	if err != nil {
		return err
	}
	defer ctd.stop()
	if out, err := ctd.ctr("images", "import", filepath.Join(root, "build/busybox.tar")); err != nil {
		return fmt.Errorf("ctr images import: %v: %s", err, out)
	}
	list, err := ctd.ctr("images", "ls", "-q")
	if err != nil || strings.TrimSpace(list) == "" {
		return fmt.Errorf("ctr images ls -q: %v: %q", err, list)
	}
	image := strings.Fields(list)[0]

	// ctr's FIFOs stay in the section's directory too.
	fifos := filepath.Join(tmp, "fifo")
	// Round i's container is PREFIX-(i+1); the warm-up's PREFIX-0.
	id := func(prefix string, i int) string { return fmt.Sprintf("%s-%d", prefix, i+1) }
	ctrRun := func(prefix string, args ...string) func(int) *exec.Cmd {
		return func(i int) *exec.Cmd {
			a := append(append([]string{"run", "--rm", "--fifo-dir", fifos}, args...), image, id(prefix, i), "true")
			return ctd.ctrCmd(a...)
		}
	}
	removeTask := func(prefix string) func(int) {
		return func(i int) { ctd.remove(id(prefix, i)) }
	}
	runcRoot := filepath.Join(tmp, "runc")
	peers := []*shimPeer{{
		name:    "io.containerd.runc.v2 (runc)",
		cmd:     ctrRun("runc", "--runtime", "io.containerd.runc.v2", "--runc-root", runcRoot),
		cleanup: removeTask("runc"),
	}}
	// runc and runsc need the cgroup hierarchy, which the bench's
	// namespace hides (`ip netns exec` mounts a sysfs of its own).
	noCgroups := ""
	if err := mountCgroups(); err != nil {
		noCgroups = oneLine(err.Error())
		peers[0].why = noCgroups
	}

	gvisor := &shimPeer{name: "io.containerd.runc.v2 + runsc (gVisor)"}
	runscRoot := filepath.Join(tmp, "runsc")
	if runsc, err := exec.LookPath("runsc"); err != nil {
		gvisor.why = "runsc is not installed: `make deps` installs Debian's"
	} else if noCgroups != "" {
		gvisor.why = noCgroups
	} else {
		wrapper := filepath.Join(tmp, "runsc-none")
		script := fmt.Sprintf("#!/bin/sh\nexec %s --network=none \"$@\"\n", runsc)
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			return err
		}
		gvisor.cmd = ctrRun("runsc", "--runtime", "io.containerd.runc.v2", "--runc-binary", wrapper, "--runc-root", runscRoot)
		gvisor.cleanup = func(i int) {
			// A sandbox runsc left created cannot be killed through
			// the shim: delete it with runsc itself first.
			exec.Command(runsc, "--root", runscRoot, "delete", "--force", id("runsc", i)).Run()
			ctd.remove(id("runsc", i))
		}
	}
	peers = append(peers, gvisor)

	ours := &shimPeer{
		name:    "io.containerd.vmctl.v1 (vmctl shim)",
		cmd:     ctrRun("vmctl", "--runtime", "io.containerd.vmctl.v1"),
		cleanup: removeTask("vmctl"),
	}
	peers = append(peers, ours)

	viaDaemon := &shimPeer{name: "docker run --rm busybox true, vmctld"}
	if docker, err := exec.LookPath("docker"); err != nil {
		viaDaemon.why = "the docker CLI is not installed: `make deps` installs Debian's"
	} else {
		// Roots of its own, apart from containerd's directory, whose
		// processes are the section's leftovers.
		dataRoot, err := os.MkdirTemp("", "vmctl-bench-shim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dataRoot)
		execRoot, err := os.MkdirTemp("", "vbd")
		if err != nil {
			return err
		}
		defer os.RemoveAll(execRoot)
		if out, err := exec.Command(filepath.Join(root, "bin/vmctl"), "--data-root", dataRoot, "load", "-i", "build/busybox.tar").CombinedOutput(); err != nil {
			return fmt.Errorf("load busybox for vmctld: %v: %s", err, out)
		}
		sock := filepath.Join(execRoot, "d.sock")
		stop, err := startVmctld(sock, dataRoot, execRoot)
		if err != nil {
			return err
		}
		defer stop()
		viaDaemon.cmd = func(int) *exec.Cmd {
			cmd := exec.Command(docker, "run", "--rm", "busybox", "true")
			cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+sock, "DOCKER_CONFIG="+filepath.Join(dataRoot, "docker"))
			return cmd
		}
		viaDaemon.cleanup = func(int) {}
	}
	peers = append(peers, viaDaemon)

	// A warm-up run each: snapshots, page cache, the guest's files; and a
	// runtime that cannot run here says why.
	for _, p := range peers {
		if p.why == "" {
			p.run(-1, false)
		}
	}
	for i := 0; i < n; i++ {
		for _, p := range peers {
			if p.why == "" {
				p.run(i, true)
			}
		}
	}
	printShimTable(n, peers, peers[0], gvisor, ours)
	if ours.why != "" {
		return fmt.Errorf("vmctl shim: %s; containerd's log ends:\n%s", ours.why, ctd.logTail())
	}
	if left := ctd.leftovers(); len(left) > 0 {
		return fmt.Errorf("left behind after the runs: %s", strings.Join(left, "; "))
	}
	return nil
}

// run times round i (i < 0: the warm-up); a failure ends the runtime's
// figures with the reason.
func (p *shimPeer) run(i int, keep bool) {
	d, err := timeCmd(p.cmd(i))
	if err != nil {
		p.why = oneLine(fmt.Sprintf("run %d: %v", i+1, err))
		p.cleanup(i)
		return
	}
	if keep {
		p.times = append(p.times, d)
	}
}

func printShimTable(n int, peers []*shimPeer, runc, gvisor, ours *shimPeer) {
	driver := "auto's driver"
	if c, err := sandbox.Choose("auto"); err == nil {
		driver = c.Driver
		if c.Accel != "" {
			driver += " " + c.Accel
		}
	}
	fmt.Printf("\nctr run --rm busybox true through one containerd, by runtime (median of %d, interleaved; vmctl's VMs on %s)\n\n", n, driver)
	fmt.Printf("| %-40s | %10s | %10s | %8s | %13s |\n", "runtime", "median", "fastest", "vs runc", "vmctl shim/it")
	fmt.Printf("|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 42), strings.Repeat("-", 12), strings.Repeat("-", 12), strings.Repeat("-", 10), strings.Repeat("-", 15))
	ratio := func(a, b *shimPeer) string {
		if len(a.times) == 0 || len(b.times) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", float64(medianDur(a.times))/float64(medianDur(b.times)))
	}
	for _, p := range peers {
		if len(p.times) == 0 {
			fmt.Printf("| %-40s | cannot run here: %s\n", p.name, p.why)
			continue
		}
		vs := ratio(ours, p)
		if p == ours {
			vs = "-"
		}
		fmt.Printf("| %-40s | %8.0fms | %8.0fms | %8s | %13s |\n", p.name, ms(medianDur(p.times)), ms(minDur(p.times)), ratio(p, runc), vs)
		if p.why != "" {
			fmt.Printf("|   (failed after %d runs: %s)\n", len(p.times), p.why)
		}
	}
	fmt.Println()
	if gvisor.why == "" {
		fmt.Println("gVisor: Debian's runsc (no containerd-shim-runsc-v1 in the package) under containerd's runc shim, --network=none, its default platform.")
	}
	if len(runc.times) > 0 && len(ours.times) > 0 {
		fmt.Printf("vmctl's shim costs %.0fms more than runc per container: the VM's boot, the rootfs shared into it, its power-off.\n",
			ms(medianDur(ours.times)-medianDur(runc.times)))
	}
	fmt.Println()
}

// oneLine squeezes a message onto one line of at most 160 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// benchContainerd is the section's containerd.
type benchContainerd struct {
	dir, sock string
	env       []string
	cmd       *exec.Cmd
	log       string // containerd's log file
	exited    chan struct{}
}

// startBenchContainerd runs containerd on dir (its root, state and
// sockets, and the vmctl shim's state), with bin first on its PATH so it
// finds containerd-shim-vmctl-v1, and returns once it answers.
func startBenchContainerd(dir, bin string) (*benchContainerd, error) {
	c := &benchContainerd{dir: dir, sock: filepath.Join(dir, "c.sock"), log: filepath.Join(dir, "containerd.log"), exited: make(chan struct{})}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	// The shim finds its guest beside itself; its VMs' state stays here.
	c.env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"),
		"VMCTL_SHIM_STATE="+filepath.Join(dir, "shim"), "VMCTL_KERNEL=", "VMCTL_INITRD=", "VMCTL_HYPERVISOR=")
	c.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Env = c.env
	log, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := c.ctr("version"); err == nil {
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("containerd exited: %s", c.logTail())
		default:
		}
	}
	c.stop()
	return nil, fmt.Errorf("containerd did not answer within 20 s: %s", c.logTail())
}

// logTail is the end of containerd's log, with the shims' output, less
// its info lines.
func (c *benchContainerd) logTail() string {
	b, _ := os.ReadFile(c.log)
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "level=info") {
			kept = append(kept, l)
		}
	}
	return tailLines(strings.Join(kept, "\n"), 15)
}

func (c *benchContainerd) ctrCmd(args ...string) *exec.Cmd {
	cmd := exec.Command("ctr", append([]string{"-a", c.sock}, args...)...)
	cmd.Env = c.env
	return cmd
}

func (c *benchContainerd) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.sock}, args...)...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// remove deletes a container a failed run left, and its task.
func (c *benchContainerd) remove(id string) {
	c.ctr("task", "rm", "-f", id)
	c.ctr("containers", "rm", id)
}

// leftovers are the processes and mounts of the section still there: the
// shims, runsc's sandboxes and vmctl's VMs all name the section's
// directory on their command lines.
func (c *benchContainerd) leftovers() []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	self := fmt.Sprint(os.Getpid())
	for _, p := range procs {
		pid := filepath.Base(filepath.Dir(p))
		b, err := os.ReadFile(p)
		if err != nil || pid == self || c.cmd.Process != nil && pid == fmt.Sprint(c.cmd.Process.Pid) {
			continue
		}
		if cmdline := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmdline, c.dir+"/") {
			found = append(found, "process "+pid+": "+oneLine(cmdline))
		}
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], c.dir+"/") {
				found = append(found, "mount "+f[4])
			}
		}
	}
	return found
}

// stop ends containerd, then whatever of the section outlived it (a
// shim, a sandbox, a VM: processes naming its directory), and unmounts
// what is left under the directory.
func (c *benchContainerd) stop() {
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	for _, l := range c.leftovers() {
		var pid int
		if _, err := fmt.Sscanf(l, "process %d:", &pid); err == nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], c.dir+"/") {
			if err := syscall.Unmount(f[4], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				fmt.Fprintf(os.Stderr, "bench shim: unmount %s: %v\n", f[4], err)
			}
		}
	}
}

// mountCgroups mounts, where this process's mount namespace has none, the
// cgroup file systems of the namespace the bench was started in (its
// parent's, outside `ip netns exec`), as they are mounted there: the same
// hierarchies, seen here too. The namespace is the bench's own (`ip netns
// exec` made it a slave of the machine's), so the machine's mounts do not
// change.
func mountCgroups() error {
	own, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if len(cgroupMounts(string(own))) > 0 {
		return nil
	}
	var outer []byte
	for _, pid := range []int{os.Getppid(), 1} {
		if outer, err = os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); err == nil && len(cgroupMounts(string(outer))) > 0 {
			break
		}
	}
	mounts := cgroupMounts(string(outer))
	if len(mounts) == 0 {
		return errors.New("no cgroup file system mounted on this machine")
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount the cgroup hierarchy %s (%s %s) in the bench's namespace: %w", m.target, m.fstype, m.data, err)
		}
	}
	return nil
}

// cgroupMount is a mount of /sys/fs/cgroup or below, from a mountinfo.
type cgroupMount struct {
	source, target, fstype, data string
	flags                        uintptr
}

// cgroupMounts lists the mounts of /sys/fs/cgroup and below in mountinfo,
// parents first, as the kernel lists them: the tmpfs of a cgroup v1 (or
// hybrid) machine and its hierarchies, or the one cgroup2 of a unified
// one.
func cgroupMounts(mountinfo string) []cgroupMount {
	var out []cgroupMount
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 3 {
			continue
		}
		target := f[4]
		if target != "/sys/fs/cgroup" && !strings.HasPrefix(target, "/sys/fs/cgroup/") {
			continue
		}
		if fstype := g[0]; fstype != "tmpfs" && fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		var flags uintptr
		for _, o := range strings.Split(f[5], ",") {
			switch o {
			case "ro":
				flags |= syscall.MS_RDONLY
			case "nosuid":
				flags |= syscall.MS_NOSUID
			case "nodev":
				flags |= syscall.MS_NODEV
			case "noexec":
				flags |= syscall.MS_NOEXEC
			}
		}
		var data []string
		for _, o := range strings.Split(g[2], ",") {
			if o != "rw" && o != "ro" && !strings.HasPrefix(o, "size=") && !strings.HasPrefix(o, "nr_inodes=") && !strings.HasPrefix(o, "inode64") {
				data = append(data, o)
			}
		}
		out = append(out, cgroupMount{source: g[1], target: target, fstype: g[0], data: strings.Join(data, ","), flags: flags})
	}
	return out
}
