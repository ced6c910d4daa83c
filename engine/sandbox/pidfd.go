package sandbox

import (
	"errors"

	"golang.org/x/sys/unix"
)

// WaitPidfd blocks until the process behind pidfd has ended. A pidfd
// becomes readable then, whether or not the process's parent has reaped it,
// so drivers use it for VMM processes they adopted and cannot wait for.
func WaitPidfd(pidfd int) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}
