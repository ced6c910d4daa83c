package machine

import (
	"errors"
	gonet "net"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// createTap makes a persistent tap, with mtu unless 0, in the calling
// thread's network namespace; the test's cleanup removes it.
func createTap(t *testing.T, name string, mtu int) {
	t.Helper()
	if err := makeTap(name, mtu); err != nil {
		t.Fatalf("creating tap %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := setPersist(name, false); err != nil {
			t.Errorf("removing tap %s: %v", name, err)
		}
	})
}

func makeTap(name string, mtu int) error {
	if err := setPersist(name, true); err != nil {
		return err
	}
	if mtu == 0 {
		return nil
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sock)
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint32(uint32(mtu))
	return unix.IoctlIfreq(sock, unix.SIOCSIFMTU, ifr)
}

// setPersist attaches to (or creates) tap name and sets its persistence;
// a tap that is not persistent disappears when the attaching file closes.
func setPersist(name string, persist bool) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return err
	}
	v := 0
	if persist {
		v = 1
	}
	return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, v)
}

// inNewNetns runs fn on a thread of its own in a new network namespace;
// the thread is never unlocked, so it ends with fn, and the namespace with
// its taps goes away.
func inNewNetns(t *testing.T, fn func()) {
	t.Helper()
	if unix.Geteuid() != 0 {
		t.Skip("not root: taps in a network namespace need CAP_NET_ADMIN")
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		defer close(done)
		fn()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestOpenTap(t *testing.T) {
	inNewNetns(t, func() {
		if err := makeTap("vt-mtu9000", 9000); err != nil {
			t.Error(err)
			return
		}
		f, mtu, err := openTap(&Net{Tap: "vt-mtu9000"})
		if err != nil {
			t.Errorf("openTap of an existing tap: %v", err)
			return
		}
		if mtu != 9000 {
			t.Errorf("openTap without an MTU = %d, want the tap's 9000", mtu)
		}
		// The tap is ours now: a second VMM cannot attach.
		_, _, err = openTap(&Net{Tap: "vt-mtu9000"})
		if err == nil || !strings.Contains(err.Error(), "already in use") {
			t.Errorf("openTap of a tap in use = %v, want 'already in use'", err)
		}
		f.Close()
		if _, mtu, err := openTap(&Net{Tap: "vt-mtu9000", MTU: 1500}); err != nil || mtu != 1500 {
			t.Errorf("openTap with -mtu 1500 on a 9000 tap = %d, %v; want 1500", mtu, err)
		}
	})
}

func TestOpenTapErrors(t *testing.T) {
	inNewNetns(t, func() {
		if err := makeTap("vt-small", 1400); err != nil {
			t.Error(err)
			return
		}
		tests := []struct {
			net  Net
			want string
			is   error
		}{
			{Net{Tap: "vt-nosuch"}, "create it first", ErrNoTap},
			{Net{Tap: "vt-small", MTU: 1500}, "larger than the tap's MTU 1400", nil},
			{Net{Tap: "lo", MTU: 1500}, "not a single-queue tap", nil},
		}
		for _, tt := range tests {
			f, _, err := openTap(&tt.net)
			if err == nil {
				f.Close()
				t.Errorf("openTap(%+v) succeeded", tt.net)
				continue
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("openTap(%+v) = %q, want one line saying %q", tt.net, err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("openTap(%+v) = %v, want it to wrap %v", tt.net, err, tt.is)
			}
		}
		// openTap never creates the tap it was told to use.
		if _, err := gonet.InterfaceByName("vt-nosuch"); err == nil {
			t.Error("openTap created the missing tap")
		}
	})
}

// A detached NIC's tap exists while its file is open, attached to
// nothing, and is gone when it is closed.
func TestOpenDetachedTap(t *testing.T) {
	inNewNetns(t, func() {
		f, mtu, err := openTap(&Net{Detached: true})
		if err != nil {
			t.Errorf("openTap of a detached NIC: %v", err)
			return
		}
		name := strings.TrimPrefix(f.Name(), "tap:")
		iface, err := gonet.InterfaceByName(name)
		if err != nil || mtu != 1500 {
			t.Errorf("detached tap %q: %v, mtu %d; want an interface with MTU 1500", name, err, mtu)
		} else if iface.Flags&gonet.FlagUp != 0 {
			t.Errorf("detached tap %s is up", name)
		}
		f.Close()
		if _, err := gonet.InterfaceByName(name); err == nil {
			t.Errorf("detached tap %s outlived its file", name)
		}
	})
	if err := (&Net{Detached: true, Tap: "x"}).validate(); err == nil {
		t.Error("a detached NIC with a tap name was accepted")
	}
}
