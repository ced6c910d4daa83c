package virtio

import (
	"errors"
	"log/slog"
	"sync"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// ChainHandler serves one descriptor chain and returns the number of bytes
// it wrote into the chain's writable buffers (the used length).
type ChainHandler func(c *queue.Chain) (written uint32)

// ServeQueue is the worker loop of a request/response queue (blk, rng, a
// device's transmit queue): it sleeps until woken or stopped, then drains q
// with notifications disabled, re-enables them and re-checks before
// sleeping again, so a chain published while notifications were off is
// never stranded. It raises irq once per drained batch if the driver wants
// it. Malformed chains are returned unused (length 0); a queue the driver
// broke stops the loop until the device is reset.
//
// ServeQueue returns when stop is closed or the queue is broken.
func ServeQueue(name string, q *queue.Queue, wake Waker, stop <-chan struct{}, irq Interrupt, handle ChainHandler) {
	for {
		select {
		case <-wake:
		case <-stop:
			return
		}
		if err := DrainQueue(name, q, irq, handle); err != nil {
			return
		}
	}
}

// DrainQueue serves every chain available on q, then interrupts the driver
// if it wants one. It returns an error only for a broken queue.
func DrainQueue(name string, q *queue.Queue, irq Interrupt, handle ChainHandler) error {
	defer Signal(name, q, irq)
	for {
		q.DisableNotify()
		for {
			c, err := q.Pop()
			if errors.Is(err, queue.ErrBroken) {
				LogGuestError("virtio: queue stopped", "queue", name, "err", err)
				return err
			}
			if err != nil {
				LogGuestError("virtio: dropping malformed chain", "queue", name, "err", err)
				PushUsed(name, q, c.Head, 0)
				continue
			}
			if c == nil {
				break
			}
			PushUsed(name, q, c.Head, handle(c))
		}
		if !q.EnableNotify() {
			return nil
		}
	}
}

// PushUsed returns a chain to the driver, logging the impossible failure
// (a head the queue itself handed out is always in range).
func PushUsed(name string, q *queue.Queue, head uint16, n uint32) {
	if err := q.PushUsed(head, n); err != nil {
		slog.Error("virtio: returning a chain", "queue", name, "err", err)
	}
}

// Signal raises irq if the driver wants an interrupt for what q used since
// the last call.
func Signal(name string, q *queue.Queue, irq Interrupt) {
	if q.NeedsInterrupt() {
		if err := irq.Trigger(); err != nil {
			slog.Warn("virtio: raising interrupt", "queue", name, "err", err)
		}
	}
}

// Workers runs a device's queue goroutines between Activate and Reset.
// The zero value is ready to use; it is not safe for concurrent use (the
// transport serialises Activate and Reset).
type Workers struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// Start begins a new generation of workers; Stop must be called before
// the next Start. Preconditions: no workers running.
func (w *Workers) Start() { w.stop = make(chan struct{}) }

// Go runs fn in a worker goroutine; fn must return once stop is closed.
func (w *Workers) Go(fn func(stop <-chan struct{})) {
	stop := w.stop
	w.wg.Go(func() { fn(stop) })
}

// Stop closes the stop channel and waits for every worker to return. It is
// a no-op when nothing was started.
func (w *Workers) Stop() {
	if w.stop == nil {
		return
	}
	close(w.stop)
	w.wg.Wait()
	w.stop = nil
}

// Running reports whether workers were started and not stopped.
func (w *Workers) Running() bool { return w.stop != nil }
