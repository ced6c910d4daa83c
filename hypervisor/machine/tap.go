package machine

import (
	"fmt"
	"hash/fnv"
	"os"

	"golang.org/x/sys/unix"
)

// Net is a virtio-net device on a host tap interface.
type Net struct {
	// Tap is the name of an existing tap interface (created and attached
	// to a bridge by the engine), or a new one the kernel creates.
	Tap string
	// MAC is the guest's address; zero means one derived from Tap.
	MAC [6]byte
	// MTU, if not 0, is offered to the guest as its MTU (68 to 65535).
	MTU int
}

// tapVnetHdrSize is the vnet header size set on the tap: 12 bytes, the
// virtio 1.x header with num_buffers, so frames need no header rewriting.
const tapVnetHdrSize = 12

// openTap opens tap interface name for a virtio-net device: no packet
// info, a vnet header on every frame, non-blocking for Go's poller.
func openTap(name string) (*os.File, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap name %q: must be 1 to %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, tapVnetHdrSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// macFor derives a stable, locally administered unicast MAC from a name.
func macFor(name string) [6]byte {
	h := fnv.New32a()
	h.Write([]byte(name))
	s := h.Sum32()
	return [6]byte{0x02, 0x76, byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}
}
