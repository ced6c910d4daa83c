package portproxy

import (
	"context"
	"sync"
)

// Manager keeps the proxies of many owners (containers, for the network
// service), so that publishing a container's ports is all or nothing and
// unpublishing them is one call. It is safe for concurrent use.
type Manager struct {
	opts Options

	mu      sync.Mutex
	proxies map[string][]*Proxy // guarded by mu
}

// NewManager returns a Manager whose proxies run with o.
func NewManager(o Options) *Manager {
	return &Manager{opts: o, proxies: make(map[string][]*Proxy)}
}

// Publish starts a proxy for each of bindings under owner, after stopping
// the ones owner had (so a container re-plumbed after a restart takes its
// ports again). It returns the bindings with their host ports resolved, in
// order. If any fails to start, none is left running and the error is the
// first failure (a *PortConflictError for a port that is taken). ctx bounds
// the start only.
func (m *Manager) Publish(ctx context.Context, owner string, bindings []Binding) ([]Binding, error) {
	m.Unpublish(owner)
	started := make([]*Proxy, 0, len(bindings))
	resolved := make([]Binding, 0, len(bindings))
	for _, b := range bindings {
		p, err := Start(ctx, b, m.opts)
		if err != nil {
			for _, p := range started {
				p.Stop()
			}
			return nil, err
		}
		started = append(started, p)
		resolved = append(resolved, p.Binding())
	}
	m.mu.Lock()
	old := m.proxies[owner]
	if len(started) > 0 {
		m.proxies[owner] = started
	} else {
		delete(m.proxies, owner)
	}
	m.mu.Unlock()
	// Another Publish for the same owner ran meanwhile: the last one wins.
	for _, p := range old {
		p.Stop()
	}
	return resolved, nil
}

// Unpublish stops owner's proxies; an owner without any is no error.
func (m *Manager) Unpublish(owner string) {
	m.mu.Lock()
	ps := m.proxies[owner]
	delete(m.proxies, owner)
	m.mu.Unlock()
	for _, p := range ps {
		p.Stop()
	}
}

// Published returns owner's bindings, host ports resolved.
func (m *Manager) Published(owner string) []Binding {
	m.mu.Lock()
	defer m.mu.Unlock()
	var bs []Binding
	for _, p := range m.proxies[owner] {
		bs = append(bs, p.Binding())
	}
	return bs
}

// Close stops every proxy.
func (m *Manager) Close() {
	m.mu.Lock()
	all := m.proxies
	m.proxies = make(map[string][]*Proxy)
	m.mu.Unlock()
	for _, ps := range all {
		for _, p := range ps {
			p.Stop()
		}
	}
}
