package pid1

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
)

// kernelMounts are the guest's own filesystems; Shutdown leaves them alone
// because nothing on them needs flushing and the agent still uses them.
var kernelMounts = map[string]bool{
	"/": true, "/proc": true, "/sys": true, "/dev": true, "/dev/pts": true,
	"/dev/shm": true, "/run": true, "/tmp": true, "/sys/fs/cgroup": true,
}

// UnmountAll unmounts every mount listed in mountinfo that is not one of the
// guest's own kernel filesystems, deepest first: container overlays and the
// disks under them. It keeps going after a failure and returns the errors.
func UnmountAll(mountinfo string) error {
	f, err := os.Open(mountinfo)
	if err != nil {
		return fmt.Errorf("pid1: read mounts: %w", err)
	}
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mountinfo: id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		target := unescapeOctal(fields[4])
		if !kernelMounts[target] {
			targets = append(targets, target)
		}
	}
	f.Close()
	// Longer paths first: children before their parents.
	sort.SliceStable(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var errs []error
	for _, t := range targets {
		if err := unix.Unmount(t, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			// A busy mount still gets detached so the disk is released
			// as soon as its last user is gone.
			if err2 := unix.Unmount(t, unix.MNT_DETACH); err2 != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
			}
		}
	}
	return errors.Join(errs...)
}

// unescapeOctal undoes mountinfo's \040-style escaping of spaces and tabs.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			o := s[i+1 : i+4]
			if o[0] >= '0' && o[0] <= '3' && o[1] >= '0' && o[1] <= '7' && o[2] >= '0' && o[2] <= '7' {
				b.WriteByte((o[0]-'0')<<6 | (o[1]-'0')<<3 | (o[2] - '0'))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Reboot syncs, unmounts container storage and restarts the machine, which
// ends the VM. It only returns on failure, and refuses to run outside PID 1
// so that a test can never reboot the machine it runs on.
func Reboot() error {
	if os.Getpid() != 1 {
		return errors.New("pid1: refusing to reboot: not PID 1")
	}
	unix.Sync()
	if err := UnmountAll("/proc/self/mountinfo"); err != nil {
		Logf("shutdown: %v", err)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("pid1: reboot: %w", err)
	}
	return nil
}

// HasKernelFlag reports whether the kernel command line in cmdline (the
// contents of /proc/cmdline) carries flag, either bare or as flag=value.
func HasKernelFlag(cmdline, flag string) bool {
	for _, w := range strings.Fields(cmdline) {
		if w == flag || strings.HasPrefix(w, flag+"=") {
			return true
		}
	}
	return false
}

// Selftest prints contract.SelftestReadyLine to the console and reboots if
// the kernel command line carries contract.SelftestFlag (a bare-boot
// reference for benchmarks); otherwise it returns false and does nothing.
func Selftest() bool {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil || !HasKernelFlag(string(cmdline), contract.SelftestFlag) {
		return false
	}
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		fmt.Fprintln(c, contract.SelftestReadyLine)
		c.Close()
	} else {
		fmt.Fprintln(os.Stderr, contract.SelftestReadyLine)
	}
	if err := Reboot(); err != nil {
		Logf("selftest: %v", err)
	}
	return true
}
