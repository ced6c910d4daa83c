// Package filters holds what docker's list and prune filters share across
// the engine's services.
package filters

import "strings"

// HasLabel reports whether labels match one label filter term: KEY (the
// label is set, to anything) or KEY=VALUE (set to exactly that).
func HasLabel(labels map[string]string, term string) bool {
	k, want, hasValue := strings.Cut(term, "=")
	got, ok := labels[k]
	return ok && (!hasValue || got == want)
}
