package events

import (
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// Filter selects events by Docker's event filter terms. Within one term
// any value may match (label: every value must); every term given must
// match.
type Filter struct {
	terms map[string][]string
}

// filterKeys are the terms Docker accepts that make sense here.
var filterKeys = map[string]bool{
	"container": true, "event": true, "image": true, "label": true,
	"type": true, "volume": true, "network": true, "scope": true,
}

var validTypes = map[string]bool{string(TypeContainer): true, string(TypeImage): true, string(TypeVolume): true,
	string(TypeNetwork): true, "daemon": true, "plugin": true, "builder": true, "config": true, "node": true,
	"secret": true, "service": true}

// NewFilter checks the terms (as from the filters query parameter) and
// returns the filter. An unknown term is an invalid-argument error.
func NewFilter(terms map[string][]string) (*Filter, error) {
	for k, vs := range terms {
		if !filterKeys[k] {
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k)
		}
		for _, v := range vs {
			switch {
			case k == "type" && !validTypes[v]:
				return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter 'type=%s'", v)
			case k == "scope" && v != "local" && v != "swarm":
				return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter 'scope=%s'", v)
			}
		}
	}
	return &Filter{terms: terms}, nil
}

// Match reports whether e passes every term.
func (f *Filter) Match(e Event) bool {
	if f == nil {
		return true
	}
	for k, vs := range f.terms {
		if len(vs) == 0 {
			continue
		}
		// Within a term any value may match, except labels: Docker wants
		// every label term (label=a --filter label=b is a and b).
		all := k == "label"
		ok := all
		for _, v := range vs {
			if m := f.matchOne(k, v, e); m != all {
				ok = m
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (f *Filter) matchOne(key, v string, e Event) bool {
	switch key {
	case "type":
		return string(e.Type) == v
	case "event":
		// "exec_start: sh -c ..." is matched by exec_start, as in Docker.
		action, _, _ := strings.Cut(e.Action, ":")
		return e.Action == v || action == v
	case "container":
		return e.Type == TypeContainer && matchObject(e, v)
	case "volume":
		return e.Type == TypeVolume && matchObject(e, v)
	case "network":
		// The network's ID, ID prefix or name, as dockerd matches it.
		return e.Type == TypeNetwork && (e.ID == v || e.Attributes["name"] == v || strings.HasPrefix(e.ID, v))
	case "image":
		if e.Type == TypeImage {
			// The image's ID (or an ID prefix) or its name, busybox being
			// busybox:latest.
			id, short := strings.TrimPrefix(e.ID, "sha256:"), strings.TrimPrefix(v, "sha256:")
			return e.ID == v || sameImage(e.Attributes["name"], v) || (len(short) >= 4 && strings.HasPrefix(id, short))
		}
		return e.Type == TypeContainer && sameImage(e.Attributes["image"], v)
	case "label":
		name, want, hasValue := strings.Cut(v, "=")
		got, ok := e.Attributes[name]
		return ok && (!hasValue || got == want)
	case "scope":
		return v == "local"
	}
	return false
}

// matchObject matches an object's ID, ID prefix or name.
func matchObject(e Event, v string) bool {
	return e.ID == v || e.Attributes["name"] == v || (len(v) >= 1 && strings.HasPrefix(e.ID, v) && e.Type == TypeContainer)
}

// sameImage reports whether the filter value v names the image reference
// a: loosely ("busybox" is "busybox:latest"), or as the repository of a,
// whatever its tag or digest, as dockerd's image filter compares a
// reference stripped to its familiar name ("busybox" matches
// "busybox:1.36").
func sameImage(a, v string) bool {
	return a == v || withTag(a) == withTag(v) || (a != "" && familiarRepo(a) == v)
}

// familiarRepo is ref without its tag or digest: "busybox:1@sha256:..."
// is "busybox". References are compared as given (events carry the
// reference the user typed); a fully qualified one is not shortened.
func familiarRepo(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

func withTag(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref
	}
	if strings.Contains(ref, "@") {
		return ref
	}
	return ref + ":latest"
}
