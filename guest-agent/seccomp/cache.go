package seccomp

import (
	"crypto/sha256"
	"encoding/json"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// cacheSize bounds the filters a Cache keeps: a pod's containers rarely
// have more than a few profiles.
const cacheSize = 8

// Cache compiles each profile once per agent: the containers of a pod
// share one VM (the containerd shim) and mostly Docker's default profile,
// and compiling is the costliest part of checking a spec under emulation
// (~0.7 ms natively, tens of ms under TCG). Its filters are shared: callers
// must not change them. The zero value is ready to use.
type Cache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*Filter
}

// Compile is Compile with the answer kept by the profile's content. Errors
// are not kept.
func (c *Cache) Compile(s *specs.LinuxSeccomp) (*Filter, error) {
	if s == nil {
		return nil, nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return Compile(s)
	}
	key := sha256.Sum256(b)
	c.mu.Lock()
	f, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return f, nil
	}
	if f, err = Compile(s); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= cacheSize {
		c.m = map[[sha256.Size]byte]*Filter{}
	}
	c.m[key] = f
	c.mu.Unlock()
	return f, nil
}
