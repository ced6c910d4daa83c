package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// DefaultHost is where vmctld listens unless told otherwise.
const DefaultHost = "unix:///run/vmctl/vmctl.sock"

// Host is a parsed -H address.
type Host struct {
	Network string // "unix" or "tcp"
	Address string // socket path or host:port
}

func (h Host) String() string {
	if h.Network == "unix" {
		return "unix://" + h.Address
	}
	return "tcp://" + h.Address
}

// ParseHost accepts dockerd's -H forms: unix:///path, tcp://host:port, and
// a bare /path for a unix socket.
func ParseHost(s string) (Host, error) {
	if strings.HasPrefix(s, "/") {
		return Host{Network: "unix", Address: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Host{}, errs.New(errdefs.ErrInvalidArgument, "invalid host %q: want unix:///path or tcp://host:port", s)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" || !filepath.IsAbs(u.Path) || u.Host != "" {
			return Host{}, errs.New(errdefs.ErrInvalidArgument, "invalid host %q: want unix:///absolute/path", s)
		}
		return Host{Network: "unix", Address: u.Path}, nil
	case "tcp":
		if _, _, err := net.SplitHostPort(u.Host); err != nil || u.Path != "" && u.Path != "/" {
			return Host{}, errs.New(errdefs.ErrInvalidArgument, "invalid host %q: want tcp://host:port", s)
		}
		return Host{Network: "tcp", Address: u.Host}, nil
	}
	return Host{}, errs.New(errdefs.ErrInvalidArgument, "invalid host %q: want unix:///path or tcp://host:port", s)
}

// Listen opens the listener for h. A unix socket gets its directory
// created, replaces a stale socket file (never any other kind of file), and
// is made accessible to root only: the API runs containers as root.
func Listen(h Host) (net.Listener, error) {
	if h.Network == "tcp" {
		l, err := net.Listen("tcp", h.Address)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", h, err)
		}
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(h.Address), 0o755); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", h, err)
	}
	if st, err := os.Lstat(h.Address); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: %s exists and is not a socket", h, h.Address)
		}
		if c, err := net.Dial("unix", h.Address); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another daemon is serving it", h)
		}
		os.Remove(h.Address)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listen on %s: %w", h, err)
	}
	l, err := net.Listen("unix", h.Address)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", h, err)
	}
	if err := os.Chmod(h.Address, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen on %s: %w", h, err)
	}
	return l, nil
}
