package machine

import (
	"errors"
	"fmt"
	"hash/fnv"
	gonet "net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/hypervisor/virtio/net"
)

// Net is a virtio-net device on a host tap interface.
type Net struct {
	// Tap is the name of an existing tap interface, created (with
	// IFF_VNET_HDR allowed, as `ip tuntap add ... vnet_hdr` does) and
	// attached to a bridge by the engine. The machine does not create one.
	Tap string
	// MAC is the guest's address; zero means one derived from Tap.
	MAC [6]byte
	// MTU is offered to the guest (net.MinMTU to net.MaxMTU); 0 means the
	// tap's own MTU. It may not exceed the tap's MTU: larger frames would
	// be dropped on the host side.
	MTU int
	// Detached puts the device on a tap of its own instead of Tap: made
	// by the machine, attached to nothing, down, and gone with the VMM. A
	// VM saved to be restored (a template) has such a NIC: the same
	// device, with the same features, as its restored copies' on their
	// real taps. It needs CAP_NET_ADMIN.
	Detached bool
}

// ErrNoTap means the configured tap interface does not exist.
var ErrNoTap = errors.New("tap interface does not exist")

// validate checks n's fields that need no host access.
func (n *Net) validate() error {
	if n.Detached {
		if n.Tap != "" {
			return fmt.Errorf("a detached NIC has no tap name (got %q)", n.Tap)
		}
	} else if n.Tap == "" || len(n.Tap) >= unix.IFNAMSIZ {
		return fmt.Errorf("tap name %q: must be 1 to %d bytes", n.Tap, unix.IFNAMSIZ-1)
	}
	if n.MTU != 0 && (n.MTU < net.MinMTU || n.MTU > net.MaxMTU) {
		return fmt.Errorf("mtu %d: must be %d to %d", n.MTU, net.MinMTU, net.MaxMTU)
	}
	return nil
}

// openTap attaches to the existing tap interface of n for a virtio-net
// device: no packet info, a vnet header on every frame, non-blocking for
// Go's poller. It returns the file and the MTU to offer the guest. Every
// error is one line that says what to do.
func openTap(n *Net) (*os.File, int, error) {
	if n.Detached {
		return openDetachedTap(n)
	}
	name := n.Tap
	iface, err := gonet.InterfaceByName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("tap %s: %w: create it first (ip tuntap add dev %s mode tap vnet_hdr)", name, ErrNoTap, name)
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = iface.MTU
	}
	if mtu > iface.MTU {
		return nil, 0, fmt.Errorf("tap %s: mtu %d is larger than the tap's MTU %d: raise the tap's (ip link set dev %s mtu %d) or lower -mtu",
			name, mtu, iface.MTU, name, mtu)
	}
	if mtu < net.MinMTU || mtu > net.MaxMTU {
		return nil, 0, fmt.Errorf("tap %s: its MTU %d cannot be offered to a guest (%d to %d)", name, mtu, net.MinMTU, net.MaxMTU)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, 0, fmt.Errorf("tap %s is already in use by another process", name)
		case errors.Is(err, unix.EPERM):
			return nil, 0, fmt.Errorf("tap %s: not permitted to attach (the tap's owner or group, or CAP_NET_ADMIN)", name)
		case errors.Is(err, unix.EINVAL):
			return nil, 0, fmt.Errorf("tap %s is not a single-queue tap interface (TUNSETIFF: %v)", name, err)
		}
		return nil, 0, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	// Had the tap disappeared since the lookup, TUNSETIFF made a new one,
	// attached to nothing: refuse it (closing the file removes it).
	if now, err := gonet.InterfaceByName(name); err != nil || now.Index != iface.Index {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("tap %s: %w (it went away while attaching)", name, ErrNoTap)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), mtu, nil
}

// openDetachedTap makes a tap of its own for n: the kernel names it, and
// it is not persistent, so it goes when the file is closed.
func openDetachedTap(n *Net) (*os.File, int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("detached NIC: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("detached NIC: TUNSETIFF: %w (needs CAP_NET_ADMIN)", err)
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = 1500 // a new tap's
	}
	return os.NewFile(uintptr(fd), "tap:"+ifr.Name()), mtu, nil
}

// macFor derives a stable, locally administered unicast MAC from a name.
func macFor(name string) [6]byte {
	h := fnv.New32a()
	h.Write([]byte(name))
	s := h.Sum32()
	return [6]byte{0x02, 0x76, byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}
}
