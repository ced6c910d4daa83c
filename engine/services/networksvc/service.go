// Package networksvc is the network service: networks and container
// endpoints as the API and the container service use them, over the
// network store and the host's networking (engine/networks).
//
// It creates, lists, removes and prunes networks (docker network
// create/ls/rm/prune, with docker's filters), connects containers to them
// (an address at create or connect, kept until the container is removed or
// disconnected), and plumbs a container's endpoints when it starts: its
// bridges, taps and nftables rules, its published ports' proxies, its names
// in the networks' DNS servers. Plumb returns what the VM and the agent
// need (NICs, interfaces, routes, /etc/hosts and /etc/resolv.conf). It
// reports network events (create, connect, disconnect, destroy).
//
// It has no transport code and starts no VM. The userland proxy and the
// DNS server are other packages, reached through the Proxies and Names
// hooks.
package networksvc

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/events"
	dfilters "github.com/vmctl/vmctl/engine/filters"
	"github.com/vmctl/vmctl/engine/networks"
)

// The service hands out the store's domain types, so that its users need
// not import the store.
type (
	Network         = networks.Network
	Endpoint        = networks.Endpoint
	PortBinding     = networks.PortBinding
	CreateOptions   = networks.CreateOptions
	ContainerRef    = networks.ContainerRef
	EndpointOptions = networks.EndpointOptions
	DNSConfig       = networks.DNSConfig
)

// DefaultNetwork is the default network's name.
const DefaultNetwork = networks.DefaultName

// Config wires a Service.
type Config struct {
	Store *networks.Store
	// Host changes the host's networking; the service takes the store's
	// host lock around every change.
	Host *networks.Host
	// Events receives the network events; nil reports none.
	Events events.Publisher
	// Proxies runs the userland proxies of published ports; nil runs none
	// (ports are then published by DNAT alone: not on 127.0.0.1, not to a
	// container's own network, and a port of 0 cannot be chosen).
	Proxies Proxies
	// Names runs the networks' DNS servers; nil runs none.
	Names Names
	// KernelPorts is dockerd's --userland-proxy=false (see
	// networks.RuleOptions): the proxies still run, to hold the host ports
	// and serve what no rule carries (IPv6), but the host's loopback and
	// the containers reach published ports through DNAT. Host must have
	// route_localnet set for it (networks.Host.SetRouteLocalnet).
	KernelPorts bool
}

// Service manages networks and endpoints, and reports their events.
type Service struct {
	store   *networks.Store
	host    *networks.Host
	events  events.Publisher
	proxies Proxies
	names   Names
	rules   networks.RuleOptions

	// mu serialises this process's changes to the host, so that only one
	// goroutine queues on the store's host lock (which orders processes).
	mu sync.Mutex
}

// New returns a Service.
func New(cfg Config) *Service {
	return &Service{store: cfg.Store, host: cfg.Host, events: cfg.Events, proxies: cfg.Proxies, names: cfg.Names,
		rules: networks.RuleOptions{KernelPorts: cfg.KernelPorts}}
}

// publish reports a network event as dockerd does: the actor is the
// network's ID, with its name and driver, and the container for connect
// and disconnect.
func (s *Service) publish(action string, n Network, containerID string) {
	if s.events == nil {
		return
	}
	attrs := map[string]string{"name": n.Name, "type": n.Driver}
	if containerID != "" {
		attrs["container"] = containerID
	}
	s.events.Publish(events.Event{Type: events.TypeNetwork, Action: action, ID: n.ID, Attributes: attrs})
}

// lockHost holds the host for one change: this process's mutex, then the
// store's lock across processes. The caller calls the returned unlock.
func (s *Service) lockHost(ctx context.Context) (unlock func(), err error) {
	s.mu.Lock()
	l, err := s.store.LockHost(ctx)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return func() { l.Release(); s.mu.Unlock() }, nil
}

