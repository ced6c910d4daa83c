// Package registryauth keeps a user's registry credentials where Docker
// keeps them, $DOCKER_CONFIG/config.json (default ~/.docker/config.json),
// through Docker's own config code, so credential helpers ("credsStore")
// work and the docker CLI and vmctl share logins.
//
// It is the client's half of a login: the CLI stores what the engine
// verified (POST /auth) and erases on logout; the engine reads the same
// file through authn.DefaultKeychain only for an in-process pull or push
// that got no X-Registry-Auth. It does not talk to registries.
package registryauth

import (
	"fmt"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Normalize turns what a user passes to login or logout into the registry's
// host[:port] and the key its credentials are stored under: empty means the
// default registry; a scheme and a path ("https://host/v1/") are dropped.
// The default registry's key is Docker's legacy URL, as the docker CLI
// writes it.
func Normalize(server string) (host, key string, err error) {
	host = strings.TrimSpace(server)
	host = strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	if host == "" {
		host = name.DefaultRegistry
	}
	reg, err := name.NewRegistry(host, name.StrictValidation)
	if err != nil {
		return "", "", fmt.Errorf("invalid registry %q: %w", server, err)
	}
	host = reg.RegistryStr()
	key = host
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	return host, key, nil
}

// Store saves user and password under key (see Normalize), in the config
// file or the credential helper it names.
func Store(key, user, password string) error {
	cf, err := config.Load(config.Dir())
	if err != nil {
		return fmt.Errorf("reading docker config: %w", err)
	}
	if err := cf.GetCredentialsStore(key).Store(types.AuthConfig{Username: user, Password: password, ServerAddress: key}); err != nil {
		return fmt.Errorf("storing credentials in %s: %w", cf.Filename, err)
	}
	return nil
}

// Erase removes the credentials stored under key and reports whether there
// were any.
func Erase(key string) (bool, error) {
	cf, err := config.Load(config.Dir())
	if err != nil {
		return false, fmt.Errorf("reading docker config: %w", err)
	}
	_, inFile := cf.AuthConfigs[key]
	store := cf.GetCredentialsStore(key)
	had := inFile
	if ac, err := store.Get(key); err == nil && (ac.Username != "" || ac.IdentityToken != "") {
		had = true
	}
	if !had {
		return false, nil
	}
	if err := store.Erase(key); err != nil {
		return true, fmt.Errorf("removing credentials from %s: %w", cf.Filename, err)
	}
	return true, nil
}
