package registryauth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, host, key string }{
		{"", name.DefaultRegistry, authn.DefaultAuthKey},
		{"docker.io", name.DefaultRegistry, authn.DefaultAuthKey},
		{authn.DefaultAuthKey, name.DefaultRegistry, authn.DefaultAuthKey},
		{"127.0.0.1:5000", "127.0.0.1:5000", "127.0.0.1:5000"},
		{"http://localhost:5000/", "localhost:5000", "localhost:5000"},
		{" registry.example ", "registry.example", "registry.example"},
	} {
		host, key, err := Normalize(tc.in)
		if err != nil || host != tc.host || key != tc.key {
			t.Errorf("Normalize(%q) = %q, %q, %v; want %q, %q", tc.in, host, key, err, tc.host, tc.key)
		}
	}
	for _, bad := range []string{"bad host", "a:b:c"} {
		if _, _, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%q) = nil error, want one", bad)
		}
	}
}

func TestStoreErase(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	if had, err := Erase("localhost:5000"); err != nil || had {
		t.Fatalf("Erase before Store = %v, %v; want false, nil", had, err)
	}
	if err := Store("localhost:5000", "user", "secret"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cf struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	// base64("user:secret")
	if got := cf.Auths["localhost:5000"].Auth; got != "dXNlcjpzZWNyZXQ=" {
		t.Errorf("stored auth = %q, want user:secret in base64", got)
	}
	if had, err := Erase("localhost:5000"); err != nil || !had {
		t.Fatalf("Erase after Store = %v, %v; want true, nil", had, err)
	}
	if had, err := Erase("localhost:5000"); err != nil || had {
		t.Fatalf("second Erase = %v, %v; want false, nil", had, err)
	}
}
