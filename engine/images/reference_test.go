package images

import (
	"errors"
	"strings"
	"testing"
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
		if err != nil && !errors.Is(err, ErrInvalidReference) {
			t.Errorf("ParseTag(%q) = %v, not an invalid reference", tc.ref, err)
		}
	}
}
