// Package errs classifies engine errors once, at the point they arise, with
// the classes of github.com/containerd/errdefs, without changing their text:
// edges (CLI exit codes, HTTP status) branch on the class with errors.Is,
// users read the message as written.
package errs

import "fmt"

type classified struct {
	err   error
	class error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.err, e.class} }

// New formats a message (with %w support) and gives it the class, e.g.
// errs.New(errdefs.ErrNotFound, "No such image: %s", ref).
func New(class error, format string, a ...any) error {
	return &classified{err: fmt.Errorf(format, a...), class: class}
}

// Class adds a class to an existing error, keeping its text.
func Class(class error, err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, class: class}
}
