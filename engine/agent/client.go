// Package agent is the host side of the engine -> guest agent channel: a
// ttrpc client of api/agent/v1 over whatever byte stream the sandbox driver
// provides, plus the conversion of the agent's status errors into the
// engine's error classes (github.com/containerd/errdefs).
//
// It does not know how the stream reaches the guest (vsock, virtio-serial).
package agent

import (
	"context"
	"errors"
	"net"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentapi "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/engine/errs"
)

// Client talks to one guest's agent.
type Client struct {
	tc  *ttrpc.Client
	api agentapi.TTRPCAgentService
}

// New wraps an established agent channel. The client owns conn.
func New(conn net.Conn) *Client {
	tc := ttrpc.NewClient(conn)
	return &Client{tc: tc, api: agentapi.NewTTRPCAgentClient(tc)}
}

// API returns the raw service; errors it returns are status errors, pass
// them through Convert.
func (c *Client) API() agentapi.TTRPCAgentService { return c.api }

// Close closes the channel; calls in flight fail.
func (c *Client) Close() error { return c.tc.Close() }

// WaitReady blocks until the agent answers Health, or ctx ends.
//
// One call is enough: on a single-stream channel the request waits in the
// stream until the agent starts reading, so retrying would only queue
// duplicates.
func (c *Client) WaitReady(ctx context.Context) (*agentapi.HealthResponse, error) {
	resp, err := c.api.Health(ctx, &agentapi.HealthRequest{})
	if err != nil {
		return nil, Convert(err)
	}
	return resp, nil
}

// Convert maps an agent status error onto errdefs classes, keeping the
// agent's message as the text.
func Convert(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ttrpc.ErrClosed) {
		return errs.New(errdefs.ErrUnavailable, "agent connection closed")
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
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
		return errors.New(st.Message())
	}
	return &agentError{msg: st.Message(), class: class}
}

// agentError keeps the agent's own message as the error text while
// classifying it for callers (errors.Is(err, errdefs.ErrNotFound)).
type agentError struct {
	msg   string
	class error
}

func (e *agentError) Error() string { return e.msg }
func (e *agentError) Unwrap() error { return e.class }
