package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestConvert(t *testing.T) {
	tests := []struct {
		name  string
		in    error
		class error
		text  string
	}{
		{"not found", status.Error(codes.NotFound, `exec: "nope": executable file not found in $PATH`), errdefs.ErrNotFound, `exec: "nope": executable file not found in $PATH`},
		{"permission", status.Error(codes.PermissionDenied, "exec: /etc: permission denied"), errdefs.ErrPermissionDenied, "exec: /etc: permission denied"},
		{"invalid", status.Error(codes.InvalidArgument, "bad spec"), errdefs.ErrInvalidArgument, "bad spec"},
		{"closed", ttrpc.ErrClosed, errdefs.ErrUnavailable, "agent connection closed"},
		{"deadline", status.Error(codes.DeadlineExceeded, "x"), context.DeadlineExceeded, context.DeadlineExceeded.Error()},
	}
	for _, tt := range tests {
		got := Convert(tt.in)
		if !errors.Is(got, tt.class) {
			t.Errorf("%s: Convert(%v) = %v, want class %v", tt.name, tt.in, got, tt.class)
		}
		if got.Error() != tt.text {
			t.Errorf("%s: Convert(%v).Error() = %q, want %q", tt.name, tt.in, got.Error(), tt.text)
		}
	}
	if Convert(nil) != nil {
		t.Errorf("Convert(nil) != nil")
	}
}
