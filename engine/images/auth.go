package images

// Registry credentials live where Docker keeps them, in
// $DOCKER_CONFIG/config.json (default ~/.docker/config.json), through
// Docker's own config code, so credential helpers ("credsStore") work and
// the docker CLI and vmctl share logins. Pull and Push read them through
// authn.DefaultKeychain, which uses the same code and the same keys.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/vmctl/vmctl/engine/errs"
)

// ErrLoginFailed classifies credentials a registry rejected.
var ErrLoginFailed = errors.New("incorrect username or password")

// ParseRegistry normalises what a user passes to login/logout: empty means
// the default registry; a scheme and a path ("https://host/v1/") are
// dropped. It returns the registry and the key its credentials are stored
// under in config.json (Docker's legacy URL for the default registry, the
// host[:port] otherwise).
func ParseRegistry(server string) (name.Registry, string, error) {
	host := strings.TrimSpace(server)
	host = strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	if host == "" {
		host = name.DefaultRegistry
	}
	var opts []name.Option
	if isLoopbackRegistry(host) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, append(opts, name.StrictValidation)...)
	if err != nil {
		return name.Registry{}, "", errs.Class(errdefs.ErrInvalidArgument, fmt.Errorf("invalid registry %q: %w", server, err))
	}
	key := reg.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	return reg, key, nil
}

// Login checks user and password against server (see ParseRegistry) and,
// if the registry accepts them, stores them for later pulls and pushes. It
// returns the registry's name as users know it.
func Login(ctx context.Context, server, user, password string, opts RemoteOptions) (string, error) {
	reg, key, err := ParseRegistry(server)
	if err != nil {
		return "", err
	}
	if user == "" || password == "" {
		return "", errs.New(errdefs.ErrInvalidArgument, "login: a username and a password are needed")
	}
	if err := checkLogin(ctx, reg, &authn.Basic{Username: user, Password: password}, opts); err != nil {
		return "", err
	}
	cf, err := config.Load(config.Dir())
	if err != nil {
		return "", fmt.Errorf("login: reading docker config: %w", err)
	}
	err = cf.GetCredentialsStore(key).Store(types.AuthConfig{Username: user, Password: password, ServerAddress: key})
	if err != nil {
		return "", fmt.Errorf("login: storing credentials in %s: %w", cf.Filename, err)
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

// Logout removes stored credentials for server. It reports whether there
// were any.
func Logout(server string) (name.Registry, bool, error) {
	reg, key, err := ParseRegistry(server)
	if err != nil {
		return name.Registry{}, false, err
	}
	cf, err := config.Load(config.Dir())
	if err != nil {
		return reg, false, fmt.Errorf("logout: reading docker config: %w", err)
	}
	_, inFile := cf.AuthConfigs[key]
	store := cf.GetCredentialsStore(key)
	had := inFile
	if ac, err := store.Get(key); err == nil && (ac.Username != "" || ac.IdentityToken != "") {
		had = true
	}
	if !had {
		return reg, false, nil
	}
	if err := store.Erase(key); err != nil {
		return reg, true, fmt.Errorf("logout: removing credentials from %s: %w", cf.Filename, err)
	}
	return reg, true, nil
}
