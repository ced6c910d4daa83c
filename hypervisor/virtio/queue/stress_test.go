package queue_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// TestConcurrentDriver runs the driver mock and a device worker on
// different goroutines (so, under load, on different CPUs) with both
// notification schemes. A lost kick or a lost interrupt stalls the test
// into its timeout; a torn or stale read shows up as a wrong reply; the
// race detector checks that the ring index accesses order the plain
// accesses around them.
func TestConcurrentDriver(t *testing.T) {
	chains := 100000
	if testing.Short() {
		chains = 10000
	}
	for _, eventIdx := range []bool{false, true} {
		mem := queuetest.NewMemory(0x10000, memSize)
		d := queuetest.NewDriver(mem, 0x10000, 32, 64)
		d.EventIdx = eventIdx
		q, err := queue.New(mem, d.Config())
		if err != nil {
			t.Fatal(err)
		}
		kick := make(chan struct{}, 1)
		irq := make(chan struct{}, 1)
		done := make(chan struct{})
		deviceErr := make(chan error, 1)
		go func() { deviceErr <- echoDevice(q, kick, irq, done) }()

		signal := func(c chan struct{}) {
			select {
			case c <- struct{}{}:
			default:
			}
		}
		// Batches of 1..16 chains, each published with its own kick
		// decision while the device may be draining, then drained
		// completely: a chain whose kick was suppressed but never picked up
		// stalls the batch.
		sent, received := 0, 0
		rng := rand.New(rand.NewPCG(1, 2))
		for received < chains {
			for batch := 1 + rng.IntN(16); batch > 0 && sent < chains; batch-- {
				var seq [8]byte
				binary.LittleEndian.PutUint64(seq[:], uint64(sent))
				old := d.AvailIdx()
				if _, err := d.Add(queuetest.Readable(seq[:]), queuetest.Writable(8)); err != nil {
					t.Fatal(err)
				}
				sent++
				if d.KickWanted(old) {
					signal(kick)
				}
			}
			for received < sent {
				u, ok, err := d.PopUsed()
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					if want := uint64(received)*3 + 1; u.Len != 8 || binary.LittleEndian.Uint64(u.Data) != want {
						t.Fatalf("eventIdx=%v: reply %d = %d bytes % x, want %d", eventIdx, received, u.Len, u.Data, want)
					}
					received++
					continue
				}
				if d.RearmInterrupt() {
					continue
				}
				select {
				case <-irq:
				case err := <-deviceErr:
					t.Fatalf("device stopped: %v", err)
				case <-time.After(10 * time.Second):
					t.Fatalf("eventIdx=%v: stalled after %d of %d replies with %d outstanding (lost kick or interrupt)",
						eventIdx, received, sent, d.Outstanding())
				}
			}
		}
		close(done)
		if err := <-deviceErr; err != nil {
			t.Fatal(err)
		}
	}
}

// echoDevice answers each chain's 8-byte number n with 3n+1, in the
// disable/drain/enable/re-check loop every device worker uses.
func echoDevice(q *queue.Queue, kick <-chan struct{}, irq chan<- struct{}, done <-chan struct{}) error {
	for {
		select {
		case <-kick:
		case <-done:
			return nil
		}
		for {
			q.DisableNotify()
			for {
				c, err := q.Pop()
				if err != nil {
					return err
				}
				if c == nil {
					break
				}
				n := binary.LittleEndian.Uint64(c.Readable[0].Data)
				binary.LittleEndian.PutUint64(c.Writable[0].Data, n*3+1)
				if err := q.PushUsed(c.Head, 8); err != nil {
					return err
				}
			}
			if !q.EnableNotify() {
				break
			}
		}
		if q.NeedsInterrupt() {
			select {
			case irq <- struct{}{}:
			default:
			}
		}
	}
}
