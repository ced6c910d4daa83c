// Package virtiofsd runs the virtio-fs daemon that serves one host
// directory to one VM (a container's bind mount): the vhost-user backend a
// VMM's vhost-user-fs device connects to.
//
// The daemon is the host's own (Debian's /usr/lib/qemu/virtiofsd from
// qemu-system-common, or the virtiofsd package's /usr/libexec/virtiofsd):
// it sandboxes itself (namespaces and pivot_root into the shared
// directory, seccomp), resolves every guest path below that directory, and
// runs each request with the guest's owner. A read-only share is served
// from a read-only bind mount of the directory made in a mount namespace of
// the daemon's own (unshare), so the host kernel refuses every change
// whatever the daemon is asked.
//
// The listening socket is bound here and inherited (--fd), so the VMM can
// connect the moment it starts. The daemon serves one connection and exits
// when the VMM closes it.
package virtiofsd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// candidates are where Debian installs the daemon, newest first.
var candidates = []string{"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"}

// Binary finds the daemon: virtiofsd in PATH, else Debian's locations.
func Binary() (string, error) {
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p, nil
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("virtiofsd not found: bind mounts need it (install qemu-system-common or virtiofsd)")
}

// flavour tells the two daemons' command lines apart: the C one of QEMU
// 7.2 takes -o options, the Rust one long options.
var flavour struct {
	sync.Once
	rust map[string]bool
}

func isRust(bin string) bool {
	flavour.Do(func() { flavour.rust = map[string]bool{} })
	if v, ok := flavour.rust[bin]; ok {
		return v
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	v := strings.Contains(string(out), "--shared-dir")
	flavour.rust[bin] = v
	return v
}

// Config is one share's daemon.
type Config struct {
	// Dir is the shared directory (resolved: no symlinks left).
	Dir      string
	ReadOnly bool
	// Socket is the vhost-user socket path the VMM connects to.
	Socket string
	// Log receives the daemon's stderr.
	Log string
	// SysProcAttr, if set, is the daemon's (a session of its own for VMs
	// that outlive the engine).
	SysProcAttr *syscall.SysProcAttr
}

// Daemon is a running virtiofsd.
type Daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start binds cfg.Socket and starts the daemon on it.
func Start(bin string, cfg Config) (*Daemon, error) {
	os.Remove(cfg.Socket)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(cfg.Socket)
		return nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	defer f.Close()
	logf, err := os.OpenFile(cfg.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		os.Remove(cfg.Socket)
		return nil, err
	}
	defer logf.Close()

	args := daemonArgs(bin, cfg.Dir, 3)
	name := bin
	if cfg.ReadOnly {
		// A mount namespace of the daemon's own, where the directory is
		// a read-only bind mount of itself; it goes with the daemon.
		name = "unshare"
		args = append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c",
			`mount --bind -o ro -- "$0" "$0" && exec "$@"`, cfg.Dir, bin}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{f} // fd 3
	cmd.SysProcAttr = cfg.SysProcAttr
	if err := cmd.Start(); err != nil {
		os.Remove(cfg.Socket)
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	d := &Daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// daemonArgs serves dir on the listening socket at fd: cache=auto (the
// guest caches attributes and directory entries for a second and
// revalidates after, and reads file data through the page cache, dropped
// when the file changed on the host), namespace sandbox.
func daemonArgs(bin, dir string, fd int) []string {
	if isRust(bin) {
		return []string{"--fd", fmt.Sprint(fd), "--shared-dir", dir, "--cache", "auto", "--sandbox", "namespace"}
	}
	return []string{fmt.Sprintf("--fd=%d", fd), "-o", "source=" + dir, "-o", "cache=auto", "-o", "sandbox=namespace"}
}

// Stop kills the daemon if it still runs and waits for it.
func (d *Daemon) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Kill()
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
}

// Exited reports whether the daemon is gone, and its status.
func (d *Daemon) Exited() (bool, string) {
	select {
	case <-d.done:
		return true, d.cmd.ProcessState.String()
	default:
		return false, ""
	}
}

// SocketName is the socket of a VM's i-th share in its state directory.
func SocketName(stateDir string, i int) string {
	return filepath.Join(stateDir, fmt.Sprintf("fs%d.sock", i))
}
