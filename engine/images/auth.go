package images

// Registry logins: the engine checks credentials (CheckLogin, POST /auth);
// the client stores them where Docker keeps them (internal/registryauth)
// and sends them with each pull and push (X-Registry-Auth). Pull and Push
// fall back to authn.DefaultKeychain, which reads the same file.

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/internal/registryauth"
)

// ErrLoginFailed classifies credentials a registry rejected.
var ErrLoginFailed = errors.New("incorrect username or password")

// ParseRegistry normalises what a user passes to login (see
// registryauth.Normalize) and returns the registry, insecure for a registry
// on this machine as pulls treat it, and its credentials' key.
func ParseRegistry(server string) (name.Registry, string, error) {
	host, key, err := registryauth.Normalize(server)
	if err != nil {
		return name.Registry{}, "", errs.Class(errdefs.ErrInvalidArgument, err)
	}
	var opts []name.Option
	if isLoopbackRegistry(host) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return name.Registry{}, "", errs.Class(errdefs.ErrInvalidArgument, fmt.Errorf("invalid registry %q: %w", server, err))
	}
	return reg, key, nil
}

// CheckLogin checks user and password against server (see ParseRegistry),
// as dockerd's POST /auth does: the client stores them once they pass
// (registryauth.Store). It returns the registry's name as users know it.
func CheckLogin(ctx context.Context, server, user, password string, opts RemoteOptions) (string, error) {
	reg, _, err := ParseRegistry(server)
	if err != nil {
		return "", err
	}
	if user == "" || password == "" {
		return "", errs.New(errdefs.ErrInvalidArgument, "login: a username and a password are needed")
	}
	if err := checkLogin(ctx, reg, &authn.Basic{Username: user, Password: password}, opts); err != nil {
		return "", err
	}
	return reg.RegistryStr(), nil
}

// checkLogin makes an authenticated request to the registry's API root:
// for token registries the token exchange already proves the credentials,
// for basic-auth registries the request itself does.
func checkLogin(ctx context.Context, reg name.Registry, auth authn.Authenticator, opts RemoteOptions) error {
	base := opts.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	tr, err := transport.NewWithContext(ctx, reg, auth, base, nil)
	if err != nil {
		return loginError(reg, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return loginError(reg, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return errs.Class(errdefs.ErrUnauthenticated, fmt.Errorf("login to %s failed: %w", reg.RegistryStr(), ErrLoginFailed))
	case resp.StatusCode >= 300:
		return errs.New(errdefs.ErrUnavailable, "login to %s failed: registry answered %s", reg.RegistryStr(), resp.Status)
	}
	return nil
}

func loginError(reg name.Registry, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return errs.Class(errdefs.ErrUnauthenticated, fmt.Errorf("login to %s failed: %w", reg.RegistryStr(), ErrLoginFailed))
	}
	if why, ok := networkCause(err); ok {
		return errs.New(errdefs.ErrUnavailable, "login to %s failed: cannot reach the registry: %s", reg.RegistryStr(), why)
	}
	return errs.New(errdefs.ErrUnavailable, "login to %s failed: %s", reg.RegistryStr(), oneLineErr(err))
}
