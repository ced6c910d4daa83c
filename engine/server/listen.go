package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
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

// ListenOptions secure the API's listeners as dockerd's flags do.
type ListenOptions struct {
	// TLS, when set, serves tcp:// hosts over TLS (--tls, --tlsverify with
	// a client CA). Without it a tcp:// host must be a loopback address.
	TLS *tls.Config
	// Group owns unix sockets (--group); they are 0660, so its members
	// may use the API. Empty: root's group.
	Group string
}

// Listen opens the listener for h. A unix socket gets its directory
// created, replaces a stale socket file (never any other kind of file), and
// is 0660, owned by root and opts.Group: the API runs containers as root. A
// tcp:// host is served over opts.TLS, or only on loopback without it.
func Listen(h Host, opts ListenOptions) (net.Listener, error) {
	if h.Network == "tcp" {
		if opts.TLS == nil && !loopbackHost(h.Address) {
			return nil, fmt.Errorf("listen on %s: the API runs containers as root; serve it on a non-loopback address only over TLS (--tlsverify --tlscacert --tlscert --tlskey)", h)
		}
		l, err := net.Listen("tcp", h.Address)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", h, err)
		}
		if opts.TLS != nil {
			return tls.NewListener(l, opts.TLS), nil
		}
		return l, nil
	}
	l, err := listenUnix(h)
	if err != nil {
		return nil, err
	}
	if opts.Group != "" {
		g, err := user.LookupGroup(opts.Group)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on %s: group %s: %w", h, opts.Group, err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(h.Address, 0, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on %s: %w", h, err)
		}
	}
	return l, nil
}

// loopbackHost reports whether host:port names only this machine.
func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TLSConfig is the API's TLS as dockerd's flags give it: the server's
// certificate and key, and with verify the CA whose client certificates
// are the only ones let in.
func TLSConfig(certFile, keyFile, caFile string, verify bool) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if verify {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA %s: no certificate in it", caFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func listenUnix(h Host) (net.Listener, error) {
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
