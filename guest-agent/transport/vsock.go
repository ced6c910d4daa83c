package transport

import (
	"fmt"
	"net"
	"os"

	"github.com/mdlayher/vsock"
)

// AgentVsockPort is the vsock port the agent listens on.
const AgentVsockPort = 1024

// HasVsock reports whether the guest kernel offers a vsock transport.
func HasVsock() bool {
	_, err := os.Stat("/dev/vsock")
	return err == nil
}

// ListenVsock listens on the given vsock port for any context ID.
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return l, nil
}
