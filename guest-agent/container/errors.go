package container

import (
	"errors"
	"fmt"
)

// Error kinds. Callers branch on them with errors.Is; the service turns them
// into status codes at the edge.
var (
	ErrNotFound   = errors.New("not found")
	ErrPermission = errors.New("permission denied")
	ErrInvalid    = errors.New("invalid argument")
	ErrExists     = errors.New("already exists")
	// ErrState: the container or process is not in a state that allows
	// the request (start twice, exec into a stopped container).
	ErrState = errors.New("wrong state")
)

// Error is a classified error whose message is shown to the user as is.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// kindNames carry an error's kind from the container init to the agent.
var kindNames = map[error]string{
	ErrNotFound: "not_found", ErrPermission: "permission", ErrInvalid: "invalid",
	ErrExists: "exists", ErrState: "state",
}

func kindName(err error) string {
	for k, n := range kindNames {
		if errors.Is(err, k) {
			return n
		}
	}
	return "internal"
}

// kindError rebuilds an error the init reported; unknown kinds stay
// unclassified (internal).
func kindError(name, msg string) error {
	for k, n := range kindNames {
		if n == name {
			return &Error{Kind: k, Msg: msg}
		}
	}
	return errors.New(msg)
}
