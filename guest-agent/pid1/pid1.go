// Package pid1 does what the guest's init must do before and after serving
// the agent: mount the kernel filesystems, enable cgroup v2 controllers,
// make the root a mount that pivot_root can leave, reap orphans, and end the
// VM by rebooting (the host runs the guest with reboot=t and -no-reboot, so
// a reboot ends the VM).
//
// It does not start containers or serve requests; that is the agent's job.
package pid1

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/netif"
)

// mount is one entry of the boot-time mount table.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// bootMounts are mounted in order by Setup. Every one of them is needed by
// the container runtime: devtmpfs for the disks and device nodes, devpts for
// terminals, cgroup2 for resource limits.
var bootMounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
}

// CgroupControllers are enabled for the children of the cgroup root, so a
// container's cgroup can limit memory, cpu and pids, and counts its block
// I/O (io.stat, for docker stats). One the kernel lacks is left out.
var CgroupControllers = []string{"cpu", "memory", "pids", "io"}

// Setup prepares the guest. It is meant for PID 1 of a VM and refuses to run
// anywhere else, because it mounts over the caller's /dev and /proc.
func Setup() error {
	if os.Getpid() != 1 {
		return errors.New("pid1: Setup must run as PID 1 of the guest")
	}
	if err := makeRootMovable(); err != nil {
		return err
	}
	for _, m := range bootMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("pid1: create %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY {
			return fmt.Errorf("pid1: mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// /dev/ptmx from devtmpfs belongs to the initial devpts instance that
	// the kernel may not have mounted; point it at ours.
	_ = os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return fmt.Errorf("pid1: link /dev/ptmx: %w", err)
	}
	for name, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if _, err := os.Lstat(name); err != nil {
			_ = os.Symlink(target, name)
		}
	}
	if err := EnableControllers("/sys/fs/cgroup", CgroupControllers); err != nil {
		return err
	}
	// The kernel log is the guest's, not a container's: reading it takes
	// CAP_SYSLOG, which containers do not have (Docker's seccomp profile
	// denies syslog(2) for the same end).
	if err := os.WriteFile("/proc/sys/kernel/dmesg_restrict", []byte("1"), 0); err != nil {
		return fmt.Errorf("pid1: restrict the kernel log: %w", err)
	}
	// The agent is the last thing the OOM killer may take: a container
	// that exhausts its VM's memory loses its own processes.
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		return fmt.Errorf("pid1: oom_score_adj: %w", err)
	}
	// Loopback is optional for the agent itself; containers with their own
	// network namespace bring up their own lo.
	_ = netif.LinkUp("lo")
	return nil
}

// makeRootMovable turns the initramfs root into an ordinary mount. The
// kernel's initial rootfs has no parent mount, and pivot_root(2) refuses to
// move it (EINVAL), so every container's pivot_root would fail. Bind-mounting
// the root onto a directory, moving that mount over "/" and chrooting into it
// gives a root with a parent, as switch_root does for a real root disk.
func makeRootMovable() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("pid1: statfs /: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return nil
	}
	const dir = "/.root"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pid1: create %s: %w", dir, err)
	}
	if err := unix.Mount("/", dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pid1: bind / on %s: %w", dir, err)
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("pid1: chdir %s: %w", dir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("pid1: move root mount: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("pid1: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("pid1: chdir /: %w", err)
	}
	return nil
}

// EnableControllers writes "+name" for each controller into the
// cgroup.subtree_control of root, so child cgroups get those interface files.
func EnableControllers(root string, controllers []string) error {
	avail, err := os.ReadFile(root + "/cgroup.controllers")
	if err != nil {
		return fmt.Errorf("pid1: read cgroup controllers: %w", err)
	}
	have := strings.Fields(string(avail))
	var enable []string
	for _, c := range controllers {
		for _, h := range have {
			if h == c {
				enable = append(enable, "+"+c)
			}
		}
	}
	if len(enable) == 0 {
		return nil
	}
	if err := os.WriteFile(root+"/cgroup.subtree_control", []byte(strings.Join(enable, " ")), 0); err != nil {
		return fmt.Errorf("pid1: enable cgroup controllers %v: %w", enable, err)
	}
	return nil
}
