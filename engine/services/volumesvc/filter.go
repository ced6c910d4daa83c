package volumesvc

// Choosing volumes by docker's filters, for docker volume ls and docker
// volume prune.

import (
	"context"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/filters"
)

// ListOptions chooses the volumes List returns.
type ListOptions struct {
	// Filters are docker volume ls's: name (a substring of the name),
	// dangling (true or false: whether no container references the
	// volume) and label (key or key=value). Values of one term are
	// alternatives for name and conditions that must all hold otherwise.
	Filters map[string][]string
}

// List returns the volumes that match o, by name. An unknown filter is
// bad input ("invalid filter 'x'"), as from dockerd.
func (s *Service) List(o ListOptions) ([]*Volume, error) {
	for k, vs := range o.Filters {
		switch k {
		case "name", "label":
		case "dangling":
			if err := checkBoolFilter(k, vs); err != nil {
				return nil, err
			}
		default:
			return nil, invalidFilter(k)
		}
	}
	list, err := s.store.List()
	if err != nil {
		return nil, err
	}
	var refs map[string]int
	if len(o.Filters["dangling"]) > 0 {
		if refs, err = s.store.RefCount(); err != nil {
			return nil, err
		}
	}
	out := []*Volume{}
	for _, v := range list {
		if matchList(o.Filters, v, refs[v.Name]) {
			out = append(out, v)
		}
	}
	return out, nil
}

func matchList(f map[string][]string, v *Volume, refs int) bool {
	if names := f["name"]; len(names) > 0 && !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(v.Name, n) }) {
		return false
	}
	for _, d := range f["dangling"] {
		if isTrue(d) != (refs == 0) {
			return false
		}
	}
	for _, l := range f["label"] {
		if !hasLabel(v, l) {
			return false
		}
	}
	return true
}

// PruneOptions chooses the volumes Prune removes, of those no container
// references.
type PruneOptions struct {
	// All takes named volumes too; otherwise only anonymous ones go. The
	// all filter, if given, overrides it.
	All bool
	// Filters are docker volume prune's: all (true or false), label and
	// label! (key or key=value: volumes that have, or have not, the label).
	Filters map[string][]string
}

// Prune removes the unused volumes o chooses and returns their names and
// the disk space freed.
func (s *Service) Prune(ctx context.Context, o PruneOptions) (removed []string, freed uint64, err error) {
	all := o.All
	for k, vs := range o.Filters {
		switch k {
		case "label", "label!":
		case "all":
			if err := checkBoolFilter(k, vs); err != nil {
				return nil, 0, err
			}
			for _, v := range vs {
				all = isTrue(v)
			}
		default:
			return nil, 0, invalidFilter(k)
		}
	}
	keep := func(v *Volume) bool {
		if !all && !v.Anonymous {
			return true
		}
		return slices.ContainsFunc(o.Filters["label"], func(l string) bool { return !hasLabel(v, l) }) ||
			slices.ContainsFunc(o.Filters["label!"], func(l string) bool { return hasLabel(v, l) })
	}
	removed, freed, err = s.store.Prune(ctx, keep)
	for _, name := range removed {
		s.publish("destroy", name)
	}
	return removed, freed, err
}

// hasLabel matches a label filter: "key" or "key=value".
func hasLabel(v *Volume, filter string) bool { return filters.HasLabel(v.Labels, filter) }

func isTrue(v string) bool { return v == "true" || v == "1" }

func checkBoolFilter(name string, vs []string) error {
	for _, v := range vs {
		if v != "true" && v != "false" && v != "1" && v != "0" {
			return errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s=%s': want true or false", name, v)
		}
	}
	return nil
}

func invalidFilter(name string) error {
	return errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", name)
}
