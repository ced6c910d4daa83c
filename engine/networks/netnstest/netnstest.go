// Package netnstest runs a package's tests in a network namespace of their
// own, so that tests of host networking (bridges, taps, nftables, sockets)
// change nothing outside it and reach nothing beyond the namespaces they
// make.
//
// A whole process is moved, not a thread: taps are made in the namespace
// of the process that opens /dev/net/tun, /proc/sys/net is the opener's
// namespace, and listeners the code under test opens must be there too.
// Main re-executes the test binary in a new namespace (internal/netnsrun);
// peer namespaces (a container's, the outside world's) are made with NewNS
// and entered for one call with Do.
package netnstest

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vmctl/vmctl/internal/netnsrun"
)

// Main runs the tests in a new network namespace: as root it re-executes
// the test binary there (internal/netnsrun) and exits with its status;
// elsewhere it runs them as they are, and the tests that need the
// namespace skip (Require).
func Main(m *testing.M) {
	if os.Geteuid() == 0 && !netnsrun.Inside() {
		code, err := netnsrun.Reexec("vmctl-nettest", netnsrun.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "netnstest:", err)
			os.Exit(1)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// Inside reports whether the tests run in a namespace of their own.
func Inside() bool { return netnsrun.Inside() }

// Require skips t unless it runs in a network namespace of its own.
func Require(t testing.TB) {
	t.Helper()
	if !Inside() {
		t.Skip("not root: the test needs a network namespace of its own (run the tests as root)")
	}
}

func loUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// NewNS makes a network namespace with lo up, closed at the end of the
// test.
func NewNS(t testing.TB) netns.NsHandle {
	t.Helper()
	Require(t)
	var ns netns.NsHandle
	err := do(func(orig netns.NsHandle) error {
		var err error
		// netns.New unshares the calling thread into the new namespace.
		if ns, err = netns.New(); err != nil {
			return err
		}
		return loUp()
	})
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// Do runs fn on a thread in ns; sockets fn opens stay in ns.
func Do(ns netns.NsHandle, fn func() error) error {
	return do(func(netns.NsHandle) error {
		if err := netns.Set(ns); err != nil {
			return err
		}
		return fn()
	})
}

// do runs fn on a locked thread and puts the thread back in the process's
// namespace afterwards; a thread that cannot be put back is not unlocked,
// so Go retires it rather than reusing it elsewhere.
func do(fn func(orig netns.NsHandle) error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	ferr := fn(orig)
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("returning to the test's namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Handle returns a netlink handle on ns, closed at the end of the test.
func Handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}
