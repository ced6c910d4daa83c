// Package rtnetlink speaks the few rtnetlink (NETLINK_ROUTE) requests the
// agent needs to configure the guest's network: list links and addresses,
// rename a link, set its MTU, bring it up or down, add and delete
// addresses and routes.
//
// A Conn talks to the network namespace of the thread that called Dial,
// for as long as it lives. It does not create or delete links, does not
// listen to notifications and is not a general netlink library: each
// method is one request and its acknowledgement (or one dump).
//
// Errors from the kernel are *Error values that wrap the errno, so callers
// can branch with errors.Is(err, unix.EEXIST).
package rtnetlink

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a NETLINK_ROUTE socket. It is not safe for concurrent use.
type Conn struct {
	fd  int
	seq uint32
	buf []byte
}

// replyTimeout bounds the wait for the kernel's answer. The kernel answers
// at once; the bound only keeps a bug from hanging the agent.
const replyTimeout = 10 * time.Second

// recvBufSize holds any single datagram the kernel sends for our requests
// (a dump part is at most a page or two).
const recvBufSize = 64 << 10

// Dial opens a rtnetlink socket in the calling thread's network namespace.
func Dial() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink bind: %w", err)
	}
	// Extended acknowledgements carry the kernel's reason for an error
	// ("Invalid prefix for given prefix length"); with CAP_ACK the request
	// is not echoed back in full. Both are best effort (Linux 4.12+).
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	tv := unix.NsecToTimeval(replyTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink receive timeout: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, recvBufSize)}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Error is the kernel's refusal of a request.
type Error struct {
	// Op names the request ("add address 10.0.0.2/24 to link 2").
	Op    string
	Errno unix.Errno
	// Message is the kernel's extended acknowledgement, if it gave one.
	Message string
}

func (e *Error) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s: %v (%s)", e.Op, e.Errno, e.Message)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Errno)
}

func (e *Error) Unwrap() error { return e.Errno }

// errDumpInterrupted: the kernel's tables changed during a dump
// (NLM_F_DUMP_INTR); the dump is repeated.
var errDumpInterrupted = errors.New("rtnetlink dump interrupted")

// send writes one request and returns its sequence number.
func (c *Conn) send(typ, flags uint16, fixed []byte, attrs ...attr) (uint32, error) {
	c.seq++
	req := encode(typ, flags|unix.NLM_F_REQUEST, c.seq, fixed, attrs...)
	if err := unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	return c.seq, nil
}

// receive reads the next datagram from the kernel and returns its messages
// that answer seq. Datagrams from anyone but the kernel (port 0) are
// dropped: only a process with CAP_NET_ADMIN can send them, but the agent
// believes nobody.
func (c *Conn) receive(seq uint32) ([]message, error) {
	for {
		n, from, err := unix.Recvfrom(c.fd, c.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		msgs, err := parseMessages(c.buf[:n])
		if err != nil {
			return nil, err
		}
		var mine []message
		for _, m := range msgs {
			if m.seq == seq {
				mine = append(mine, m)
			}
		}
		if len(mine) > 0 {
			return mine, nil
		}
	}
}

// request sends a change and waits for its acknowledgement.
func (c *Conn) request(op string, typ, flags uint16, fixed []byte, attrs ...attr) error {
	seq, err := c.send(typ, flags|unix.NLM_F_ACK, fixed, attrs...)
	if err != nil {
		return fmt.Errorf("%s: send: %w", op, err)
	}
	for {
		msgs, err := c.receive(seq)
		if err != nil {
			return fmt.Errorf("%s: receive: %w", op, err)
		}
		for _, m := range msgs {
			if m.typ != unix.NLMSG_ERROR {
				continue
			}
			errno, text, err := parseError(m)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			if errno != 0 {
				return &Error{Op: op, Errno: errno, Message: text}
			}
			return nil
		}
	}
}

// dump sends a dump request and returns the payloads of the answers of
// type want, repeating the dump if the kernel says it was interrupted.
func (c *Conn) dump(op string, typ, want uint16, fixed []byte) ([][]byte, error) {
	for try := 0; ; try++ {
		out, err := c.dumpOnce(op, typ, want, fixed)
		if errors.Is(err, errDumpInterrupted) && try < 5 {
			continue
		}
		return out, err
	}
}

func (c *Conn) dumpOnce(op string, typ, want uint16, fixed []byte) ([][]byte, error) {
	seq, err := c.send(typ, unix.NLM_F_DUMP, fixed)
	if err != nil {
		return nil, fmt.Errorf("%s: send: %w", op, err)
	}
	var out [][]byte
	interrupted := false
	for {
		msgs, err := c.receive(seq)
		if err != nil {
			return nil, fmt.Errorf("%s: receive: %w", op, err)
		}
		for _, m := range msgs {
			if m.flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.typ {
			case unix.NLMSG_DONE:
				if interrupted {
					return nil, errDumpInterrupted
				}
				return out, nil
			case unix.NLMSG_ERROR:
				errno, text, err := parseError(m)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", op, err)
				}
				if errno == 0 {
					// An acknowledgement ends a dump like NLMSG_DONE.
					return out, nil
				}
				return nil, &Error{Op: op, Errno: errno, Message: text}
			case want:
				// The buffer is reused by the next receive.
				out = append(out, append([]byte(nil), m.data...))
			}
		}
	}
}
