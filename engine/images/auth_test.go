package images

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/vmctl/vmctl/internal/registryauth"
)

// ParseRegistry is registryauth.Normalize (tested there) plus the scheme:
// plain HTTP for a registry on this machine, as pulls use.
func TestParseRegistry(t *testing.T) {
	for _, tc := range []struct{ in, scheme, key string }{
		{"127.0.0.1:5000", "http", "127.0.0.1:5000"},
		{"http://localhost:5000/", "http", "localhost:5000"},
		{"", "https", authn.DefaultAuthKey},
	} {
		reg, key, err := ParseRegistry(tc.in)
		if err != nil || reg.Scheme() != tc.scheme || key != tc.key {
			t.Errorf("ParseRegistry(%q) = %s://%s, %q, %v; want %s, %q", tc.in, reg.Scheme(), reg.RegistryStr(), key, err, tc.scheme, tc.key)
		}
	}
	if _, _, err := ParseRegistry("bad host"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ParseRegistry(bad host) = %v, want invalid argument", err)
	}
}

// basicAuth accepts only user:secret, as a registry with htpasswd does.
func basicAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestLoginPullLogout(t *testing.T) {
	ctx := context.Background()
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)
	reg := newTestRegistry(t, basicAuth)
	ref := reg.host + "/private:1"

	src := openStore(t)
	addTagged(t, src, testImage(t, "p", map[string]string{"p": "1"}), ref)
	if _, err := src.Push(ctx, ref, RemoteOptions{}); !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "vmctl login "+reg.host) {
		t.Fatalf("Push before login = %v, want access denied naming `vmctl login %s`", err, reg.host)
	}
	if _, err := CheckLogin(ctx, reg.host, "user", "wrong", RemoteOptions{}); !errors.Is(err, ErrLoginFailed) || !errdefs.IsUnauthorized(err) {
		t.Fatalf("CheckLogin with a wrong password = %v, want %v", err, ErrLoginFailed)
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "config.json")); err == nil {
		t.Errorf("a login check wrote config.json")
	}
	got, err := CheckLogin(ctx, "http://"+reg.host, "user", "secret", RemoteOptions{})
	if err != nil || got != reg.host {
		t.Fatalf("CheckLogin = %q, %v", got, err)
	}
	// What the client does once the engine accepted the login.
	_, key, _ := ParseRegistry(reg.host)
	if err := registryauth.Store(key, "user", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Push(ctx, ref, RemoteOptions{}); err != nil {
		t.Fatalf("Push after login: %v", err)
	}
	if _, err := openStore(t).Pull(ctx, ref, RemoteOptions{}); err != nil {
		t.Fatalf("Pull after login: %v", err)
	}
	if had, err := registryauth.Erase(key); err != nil || !had {
		t.Fatalf("Erase = %v, %v; want it to remove the login", had, err)
	}
	if _, err := openStore(t).Pull(ctx, ref, RemoteOptions{}); !errdefs.IsPermissionDenied(err) {
		t.Errorf("Pull after logout = %v, want access denied", err)
	}
}
