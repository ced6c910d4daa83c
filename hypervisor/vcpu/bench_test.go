package vcpu

import (
	"sync/atomic"
	"testing"
)

// counter stops its vCPU after n port writes.
type counter struct {
	n, seen atomic.Int64
	stop    func()
}

func (c *counter) Read(uint64, []byte) {}
func (c *counter) Write(uint64, []byte) {
	if c.seen.Add(1) == c.n.Load() {
		c.stop()
	}
}

// BenchmarkPIOExit measures one userspace port-I/O exit round trip of the
// Go vCPU loop: guest `out`, KVM_RUN return, bus dispatch, re-entry.
func BenchmarkPIOExit(b *testing.B) {
	code := []byte{
		0xe6, 0x10, // out 0x10, al
		0xeb, 0xfc, // jmp back to the out
	}
	g := newTinyGuest(b, code, false)
	v := New(0, g.cpu, g.buses, nil)
	c := &counter{stop: func() { v.RequestStop(Result{Reason: ReasonStopped}) }}
	c.n.Store(int64(b.N))
	if err := g.buses.PIO.Register(0x10, 1, "counter", c); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := v.Start(); err != nil {
		b.Fatal(err)
	}
	v.Wait()
	b.StopTimer()
}
