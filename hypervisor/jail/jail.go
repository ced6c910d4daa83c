// Package jail confines a VMM process the way Firecracker's jailer does,
// once the VM is built and before the guest runs: the process, started in
// mount and pid namespaces of its own, pivots into an empty read-only
// directory, drops every capability and its root identity, and installs a
// seccomp filter per thread kind (seccomp.go). Everything the VM needs
// (/dev/kvm, the VM and vCPU descriptors, guest memory, the kernel and
// initramfs already loaded, disk images, the tap, the console and the
// listening sockets) is open by then, so the jail holds nothing.
package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config says where and as whom the VMM is confined.
type Config struct {
	// Root is an existing empty directory: a read-only tmpfs is mounted
	// on it in the VMM's own mount namespace and becomes its root.
	Root string
	// UID and GID the VMM runs as, other than 0, with no supplementary
	// groups.
	UID, GID int
	// KeepFileCaps keeps user and group 0 with only the capabilities a
	// file server needs to give files the guest's owners and modes
	// (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID), as virtiofsd
	// runs; UID and GID are then unused. A VM that serves host
	// directories needs it.
	KeepFileCaps bool
	// OuterMountNS is an open descriptor of the mount namespace the VMM
	// was started from (its starter's /proc/self/ns/mnt): Enter refuses to
	// run in that namespace, where its mounts and pivot_root would change
	// the host's.
	OuterMountNS int
	// Proc mounts a procfs of the VMM's pid namespace (it shows only the
	// VMM) at /proc in the jail: the 9P server reopens its nodes through
	// /proc/self/fd.
	Proc bool
}

// FileCaps are the capabilities kept with Config.KeepFileCaps.
var FileCaps = []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID}

// ErrNotIsolated is returned by Enter when the process does not run in
// mount and pid namespaces of its own.
var ErrNotIsolated = errors.New("the jail needs its own mount and pid namespaces: start the VMM with CLONE_NEWNS|CLONE_NEWPID and the starter's mount namespace open (see -jail-outer-ns)")

// Enter confines the calling process. The caller is root in fresh mount and
// pid namespaces; on return the process's root is the empty tmpfs, its
// identity cfg's, and no thread holds a capability beyond FileCaps. On
// error the process must exit: it may be half-confined.
func Enter(cfg Config) error {
	if !cfg.KeepFileCaps && (cfg.UID <= 0 || cfg.GID <= 0) {
		return fmt.Errorf("jail: uid %d, gid %d: want an unprivileged user and group", cfg.UID, cfg.GID)
	}
	if err := checkIsolated(cfg.OuterMountNS); err != nil {
		return err
	}
	preload()
	lastCap, err := lastCapability() // the jail has no /proc to read it from
	if err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	unix.Close(cfg.OuterMountNS) // the jail keeps no handle on the host
	if err := pivot(cfg); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := dropPrivileges(cfg, lastCap); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return nil
}

// checkIsolated makes sure the mounts below cannot change the host's: the
// process is pid 1 of a new pid namespace, and its mount namespace is not
// the one outer names (namespaces are the same when their nsfs inodes are).
func checkIsolated(outer int) error {
	if os.Getpid() != 1 || outer < 0 {
		return ErrNotIsolated
	}
	var self, out unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &self); err != nil {
		return fmt.Errorf("%w: %v", ErrNotIsolated, err)
	}
	if err := unix.Fstat(outer, &out); err != nil {
		return fmt.Errorf("%w: outer namespace descriptor %d: %v", ErrNotIsolated, outer, err)
	}
	if self.Dev == out.Dev && self.Ino == out.Ino {
		return ErrNotIsolated
	}
	return nil
}

