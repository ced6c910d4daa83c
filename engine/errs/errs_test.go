package errs

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/containerd/errdefs"
)

func TestNew(t *testing.T) {
	err := New(errdefs.ErrNotFound, "No such image: %s", "busybox:latest")
	if err.Error() != "No such image: busybox:latest" {
		t.Errorf("Error() = %q", err.Error())
	}
	if !errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("class of %v is wrong", err)
	}
	wrapped := New(errdefs.ErrInvalidArgument, "open image: %w", fs.ErrNotExist)
	if !errors.Is(wrapped, fs.ErrNotExist) || !errors.Is(wrapped, errdefs.ErrInvalidArgument) {
		t.Errorf("wrapped chain lost: %v", wrapped)
	}
	if Class(errdefs.ErrConflict, nil) != nil {
		t.Errorf("Class(nil) != nil")
	}
	if c := Class(errdefs.ErrConflict, fs.ErrExist); c.Error() != fs.ErrExist.Error() || !errors.Is(c, errdefs.ErrConflict) {
		t.Errorf("Class = %v", c)
	}
}
