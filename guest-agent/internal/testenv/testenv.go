// Package testenv builds what the agent's tests run containers on: a
// busybox root filesystem, ext4 disk images, loop devices and a cgroup v2
// hierarchy. Each helper skips the test, naming what is missing, when the
// machine cannot provide it. It is for tests only.
package testenv

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Busybox is the static busybox the root filesystems are made from.
const Busybox = "/bin/busybox"

// Applets are linked to busybox in every root made here.
var Applets = []string{"sh", "echo", "hostname", "tty", "sleep", "cat", "ls", "true", "false", "id",
	"readlink", "kill", "test", "env", "stty", "head", "dd", "mkdir", "rm", "touch", "wc", "seq", "unshare", "mknod", "grep"}

// RequireRoot skips tests that create namespaces, mounts and cgroups.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces, mounts and cgroups")
	}
}

// BusyboxRoot fills dir (a new temp dir if empty) with /bin/busybox, applet
// links and the usual empty directories, and returns it.
func BusyboxRoot(t testing.TB, dir string) string {
	t.Helper()
	if _, err := os.Stat(Busybox); err != nil {
		t.Skipf("needs %s (busybox-static): %v", Busybox, err)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := CopyFile(Busybox, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range Applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// CopyFile copies src to dst with the given mode.
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Ext4Image makes an ext4 image of the given size from the contents of src
// (empty src: an empty filesystem) and returns its path.
func Ext4Image(t testing.TB, src, size string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.ext4")
	args := []string{"-q", "-F"}
	if src != "" {
		args = append(args, "-d", src)
	}
	args = append(args, img, size)
	if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		t.Skipf("needs mkfs.ext4 (e2fsprogs): %v: %s", err, out)
	}
	return img
}

// Loop attaches img to a free loop device, detached at cleanup.
func Loop(t testing.TB, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("needs loop devices (losetup): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// FakeSysBlock makes a /sys/block stand-in where each device name (such as
// loop3) has the given serial.
func FakeSysBlock(t testing.TB, serials map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for dev, serial := range serials {
		if err := os.MkdirAll(filepath.Join(dir, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if serial == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, dev, "serial"), []byte(serial), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// CgroupRoot returns a cgroup v2 directory for test cgroups. A host with a
// hybrid v1/v2 layout has no cgroup2 at /sys/fs/cgroup; a private cgroup2
// mount of the same hierarchy, unmounted at cleanup, works there.
func CgroupRoot(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "/sys/fs/cgroup"
	}
	dir := t.TempDir()
	if err := unix.Mount("cgroup2", dir, "cgroup2", 0, ""); err != nil {
		t.Skipf("needs a cgroup2 hierarchy: mount cgroup2: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// NetNS moves the calling goroutine into a new, empty network namespace
// (only lo, down), for tests that change interfaces, addresses and routes.
// It locks the goroutine to its OS thread and never unlocks it: the thread,
// the only one in that namespace, ends with the test's goroutine, and the
// namespace with it. Sockets opened and commands started from this
// goroutine live in the namespace; subtests (other goroutines) do not.
func NetNS(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("needs network namespaces: unshare(CLONE_NEWNET): %v", err)
	}
}

// Veth creates a veth pair in the caller's network namespace (see NetNS)
// with iproute2, naming both ends and giving the first the MAC mac.
func Veth(t testing.TB, name, peer, mac string) {
	t.Helper()
	args := []string{"link", "add", name}
	if mac != "" {
		args = append(args, "address", mac)
	}
	args = append(args, "type", "veth", "peer", "name", peer)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Skipf("needs veth links (ip link add ... type veth): %v: %s", err, out)
	}
}

// DockerCapabilities is Docker's default capability set (the engine's
// DefaultCapabilities), which Docker's seccomp profile is made for.
var DockerCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}