func pivot(cfg Config) error {
	root := filepath.Clean(cfg.Root)
	if !filepath.IsAbs(root) {
		return fmt.Errorf("root %q is not an absolute path", cfg.Root)
	}
	if ents, err := os.ReadDir(root); err != nil || len(ents) > 0 {
		return fmt.Errorf("root %s: want an existing empty directory (%v)", root, err)
	}
	// Nothing below may propagate back to the namespace we were copied from.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("vmctl-jail", root, "tmpfs", flags, "size=16k,nr_inodes=8,mode=0555"); err != nil {
		return fmt.Errorf("mount the jail's tmpfs on %s: %w", root, err)
	}
	if cfg.Proc {
		p := filepath.Join(root, "proc")
		if err := os.Mkdir(p, 0o555); err != nil {
			return err
		}
		// A procfs of our own pid namespace: /proc/self is this process
		// and no other process is in it.
		if err := unix.Mount("proc", p, "proc", flags, ""); err != nil {
			return fmt.Errorf("mount proc: %w", err)
		}
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	// pivot_root(".", "."): the old root is stacked on the new one, then
	// detached (pivot_root(2) documents the idiom).
	err := unix.PivotRoot(".", ".")
	switch {
	case err == nil:
		if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach the old root: %w", err)
		}
	case errors.Is(err, unix.EINVAL):
		// The root is the initial ramfs (a host booted from an initramfs
		// that never switched root), which cannot be pivoted: move the
		// jail over it and chroot, as switch_root does. The old root stays
		// below, out of reach without CAP_SYS_CHROOT, which goes next.
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move the jail to /: %w", err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot into the jail: %w", err)
		}
	default:
		return fmt.Errorf("pivot_root to %s: %w", root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("make the jail read-only: %w", err)
	}
	return nil
}

// dropPrivileges leaves the process with cfg's identity and capabilities,
// on every thread: the Go runtime applies setres[ug]id and setgroups to all
// threads, and the rest goes through AllThreadsSyscall (no cgo here).
func dropPrivileges(cfg Config, lastCap uintptr) error {
	var keep []uintptr
	if cfg.KeepFileCaps {
		keep = FileCaps
	}
	for c := uintptr(0); c <= lastCap; c++ {
		if slices.Contains(keep, c) {
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); e != 0 {
			if e == unix.ENOTSUP {
				return errors.New("a binary built with cgo cannot change all its threads: build it with CGO_ENABLED=0")
			}
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("clear ambient capabilities: %w", e)
	}
	if cfg.KeepFileCaps {
		if err := setCaps(keep); err != nil {
			return err
		}
	} else {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setresgid(cfg.GID, cfg.GID, cfg.GID); err != nil {
			return fmt.Errorf("setresgid %d: %w", cfg.GID, err)
		}
		// Leaving uid 0 on all three ids clears the permitted, effective
		// and ambient sets (capabilities(7)).
		if err := syscall.Setresuid(cfg.UID, cfg.UID, cfg.UID); err != nil {
			return fmt.Errorf("setresuid %d: %w", cfg.UID, err)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return fmt.Errorf("no_new_privs: %w", e)
	}
	// The kernel forgets the parent-death signal when credentials change:
	// a VMM meant to die with its engine must be told again. (Should the
	// engine die in the microseconds between, the VMM lives on until the
	// next engine on its exec root ends or adopts it.)
	if parentDeathSignal != 0 {
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(parentDeathSignal), 0); e != 0 {
			return fmt.Errorf("parent-death signal: %w", e)
		}
	}
	return nil
}

// parentDeathSignal is the signal the process gets when its parent dies
// (PR_SET_PDEATHSIG, set by the engine that started it), read during
// package initialisation: the runtime then keeps the main goroutine on the
// main thread, the only one the signal was set on.
var parentDeathSignal = func() int {
	var sig int32
	if err := unix.Prctl(unix.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&sig)), 0, 0, 0); err != nil {
		return 0
	}
	return int(sig)
}()

// setCaps sets the permitted and effective sets of every thread to keep
// and the inheritable set to nothing.
func setCaps(keep []uintptr) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for _, c := range keep {
		data[c/32].Permitted |= 1 << (c % 32)
		data[c/32].Effective |= 1 << (c % 32)
	}
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

// lastCapability is the highest capability this kernel knows.
func lastCapability() (uintptr, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read cap_last_cap: %w", err)
	}
	var n uintptr
	if _, err := fmt.Sscan(string(b), &n); err != nil {
		return 0, fmt.Errorf("cap_last_cap %q: %w", b, err)
	}
	return n, nil
}