// Create makes a network (docker network create). It changes nothing on
// the host: the bridge comes with the first container that starts on it.
func (s *Service) Create(ctx context.Context, o CreateOptions) (Network, error) {
	var taken []netip.Prefix
	if o.Subnet == "" && s.host != nil {
		var err error
		if taken, err = s.host.TakenPrefixes(); err != nil {
			return Network{}, err
		}
	}
	n, err := s.store.Create(o, taken)
	if err != nil {
		return Network{}, err
	}
	s.publish("create", n, "")
	return n, nil
}

// Get finds a network by ID, name or unique ID prefix.
func (s *Service) Get(ctx context.Context, idOrName string) (Network, error) {
	return s.store.Get(idOrName)
}

// NetworkEndpoints returns the endpoints of a network (docker network
// inspect's Containers), running containers' and others'.
func (s *Service) NetworkEndpoints(ctx context.Context, idOrName string) ([]Endpoint, error) {
	n, err := s.store.Get(idOrName)
	if err != nil {
		return nil, err
	}
	all, err := s.store.Endpoints()
	if err != nil {
		return nil, err
	}
	out := []Endpoint{}
	for _, e := range all {
		if e.NetworkID == n.ID {
			out = append(out, e)
		}
	}
	return out, nil
}

// listFilters are docker network ls's filters.
var listFilters = map[string]bool{"name": true, "id": true, "label": true, "driver": true, "type": true, "dangling": true, "scope": true}

// List returns the networks that match docker network ls's filters: name
// and id (a regular expression, or the text it contains), label (key or
// key=value, every one), driver, type (custom or builtin), dangling (true
// or false: no container is connected) and scope (local).
func (s *Service) List(ctx context.Context, filters map[string][]string) ([]Network, error) {
	for k, vs := range filters {
		if !listFilters[k] {
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k)
		}
		for _, v := range vs {
			if k == "type" && v != "custom" && v != "builtin" {
				return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter: 'type'='%s'", v)
			}
		}
	}
	if d := filters["dangling"]; len(d) > 1 {
		return nil, errs.New(errdefs.ErrInvalidArgument, `got more than one value for filter key "dangling"`)
	} else if len(d) == 1 && d[0] != "true" && d[0] != "false" && d[0] != "1" && d[0] != "0" {
		return nil, errs.New(errdefs.ErrInvalidArgument, `invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")`)
	}
	list, err := s.store.List()
	if err != nil {
		return nil, err
	}
	var used map[string]int
	if len(filters["dangling"]) > 0 {
		if used, err = s.usage(); err != nil {
			return nil, err
		}
	}
	out := []Network{}
	for _, n := range list {
		if matches(filters, n, used) {
			out = append(out, n)
		}
	}
	return out, nil
}

// usage counts each network's endpoints.
func (s *Service) usage() (map[string]int, error) {
	eps, err := s.store.Endpoints()
	if err != nil {
		return nil, err
	}
	used := map[string]int{}
	for _, e := range eps {
		used[e.NetworkID]++
	}
	return used, nil
}

func matches(f map[string][]string, n Network, used map[string]int) bool {
	anyOf := func(key, value string, match func(pattern, value string) bool) bool {
		vs := f[key]
		return len(vs) == 0 || slices.ContainsFunc(vs, func(p string) bool { return match(p, value) })
	}
	exact := func(p, v string) bool { return p == v }
	builtin := n.Default
	typ := "custom"
	if builtin {
		typ = "builtin"
	}
	if !anyOf("name", n.Name, matchPattern) || !anyOf("id", n.ID, matchPattern) || !anyOf("driver", n.Driver, exact) ||
		!anyOf("type", typ, exact) || !anyOf("scope", "local", exact) {
		return false
	}
	for _, l := range f["label"] {
		if !dfilters.HasLabel(n.Labels, l) {
			return false
		}
	}
	for _, d := range f["dangling"] {
		dangling := !builtin && used[n.ID] == 0
		if (d == "true" || d == "1") != dangling {
			return false
		}
	}
	return true
}

