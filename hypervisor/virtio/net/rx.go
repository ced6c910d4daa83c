package net

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// receiver is the receive queue goroutine's state.
type receiver struct {
	d    *Device
	q    *queue.Queue
	irq  virtio.Interrupt
	stop <-chan struct{}
	off  offloads
	// target is how much frame room the receiver tries to hold before
	// reading, so that the largest frame the guest can get lands in guest
	// memory directly.
	target int

	// held are receive buffers popped from the queue and not used yet, in
	// the order the guest posted them. They carry over from frame to frame.
	held  []*queue.Chain
	hdr   [HeaderSize]byte // the tap's header for the frame being read
	spill []byte           // what did not fit the buffers handed to readv
	iovs  [][]byte
	used  []queue.UsedElem
	// failing is set while tap reads fail, so the failure is logged once.
	failing bool
}

func newReceiver(d *Device, q *queue.Queue, irq virtio.Interrupt, stop <-chan struct{}) *receiver {
	r := &receiver{d: d, q: q, irq: irq, stop: stop, off: d.off,
		spill: make([]byte, maxFrame+1), iovs: make([][]byte, 0, 64)}
	r.target = d.mtu + ethHeaderLen + vlanTagLen
	if r.off.rxTSO4 || r.off.rxTSO6 {
		r.target = maxFrame
	}
	return r
}

// run reads frames from the tap into guest buffers until stopped.
func (r *receiver) run() {
	for {
		if !r.fill() {
			return
		}
		iovs, chains, room := r.layout()
		n, err := readFrame(r.d.raw, iovs, r.signal)
		if err != nil {
			if !r.readFailed(err) {
				return
			}
			continue
		}
		r.failing = false
		if !r.deliver(n, chains, room) {
			return
		}
	}
}

// signal interrupts the driver if it wants to hear about the buffers used
// since the last call.
func (r *receiver) signal() { virtio.Signal("net-rx", r.q, r.irq) }

// fill makes sure at least one receive buffer is held, sleeping until the
// guest posts one, and with mergeable buffers takes more, without
// sleeping, up to the target room. It returns false when the device stops.
func (r *receiver) fill() bool {
	for len(r.held) == 0 {
		c, ok := r.pop(true)
		if !ok {
			return false
		}
		r.held = append(r.held, c)
	}
	if !r.off.mergeable {
		return true
	}
	room := -HeaderSize
	for _, c := range r.held {
		room += int(c.WritableLen())
	}
	for room < r.target && len(r.held) < int(r.q.Size()) {
		c, ok := r.pop(false)
		if !ok {
			return false
		}
		if c == nil {
			break
		}
		r.held = append(r.held, c)
		room += int(c.WritableLen())
	}
	return true
}

// pop returns the next usable receive buffer. Buffers the driver made
// unusable (no room for the header, device-readable parts, a malformed
// chain) go back to it with length 0. With block, it sleeps until the
// guest posts one; without, it returns nil when none is posted. ok is false
// when the device stops, or the driver broke the queue (then pop waits for
// the reset).
func (r *receiver) pop(block bool) (c *queue.Chain, ok bool) {
	for {
		c, err := r.q.Pop()
		switch {
		case errors.Is(err, queue.ErrBroken):
			virtio.LogGuestError("virtio-net: receive queue stopped", "tap", r.d.tap.Name(), "err", err)
			<-r.stop
			return nil, false
		case err != nil:
			virtio.LogGuestError("virtio-net: returning a malformed receive buffer", "tap", r.d.tap.Name(), "err", err)
			virtio.PushUsed("net-rx", r.q, c.Head, 0)
			continue
		case c != nil && (len(c.Readable) > 0 || c.WritableLen() < HeaderSize):
			r.d.stats.badRxBuffers.Add(1)
			virtio.PushUsed("net-rx", r.q, c.Head, 0)
			continue
		case c != nil:
			return c, true
		}
		if !block {
			return nil, true
		}
		// Before sleeping: the driver may need an interrupt for what was
		// used so far to post more buffers.
		r.signal()
		if r.q.EnableNotify() {
			continue
		}
		select {
		case <-r.d.rxWake:
		case <-r.stop:
			return nil, false
		}
	}
}

