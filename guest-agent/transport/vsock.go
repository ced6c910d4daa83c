package transport

import (
	"fmt"
	"net"
	"os"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// HasVsock reports whether the guest can reach its host over vsock. The
// vsock core alone (/dev/vsock, PF_VSOCK) accepts listeners even with no
// device behind it; only a guest-to-host transport gives the guest a context
// ID of its own (3 or more; VMADDR_CID_ANY means none).
func HasVsock() bool {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		return false
	}
	cid, err := vsock.ContextID()
	return err == nil && usableCID(cid)
}

func usableCID(cid uint32) bool {
	return cid >= 3 && cid != unix.VMADDR_CID_ANY
}

// ListenVsock listens on the given vsock port for any context ID.
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return l, nil
}
