package main

// Helpers the commands share on top of the API client: host checks,
// pulls and pushes with their progress, and the credentials sent with them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
)

// checkHost accepts the address forms vmctld listens on, so that a typo
// is one clear line instead of a transport error.
func checkHost(host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return fmt.Errorf("invalid host %q: want unix:///path/to/socket or tcp://host:port", host)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return fmt.Errorf("invalid host %q: a unix host needs a socket path, as in unix:///run/vmctld.sock", host)
		}
	case "tcp":
		if u.Host == "" || u.Port() == "" {
			return fmt.Errorf("invalid host %q: a tcp host needs a port, as in tcp://127.0.0.1:2375", host)
		}
	default:
		return fmt.Errorf("invalid host %q: want unix:///path/to/socket or tcp://host:port", host)
	}
	return nil
}

func shortContainerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// parseReference checks an image reference as the engine will, for the
// messages printed before the engine is asked.
func parseReference(ref string) (name.Reference, error) {
	if ref == "" {
		return nil, errors.New("invalid reference format: empty image name")
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid reference format: %q: %w", ref, err)
	}
	return r, nil
}

// pull asks the engine to pull ref and shows its progress on out (see
// display).
func (r *remote) pull(ctx context.Context, ref string, out io.Writer) error {
	auth, err := registryAuth(ref)
	if err != nil {
		return err
	}
	resp, err := r.api.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return r.fail(err)
	}
	defer resp.Close()
	return r.display(resp.JSONMessages(ctx), out)
}

// display shows a pull's or push's progress stream as the docker CLI does:
// a bar per layer on a terminal, one line per state change otherwise. An
// error in the stream becomes the command's one-line error.
func (r *remote) display(msgs iter.Seq2[jsonstream.Message, error], out io.Writer) error {
	err := jsonmessage.DisplayMessages(msgs, out)
	if jerr := (*jsonstream.Error)(nil); errors.As(err, &jerr) {
		return &daemonError{msg: oneLine(errors.New(jerr.Message)), err: errdefs.ErrUnknown}
	}
	return r.fail(err)
}

// registryAuth is the X-Registry-Auth value for pulling or pushing ref:
// the credentials `vmctl login` stored on this machine for ref's registry,
// or empty for anonymous access. The daemon never lends its own
// credentials, so the client sends the user's, as the docker CLI does.
func registryAuth(ref string) (string, error) {
	parsed, err := parseReference(ref)
	if err != nil {
		return "", err
	}
	reg := parsed.Context().Registry
	a, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		return "", fmt.Errorf("read credentials for %s: %w", reg.RegistryStr(), err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		return "", fmt.Errorf("read credentials for %s: %w", reg.RegistryStr(), err)
	}
	if *cfg == (authn.AuthConfig{}) {
		return "", nil
	}
	return authconfig.Encode(registry.AuthConfig{
		Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth,
		IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken,
		ServerAddress: reg.RegistryStr(),
	})
}

// familiarName is how docker prints a reference: without the default
// registry and library/ prefix.
func familiarName(r name.Reference) string {
	s := r.Name()
	s = strings.TrimPrefix(s, name.DefaultRegistry+"/")
	return strings.TrimPrefix(s, "library/")
}