// layout returns the buffers for one readv: the private header buffer,
// the held guest buffers after the first one's header room (only the first
// buffer without mergeable buffers), then the spill buffer. chains is how
// many held buffers it covers and room how many frame bytes they take.
func (r *receiver) layout() (iovs [][]byte, chains, room int) {
	iovs = append(r.iovs[:0], r.hdr[:])
	limit := 1
	if r.off.mergeable {
		limit = len(r.held)
	}
	for i, c := range r.held[:limit] {
		skip := 0
		if i == 0 {
			skip = HeaderSize
		}
		before := len(iovs)
		iovs = appendBuffers(iovs, c.Writable, skip)
		if len(iovs) > maxIovecs-1 { // keep one for the spill buffer
			iovs = iovs[:before]
			break
		}
		chains++
		room += int(c.WritableLen()) - skip
	}
	iovs = append(iovs, r.spill)
	r.iovs = iovs
	return iovs, chains, room
}

// deliver hands the frame just read (n bytes with the tap's header; the
// first room frame bytes in the first chains held buffers, the rest in
// the spill buffer) to the guest. It returns false when the device stops
// while waiting for more buffers.
func (r *receiver) deliver(n, chains, room int) bool {
	frameLen := n - HeaderSize
	switch {
	case n < HeaderSize:
		r.d.drop(RxMalformed, max(frameLen, 0))
		return true
	case frameLen > room+len(r.spill):
		r.d.drop(RxTooLong, frameLen) // truncated by the tap
		return true
	}
	g, why := checkReceive(r.off, r.d.mtu, decodeHeader(r.hdr[:]), frameLen)
	if why != 0 {
		r.d.drop(why, frameLen)
		return true
	}
	used := r.used[:0]
	left := min(frameLen, room)
	k := 0 // held buffers the frame uses
	for ; k < chains && (left > 0 || k == 0); k++ {
		c := r.held[k]
		skip := 0
		if k == 0 {
			skip = HeaderSize
		}
		take := min(left, int(c.WritableLen())-skip)
		used = append(used, queue.UsedElem{Head: c.Head, Len: uint32(skip + take)})
		left -= take
	}
	// Bytes beyond the buffers given to readv are copied into the next
	// held buffers, or buffers the guest has yet to post.
	spilled := r.spill[:frameLen-min(frameLen, room)]
	for len(spilled) > 0 {
		if k >= 1 && !r.off.mergeable {
			r.d.drop(RxTooLong, frameLen) // the guest's buffer is too small
			return true
		}
		if k == len(r.held) {
			if k >= int(r.q.Size()) {
				r.d.drop(RxTooLong, frameLen) // more than the whole ring holds
				return true
			}
			c, ok := r.pop(true)
			if !ok {
				return false
			}
			r.held = append(r.held, c)
		}
		c := r.held[k]
		skip := 0
		if k == 0 {
			skip = HeaderSize
		}
		w := c.Writer()
		for s := skip; s > 0; {
			b := w.Next(s)
			if b == nil {
				break // cannot happen: a held buffer has room for the header
			}
			s -= len(b)
		}
		m := min(len(spilled), int(c.WritableLen())-skip)
		w.Write(spilled[:m]) // fits: m is at most the room left
		used = append(used, queue.UsedElem{Head: c.Head, Len: uint32(skip + m)})
		spilled = spilled[m:]
		k++
	}
	g.NumBuffers = uint16(k)
	var gh [HeaderSize]byte
	g.encode(gh[:])
	r.held[0].Writer().Write(gh[:]) // room checked when the buffer was popped
	if err := r.q.PushUsedBatch(used); err != nil {
		r.d.log.Error("virtio-net: returning receive buffers", "err", err) // heads came from the queue
	}
	r.used = used[:0]
	r.held = append(r.held[:0], r.held[k:]...)
	r.d.stats.rxFrames.Add(1)
	r.d.stats.rxBytes.Add(uint64(frameLen))
	r.signal()
	return true
}

// readFailed handles a failed tap read; it returns false when the device
// is stopping.
func (r *receiver) readFailed(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-r.stop // only Reset sets a deadline
		return false
	}
	select {
	case <-r.stop:
		return false
	default:
	}
	if errors.Is(err, unix.EINVAL) {
		// The host kernel had a frame its vnet header cannot express
		// and dropped it; the next read is unaffected.
		r.d.drop(RxMalformed, 0)
		return true
	}
	if !r.failing {
		r.d.log.Warn("virtio-net: tap read failed; retrying", "err", err)
		r.failing = true
	}
	select {
	case <-r.stop:
		return false
	case <-time.After(100 * time.Millisecond): // do not spin on a broken tap
	}
	return true
}
