package containers

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// ListOptions selects containers the way `docker ps` does.
type ListOptions struct {
	// All includes containers that are not running.
	All bool
	// Limit keeps the newest Limit containers (0: all); it implies All.
	Limit int
	// Filters are Docker's ps filter terms: key -> values. Within a key any
	// value may match (label: every value must); every key must match.
	Filters map[string][]string
	// Networks returns the names and IDs of the networks a container is
	// on, for the network term; nil refuses the term.
	Networks func(c *Container) []string
}

// psFilterKeys are the ps filter terms this engine evaluates.
var psFilterKeys = map[string]bool{
	"id": true, "name": true, "status": true, "exited": true, "label": true,
	"ancestor": true, "before": true, "since": true, "volume": true,
	"network": true, "publish": true, "expose": true, "health": true,
}

// unsupportedPsKeys are Docker's other ps terms: refused by name rather
// than ignored, which would list containers the user filtered out.
var unsupportedPsKeys = map[string]bool{
	"isolation": true, "is-task": true,
}

// Docker's container states; only some occur here, all are valid filters.
var validStatus = map[string]bool{
	"created": true, "restarting": true, "running": true, "removing": true,
	"paused": true, "exited": true, "dead": true,
}

// Select applies opts to list (newest first, as List returns it). Terms
// are checked first: an unknown term or a bad value is an invalid-argument
// error ("invalid filter 'x'"), and a before/since reference that names no
// container in list is a not-found error.
func Select(list []*Container, opts ListOptions) ([]*Container, error) {
	f, err := compileFilter(list, opts.Filters)
	if err == nil {
		f.networks = opts.Networks
		if _, ok := opts.Filters["network"]; ok && f.networks == nil {
			err = invalidFilter("filter 'network' is not supported without networking")
		}
	}
	if err != nil {
		return nil, err
	}
	all := opts.All || opts.Limit > 0 || f.impliesAll
	sorted := append([]*Container(nil), list...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Created.After(sorted[j].Created) })
	var out []*Container
	for _, c := range sorted {
		if opts.Limit > 0 && len(out) == opts.Limit {
			break
		}
		if !all && c.State.Status != StatusRunning {
			continue
		}
		if f.match(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

type psFilter struct {
	terms      map[string][]string
	patterns   map[string][]*regexp.Regexp // id, name
	exited     []int
	before     *Container
	since      *Container
	impliesAll bool
	ports      map[string][]portRange // publish, expose
	networks   func(c *Container) []string
}

// portRange is a publish or expose term: "80", "80/udp", "8000-8080/tcp"
// (tcp unless given).
type portRange struct {
	from, to uint16
	proto    string
}

func parsePortRange(v string) (portRange, error) {
	ports, proto, _ := strings.Cut(v, "/")
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return portRange{}, fmt.Errorf("unknown protocol %q", proto)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	from, err := strconv.ParseUint(lo, 10, 16)
	if err != nil || from == 0 {
		return portRange{}, fmt.Errorf("invalid port %q", lo)
	}
	to := from
	if isRange {
		if to, err = strconv.ParseUint(hi, 10, 16); err != nil || to < from {
			return portRange{}, fmt.Errorf("invalid port range %q", ports)
		}
	}
	return portRange{from: uint16(from), to: uint16(to), proto: proto}, nil
}

func (r portRange) has(p Port) bool { return p.Proto == r.proto && r.from <= p.Port && p.Port <= r.to }

// publishedPorts are a container's ports docker ps --filter publish
// matches: those -p binds, and with -P the exposed ones.
func publishedPorts(c *Container) []Port {
	nc := c.Config.Network
	if nc == nil {
		return nil
	}
	var out []Port
	for _, b := range nc.PortBindings {
		out = append(out, Port{Port: b.ContainerPort, Proto: b.Proto})
	}
	if nc.PublishAll {
		out = append(out, nc.ExposedPorts...)
	}
	return out
}

// exposedPorts are the ports --filter expose matches: the exposed ones and
// those -p binds (which docker exposes too).
func exposedPorts(c *Container) []Port {
	nc := c.Config.Network
	if nc == nil {
		return nil
	}
	out := append([]Port(nil), nc.ExposedPorts...)
	for _, b := range nc.PortBindings {
		out = append(out, Port{Port: b.ContainerPort, Proto: b.Proto})
	}
	return out
}

func invalidFilter(format string, args ...any) error {
	return errs.New(errdefs.ErrInvalidArgument, format, args...)
}

func compileFilter(list []*Container, terms map[string][]string) (*psFilter, error) {
	f := &psFilter{terms: terms, patterns: map[string][]*regexp.Regexp{}, ports: map[string][]portRange{}}
	for k, vs := range terms {
		switch {
		case unsupportedPsKeys[k]:
			return nil, invalidFilter("filter '%s' is not supported by vmctl", k)
		case !psFilterKeys[k]:
			return nil, invalidFilter("invalid filter '%s'", k)
		}
		for _, v := range vs {
			switch k {
			case "id", "name":
				// Docker matches these as regular expressions, anywhere in
				// the value: name=web matches "webapp".
				re, err := regexp.Compile(v)
				if err != nil {
					return nil, invalidFilter("invalid filter '%s=%s': %v", k, v, err)
				}
				f.patterns[k] = append(f.patterns[k], re)
			case "health":
				switch v {
				case HealthStarting, HealthHealthy, HealthUnhealthy, "none":
				default:
					return nil, invalidFilter("Unrecognised filter value for health: %s", v)
				}
			case "status":
				if !validStatus[v] {
					return nil, invalidFilter("invalid filter 'status=%s'", v)
				}
				// Docker lists every container that has the status asked
				// for, -a or not.
				f.impliesAll = true
			case "publish", "expose":
				r, err := parsePortRange(v)
				if err != nil {
					return nil, invalidFilter("invalid filter '%s=%s': %v", k, v, err)
				}
				f.ports[k] = append(f.ports[k], r)
			case "exited":
				code, err := strconv.Atoi(v)
				if err != nil {
					return nil, invalidFilter("invalid filter 'exited=%s': want an exit code", v)
				}
				f.exited = append(f.exited, code)
			case "before", "since":
				c := findRef(list, v)
				if c == nil {
					return nil, errs.New(errdefs.ErrNotFound, "no such container: %s", v)
				}
				if k == "before" {
					f.before = c
				} else {
					f.since = c
				}
			}
		}
	}
	return f, nil
}

// findRef resolves a container reference the way Store.Get does: a full
// ID, else a name, else a unique ID prefix.
func findRef(list []*Container, ref string) *Container {
	var byName, prefix *Container
	ambiguous := false
	for _, c := range list {
		switch {
		case c.ID == ref:
			return c
		case c.Name == strings.TrimPrefix(ref, "/"):
			byName = c
		case ref != "" && strings.HasPrefix(c.ID, ref):
			ambiguous = ambiguous || prefix != nil
			prefix = c
		}
	}
	if byName != nil {
		return byName
	}
	if ambiguous {
		return nil
	}
	return prefix
}

func (f *psFilter) match(c *Container) bool {
	for k, vs := range f.terms {
		if len(vs) == 0 {
			continue
		}
		ok := false
		switch k {
		case "id":
			ok = anyMatch(f.patterns[k], c.ID)
		case "name":
			ok = anyMatch(f.patterns[k], c.Name) || anyMatch(f.patterns[k], "/"+c.Name)
		case "status":
			ok = contains(vs, string(c.State.Status))
		case "health":
			// Docker's values: starting, healthy, unhealthy, or none for
			// a container without a check (or not running one).
			h := "none"
			if c.State.Health != nil && c.State.Status == StatusRunning {
				h = c.State.Health.Status
			}
			ok = contains(vs, h)
		case "exited":
			for _, code := range f.exited {
				ok = ok || (c.State.Status == StatusExited && c.State.ExitCode == code)
			}
		case "label":
			// Unlike the other keys, every label term must match, as in
			// Docker (label=a --filter label=b is a and b).
			ok = true
			for _, v := range vs {
				name, want, hasValue := strings.Cut(v, "=")
				got, found := c.Config.Labels[name]
				ok = ok && found && (!hasValue || got == want)
			}
		case "ancestor":
			for _, v := range vs {
				ok = ok || sameImage(c.Config, v)
			}
		case "volume":
			// A volume's name, a bind mount's host path, or where
			// either is mounted, as in docker.
			for _, m := range c.Config.Mounts {
				ok = ok || contains(vs, m.Name) || contains(vs, m.Destination)
			}
			for _, b := range c.Config.Binds {
				ok = ok || contains(vs, b.Source) || contains(vs, b.Destination)
			}
		case "network":
			// A network's name or ID, as in docker.
			for _, n := range f.networks(c) {
				ok = ok || contains(vs, n)
			}
		case "publish", "expose":
			ports := publishedPorts(c)
			if k == "expose" {
				ports = exposedPorts(c)
			}
			for _, r := range f.ports[k] {
				for _, p := range ports {
					ok = ok || r.has(p)
				}
			}
		case "before":
			ok = c.Created.Before(f.before.Created) && c.ID != f.before.ID
		case "since":
			ok = c.Created.After(f.since.Created) && c.ID != f.since.ID
		}
		if !ok {
			return false
		}
	}
	return true
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func contains(vs []string, s string) bool {
	for _, v := range vs {
		if v == s {
			return true
		}
	}
	return false
}

// sameImage reports whether the container was created from ref: the
// reference it was created with (busybox is busybox:latest), or the image
// ID or an ID prefix of at least 4 hex digits.
func sameImage(cfg Config, ref string) bool {
	if ref == "" {
		return false
	}
	if withLatest(cfg.Image) == withLatest(ref) {
		return true
	}
	id := strings.TrimPrefix(cfg.ImageID, "sha256:")
	short := strings.TrimPrefix(ref, "sha256:")
	return id != "" && len(short) >= 4 && strings.HasPrefix(id, short)
}

func withLatest(ref string) string {
	if strings.Contains(ref, "@") || strings.LastIndex(ref, ":") > strings.LastIndex(ref, "/") {
		return ref
	}
	return ref + ":latest"
}