// matchPattern is docker's filter match: the value matches the pattern as
// a regular expression, or (a pattern that is not one) contains it.
func matchPattern(pattern, value string) bool {
	if re, err := regexp.Compile(pattern); err == nil {
		return re.MatchString(value)
	}
	return strings.Contains(value, pattern)
}

// Remove deletes a network that no container is connected to, and its
// bridge. The default network cannot be removed.
func (s *Service) Remove(ctx context.Context, idOrName string) error {
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	n, err := s.store.Remove(idOrName)
	if err != nil {
		return err
	}
	s.publish("destroy", n, "")
	// The record is gone; what is left on the host goes now. The host
	// lock keeps a start from making the bridge again meanwhile.
	var herr []error
	if s.names != nil {
		s.names.Remove(n.ID)
	}
	if s.host != nil {
		if err := s.host.DeleteLink(n.Bridge); err != nil {
			herr = append(herr, err)
		}
		if err := s.refreshRules(); err != nil {
			herr = append(herr, err)
		}
	}
	if err := errors.Join(herr...); err != nil {
		return fmt.Errorf("network %s removed, but not all of it from the host: %w", n.Name, err)
	}
	return nil
}

// pruneFilters are docker network prune's filters.
var pruneFilters = map[string]bool{"label": true, "label!": true, "until": true}

// Prune removes the custom networks no container is connected to, of those
// the filters choose (label and label!, key or key=value; until, a time
// or a duration before now), and returns their names.
func (s *Service) Prune(ctx context.Context, filters map[string][]string) ([]string, error) {
	var until time.Time
	for k, vs := range filters {
		if !pruneFilters[k] {
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k)
		}
		if k == "until" {
			for _, v := range vs {
				t, err := parseUntil(v)
				if err != nil {
					return nil, err
				}
				until = t
			}
		}
	}
	list, err := s.store.List()
	if err != nil {
		return nil, err
	}
	used, err := s.usage()
	if err != nil {
		return nil, err
	}
	removed := []string{}
	for _, n := range list {
		if n.Default || used[n.ID] > 0 || (!until.IsZero() && !n.Created.Before(until)) ||
			slices.ContainsFunc(filters["label"], func(l string) bool { return !dfilters.HasLabel(n.Labels, l) }) ||
			slices.ContainsFunc(filters["label!"], func(l string) bool { return dfilters.HasLabel(n.Labels, l) }) {
			continue
		}
		// A container connected meanwhile keeps its network.
		if err := s.Remove(ctx, n.ID); err != nil {
			if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
				continue
			}
			return removed, err
		}
		removed = append(removed, n.Name)
	}
	return removed, nil
}

// parseUntil reads docker's until filter: a timestamp (RFC 3339, a date,
// or Unix seconds) or a duration before now ("10m").
func parseUntil(v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	var sec, nsec int64
	if n, _ := fmt.Sscanf(v, "%d.%d", &sec, &nsec); n >= 1 {
		return time.Unix(sec, nsec), nil
	}
	return time.Time{}, errs.New(errdefs.ErrInvalidArgument, "invalid filter 'until=%s': want a time or a duration such as 24h", v)
}

// HostWarnings says what on this host keeps containers' traffic from
// flowing, for docker info's warnings: other tables' forward chains with
// policy drop (our table's accept cannot override another table's drop).
func (s *Service) HostWarnings(ctx context.Context) ([]string, error) {
	if s.host == nil {
		return nil, nil
	}
	blockers, err := s.host.ForwardBlockers()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range blockers {
		out = append(out, fmt.Sprintf("WARNING: nftables %s: traffic forwarded from and to containers is dropped there unless that chain accepts it "+
			"(for docker's: iptables -I DOCKER-USER -i vmctl0 -j ACCEPT; iptables -I DOCKER-USER -o vmctl0 -j ACCEPT; the same for each br-* bridge of vmctl's networks)", b))
	}
	return out, nil
}
