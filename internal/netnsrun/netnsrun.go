// Package netnsrun runs the current program again inside a network
// namespace of its own, for test and benchmark programs whose children
// (vmctl, vmctld, QEMU, servers) must keep every bridge, tap, address and
// rule they make off the machine's own network: the namespace is made with
// only lo up, and its deletion takes whatever was left in it.
//
// It shells out to iproute2 (`ip netns`), which the project's tests already
// need, so the namespace also has the /etc/netns and /sys views `ip netns
// exec` gives. It does not set up any link besides lo.
package netnsrun

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Env is set in the program run inside the namespace, to the namespace's
// name; OuterEnv to the network namespace it was started from
// (net:[inode]).
const (
	Env      = "VMCTL_NETNS"
	OuterEnv = "VMCTL_OUTER_NETNS"
)

// Inside reports whether this program already runs in a namespace of
// Reexec's.
func Inside() bool { return os.Getenv(Env) != "" }

// Options shape the namespace.
type Options struct {
	// ResolvConf, if set, is the namespace's /etc/resolv.conf: `ip netns
	// exec` mounts /etc/netns/<name>/resolv.conf over the machine's, so
	// resolvers the program's children read are ones the program itself
	// runs in namespaces it made, never the machine's.
	ResolvConf string
}

// Reexec runs os.Args again under `ip netns exec` in a new namespace named
// prefix-<pid> and returns its exit status (128+N if signal N ended it);
// the namespace is deleted afterwards. SIGINT, SIGTERM and SIGQUIT are
// passed on. The caller exits with the status.
func Reexec(prefix string, o Options) (int, error) {
	name := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("create network namespace %s: %v: %s", name, err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if o.ResolvConf != "" {
		dir := filepath.Join("/etc/netns", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(o.ResolvConf), 0o644); err != nil {
			return 0, err
		}
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("lo up in %s: %v: %s", name, err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), Env+"="+name)
	if ns, err := os.Readlink("/proc/self/ns/net"); err == nil {
		cmd.Env = append(cmd.Env, OuterEnv+"="+ns)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// go test's timeout and an interrupt reach this process: pass them on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}
