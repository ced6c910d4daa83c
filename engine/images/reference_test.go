package images

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseTagRefusesImageIDNames(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{hex, false},
		{hex + ":1", false},
		{"library/" + hex, false},
		{"team/" + hex, true}, // only a bare repository name is ambiguous
		{hex[:63], true},
		{"busybox:1", true},
	} {
		_, err := ParseTag(tc.ref)
		if (err == nil) != tc.ok {
			t.Errorf("ParseTag(%q) = %v, want ok %v", tc.ref, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrInvalidReference) || !errdefs.IsInvalidArgument(err)) {
			t.Errorf("ParseTag(%q) = %v, not an invalid reference classed as bad input", tc.ref, err)
		}
	}
}

// A short ID that matches two images is the client's mistake (a 4xx), not
// the store's.
func TestAmbiguousShortIDIsInvalidArgument(t *testing.T) {
	recs := []*record{{id: v1.Hash{Algorithm: "sha256", Hex: "abcdef1234560" + strings.Repeat("0", 51)}},
		{id: v1.Hash{Algorithm: "sha256", Hex: "abcdef1234561" + strings.Repeat("0", 51)}}}
	_, err := find(recs, "abcdef123456")
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "matches more than one image") {
		t.Fatalf("find of an ambiguous short ID = %v, want an invalid-argument error", err)
	}
}

// Repository paths follow the distribution spec's grammar: ".." and
// components that start or end with a separator are refused for tags,
// local references and registry references alike.
func TestReferencePathGrammar(t *testing.T) {
	for _, bad := range []string{"../../evil:x", "a/../b", "a/.b", "a/b-:1", "127.0.0.1:5000/../x:1", "a//b"} {
		if _, err := ParseTag(bad); err == nil {
			t.Errorf("ParseTag(%q) accepted", bad)
		}
		if _, err := ParseRemoteReference(bad); err == nil {
			t.Errorf("ParseRemoteReference(%q) accepted", bad)
		}
		if _, err := parseReference(bad); err == nil {
			t.Errorf("parseReference(%q) accepted", bad)
		}
	}
	for _, good := range []string{"busybox", "a.b/c__d/e--f:1", "127.0.0.1:5000/x/y_z:2", "library/busybox:1.36"} {
		if _, err := ParseTag(good); err != nil {
			t.Errorf("ParseTag(%q) = %v", good, err)
		}
		if _, err := ParseRemoteReference(good); err != nil {
			t.Errorf("ParseRemoteReference(%q) = %v", good, err)
		}
	}
}
