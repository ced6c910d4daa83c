package filters

import "testing"

func TestHasLabel(t *testing.T) {
	labels := map[string]string{"tier": "web", "keep": ""}
	for term, want := range map[string]bool{"tier": true, "tier=web": true, "tier=db": false, "keep": true, "keep=": true, "gone": false, "gone=": false} {
		if got := HasLabel(labels, term); got != want {
			t.Errorf("HasLabel(%q) = %v, want %v", term, got, want)
		}
	}
}
