package net

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxIovecs is the kernel's limit on the buffers of one readv or writev
// (UIO_MAXIOV).
const maxIovecs = 1024

// tapControl sets the tap state that follows from the negotiation. The
// device uses ioctls on the tap; tests substitute a recorder.
type tapControl interface {
	// setVnetHdrSize is TUNSETVNETHDRSZ: the vnet header size on every
	// frame read or written.
	setVnetHdrSize(n int) error
	// setOffload is TUNSETOFFLOAD: which offloaded frames the host kernel
	// may hand the reader of the tap.
	setOffload(flags int) error
}

// ioctlTap configures a real tap.
type ioctlTap struct{ f *os.File }

func (t ioctlTap) setVnetHdrSize(n int) error {
	return t.control(func(fd int) error { return unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, n) })
}

func (t ioctlTap) setOffload(flags int) error {
	return t.control(func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags) })
}

func (t ioctlTap) control(fn func(fd int) error) error {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = fn(int(fd)) }); err != nil {
		return err
	}
	return ioErr
}

// readFrame reads one frame (vnet header and Ethernet frame) into iovs,
// scattered in order. While the tap is empty it calls idle, then sleeps in
// the runtime's poller until a frame arrives or the read deadline passes
// (os.ErrDeadlineExceeded). n may exceed the room in iovs: the tap reports
// a frame's length even when it did not fit.
func readFrame(rc syscall.RawConn, iovs [][]byte, idle func()) (n int, err error) {
	perr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Readv(int(fd), iovs)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				idle()
				return false
			}
			return true
		}
	})
	if perr != nil {
		return 0, perr
	}
	return n, err
}

// writeFrame writes one frame gathered from iovs. A tap takes a frame
// whole or not at all.
func writeFrame(rc syscall.RawConn, iovs [][]byte) (n int, err error) {
	perr := rc.Write(func(fd uintptr) bool {
		for {
			n, err = unix.Writev(int(fd), iovs)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false
			}
			return true
		}
	})
	if perr != nil {
		return 0, perr
	}
	return n, err
}
