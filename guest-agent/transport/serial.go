// Package transport provides the listeners the agent serves ttrpc on: a
// vsock port, and a virtio-serial port presented as a net.Listener.
//
// A virtio-serial port is one byte stream with no notion of connections: the
// listener hands the opened port out as one net.Conn, and hands it out again
// after the host side disconnected and came back. The package does not know
// about ttrpc or the agent's service.
package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FindSerialPort returns the device path (devDir/vportNpM) of the
// virtio-serial port whose sysfs name (sysDir/vportNpM/name) equals name.
func FindSerialPort(sysDir, devDir, name string) (string, error) {
	entries, err := os.ReadDir(sysDir)
	if err != nil {
		return "", fmt.Errorf("find serial port %q: %w", name, err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join(devDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("find serial port %q: %w", name, os.ErrNotExist)
}

// SerialListener hands out one virtio-serial port as a net.Conn at a time.
type SerialListener struct {
	path string
	open func() (*os.File, error)
	// connected reports whether the host side of the port is open.
	connected func(*os.File) (bool, error)
	// wake is signalled when the host's connection state may have changed
	// (SIGIO from the virtio_console driver); retry bounds the wait when no
	// signal comes.
	wake  <-chan os.Signal
	retry time.Duration

	mu      sync.Mutex
	current *serialConn // guarded by mu
	free    chan struct{}
	done    chan struct{}
	closed  bool
}

// ListenSerial returns a listener on the virtio-serial device at path.
func ListenSerial(path string) *SerialListener {
	wake := make(chan os.Signal, 1)
	signal.Notify(wake, syscall.SIGIO)
	l := newSerialListener(path, func() (*os.File, error) {
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, err
		}
		// Ask the driver for SIGIO on host connect/disconnect, so waiting
		// for the host costs nothing.
		if err := withFd(f, func(fd int) error {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETOWN, os.Getpid()); err != nil {
				return err
			}
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			if err != nil {
				return err
			}
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_ASYNC)
			return err
		}); err != nil {
			f.Close()
			return nil, fmt.Errorf("enable SIGIO on %s: %w", path, err)
		}
		return f, nil
	}, hostConnected, wake, 2*time.Second)
	return l
}

func newSerialListener(path string, open func() (*os.File, error), connected func(*os.File) (bool, error),
	wake <-chan os.Signal, retry time.Duration) *SerialListener {
	l := &SerialListener{
		path: path, open: open, connected: connected, wake: wake, retry: retry,
		free: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	l.free <- struct{}{}
	return l
}

// withFd runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode and take it off Go's poller.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// hostConnected polls the port without blocking: the virtio_console driver
// reports POLLHUP for as long as the host side is closed (and a read would
// return EOF at once), so poll cannot be used to wait for the host.
func hostConnected(f *os.File) (bool, error) {
	var revents int16
	err := withFd(f, func(fd int) error {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			revents = fds[0].Revents
			return err
		}
	})
	if err != nil {
		return false, err
	}
	if revents&unix.POLLNVAL != 0 {
		return false, errors.New("port descriptor is invalid")
	}
	return revents&unix.POLLHUP == 0, nil
}

// Accept waits until the previous conn was closed and the host side is
// connected, then returns the port as a conn.
func (l *SerialListener) Accept() (net.Conn, error) {
	// One conn at a time: the port is one stream.
	select {
	case <-l.free:
	case <-l.done:
		return nil, net.ErrClosed
	}
	conn, err := l.waitForHost()
	if err != nil {
		l.free <- struct{}{}
		return nil, err
	}
	return conn, nil
}

func (l *SerialListener) waitForHost() (*serialConn, error) {
	for {
		f, err := l.open()
		if err != nil {
			// The device exists (we found it by name); a failing open is
			// most likely EBUSY from a close still in progress. Retry
			// without spinning.
			if !l.sleep() {
				return nil, net.ErrClosed
			}
			continue
		}
		for {
			ok, err := l.connected(f)
			if err != nil {
				f.Close()
				break
			}
			if ok {
				c := &serialConn{f: f, l: l}
				l.mu.Lock()
				if l.closed {
					l.mu.Unlock()
					f.Close()
					return nil, net.ErrClosed
				}
				l.current = c
				l.mu.Unlock()
				return c, nil
			}
			if !l.sleep() {
				f.Close()
				return nil, net.ErrClosed
			}
		}
	}
}

// sleep waits for a wake-up signal or the retry interval; false means the
// listener was closed.
func (l *SerialListener) sleep() bool {
	t := time.NewTimer(l.retry)
	defer t.Stop()
	select {
	case <-l.wake:
	case <-t.C:
	case <-l.done:
		return false
	}
	return true
}

// Close stops Accept and closes the conn handed out, if any.
func (l *SerialListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	c := l.current
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
	return nil
}

// Addr names the device.
func (l *SerialListener) Addr() net.Addr { return serialAddr(l.path) }

type serialAddr string

func (a serialAddr) Network() string { return "virtio-serial" }
func (a serialAddr) String() string  { return string(a) }

// serialConn is the opened port. A read that returns EOF means the host side
// went away; the server then closes the conn, which frees the listener to
// wait for the next host connection.
type serialConn struct {
	f    *os.File
	l    *SerialListener
	once sync.Once
}

func (c *serialConn) Read(p []byte) (int, error)  { return c.f.Read(p) }
func (c *serialConn) Write(p []byte) (int, error) { return c.f.Write(p) }

func (c *serialConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.f.Close()
		c.l.mu.Lock()
		if c.l.current == c {
			c.l.current = nil
		}
		c.l.mu.Unlock()
		c.l.free <- struct{}{}
	})
	return err
}

func (c *serialConn) LocalAddr() net.Addr                { return serialAddr(c.l.path) }
func (c *serialConn) RemoteAddr() net.Addr               { return serialAddr("host") }
func (c *serialConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *serialConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *serialConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }
