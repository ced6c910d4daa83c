package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmctl/vmctl/engine/errs"
)

// ErrBadAnswer marks an answer that breaks the agent API: the guest is
// broken or hostile. Such errors are also classified errdefs.ErrDataLoss.
var ErrBadAnswer = errors.New("the guest agent broke the agent API")

func badAnswer(call, format string, args ...any) error {
	return errs.New(errdefs.ErrDataLoss, "%w: %s answered with %s", ErrBadAnswer, call, fmt.Sprintf(format, args...))
}

// convert classifies a call's error as the package's convert does; for a
// call that failed because the client closed the connection on a guest
// that broke the protocol (see guardedConn), it gives the reason instead.
func (c *Client) convert(err error) error {
	err = convert(err)
	if errdefs.IsUnavailable(err) {
		if f := c.conn.err(); f != nil {
			return f
		}
	}
	return err
}

// convert maps an agent status error onto errdefs classes, keeping the
// agent's message, made one line, as the text. It is the one place agent
// errors are classified.
func convert(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ttrpc.ErrClosed) {
		return errs.New(errdefs.ErrUnavailable, "agent connection closed")
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The caller's context ended before the answer came.
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not from the agent: the connection failed (write error, a
		// message the ttrpc framing refused).
		return errs.Class(errdefs.ErrUnavailable, fmt.Errorf("agent connection: %w", err))
	}
	msg := oneLine(st.Message())
	var class error
	switch st.Code() {
	case codes.NotFound:
		class = errdefs.ErrNotFound
	case codes.InvalidArgument:
		class = errdefs.ErrInvalidArgument
	case codes.PermissionDenied:
		class = errdefs.ErrPermissionDenied
	case codes.AlreadyExists:
		class = errdefs.ErrAlreadyExists
	case codes.FailedPrecondition:
		class = errdefs.ErrFailedPrecondition
	case codes.Unavailable:
		class = errdefs.ErrUnavailable
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	default:
		return errors.New(msg)
	}
	return &agentError{msg: msg, class: class}
}

// agentError keeps the agent's own message as the error text while
// classifying it for callers (errors.Is(err, errdefs.ErrNotFound)).
type agentError struct {
	msg   string
	class error
}

func (e *agentError) Error() string { return e.msg }
func (e *agentError) Unwrap() error { return e.class }

// maxMessage bounds what the host keeps of a text the guest sent: the
// engine shows these texts to users, one line each.
const maxMessage = 1024

// oneLine makes a text from the guest fit for one line of output: control
// characters (newlines, escape sequences) become spaces and it is cut at
// maxMessage bytes, on a character boundary.
func oneLine(s string) string {
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
}
