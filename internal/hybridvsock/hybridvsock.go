// Package hybridvsock is the host side of a hybrid vsock handshake: it
// reaches a port of a guest's vsock through the unix socket of vmctl-vmm's
// virtio-vsock device (hypervisor/virtio/vsock, Firecracker's scheme). The
// client connects to the socket and writes "CONNECT <port>\n"; the VMM asks
// the guest and, once the guest accepts, answers "OK <host port>\n", after
// which the connection is the guest's byte stream. Where the guest has no
// vsock driver yet or nothing listens on the port, the VMM closes the
// connection without answering.
//
// The engine, the nested test agent and the benchmarks share this client.
// It makes one attempt: callers retry while the guest boots, as they must
// anyway. It does not speak the guest-initiated direction (the VMM dials
// "<socket>_<port>" for that).
package hybridvsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is returned when the VMM closed the connection without an
// answer: the guest is still booting or nothing listens on the port yet.
// Retrying later may succeed.
var ErrRefused = errors.New("refused: the VMM closed the connection without an answer (nothing in the guest listens on the port yet)")

// maxAnswer bounds the answer line: "OK 4294967295\n" is 14 bytes.
const maxAnswer = 32

// answerTimeout bounds the wait for the answer, also under a ctx with a
// later deadline. The VMM waits up to 10 s for the guest to accept, then
// closes the connection; a VMM that answers nothing in longer than that is
// stuck, and a caller that retries gets to look at why.
var answerTimeout = 15 * time.Second

// Dial connects to port of the guest behind the VMM's hybrid vsock socket
// and completes the handshake. The returned connection starts with the
// guest's first byte: the answer line is read one byte at a time, so
// nothing the guest sends right after it is consumed here. ctx bounds the
// connect and the handshake (which gives up after answerTimeout in any
// case), not the returned connection.
func Dial(ctx context.Context, socket string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("vsock port %d: %w", port, err)
	}
	if err := handshake(ctx, conn, port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("vsock port %d: %w", port, err)
	}
	return conn, nil
}

// handshake writes the CONNECT line and reads the answer, within ctx.
func handshake(ctx context.Context, conn net.Conn, port uint32) error {
	deadline := time.Now().Add(answerTimeout)
	dl, ctxDeadline := ctx.Deadline()
	if ctxDeadline = ctxDeadline && dl.Before(deadline); ctxDeadline {
		deadline = dl
	}
	conn.SetDeadline(deadline)
	// A cancelled ctx interrupts a blocked write or read by moving the
	// deadline, the one way to interrupt them.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err := exchange(conn, port)
	ctxEnded := !stop()
	switch {
	case err == nil && ctxEnded, isTimeout(err) && (ctxEnded || ctxDeadline):
		// Even after a complete answer: the deadline may be moved at any
		// moment, so the connection cannot be handed out.
		return fmt.Errorf("no answer to CONNECT: %w", ctxErr(ctx))
	case isTimeout(err):
		return fmt.Errorf("no answer to CONNECT within %v: the VMM is stuck", answerTimeout)
	case err != nil:
		return err
	}
	conn.SetDeadline(time.Time{})
	return nil
}

// ctxErr is ctx.Err(), or DeadlineExceeded where the connection's deadline
// (ctx's) passed a moment before ctx's own timer fired.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

func exchange(conn net.Conn, port uint32) error {
	if _, err := io.WriteString(conn, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return ErrRefused
		}
		return fmt.Errorf("sending CONNECT: %w", err)
	}
	line, err := readAnswer(conn)
	if err != nil {
		return err
	}
	return checkAnswer(line)
}

// readAnswer reads up to and including the first newline, one byte at a
// time: bytes after it are the guest's. The answer may arrive in pieces.
func readAnswer(r io.Reader) (string, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return string(line), nil
			}
			if len(line) == maxAnswer {
				return "", garbled(string(line) + "...")
			}
			line = append(line, b[0])
			continue
		}
		switch {
		case err == nil:
			// A zero-byte read: try again.
		case len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
			return "", ErrRefused
		case errors.Is(err, io.EOF):
			return "", fmt.Errorf("the VMM closed the connection in the middle of its answer %q", line)
		default:
			return "", fmt.Errorf("reading the answer to CONNECT: %w", err)
		}
	}
}

// checkAnswer accepts "OK <host port>" (without the newline), as
// hypervisor/virtio/vsock writes it.
func checkAnswer(line string) error {
	arg, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return garbled(line)
	}
	if _, err := strconv.ParseUint(arg, 10, 32); err != nil {
		return garbled(line)
	}
	return nil
}

func garbled(line string) error {
	return fmt.Errorf("the VMM answered %q, not \"OK <port>\": is this socket a hybrid vsock?", line)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
