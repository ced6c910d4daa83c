// Package rng is virtio-rng (virtio 1.2, section 5.4): one request queue
// whose writable buffers the device fills from crypto/rand, so the guest
// kernel has entropy early in boot.
//
// Concurrency: one goroutine serves the queue, woken by QueueNotify, which
// only records a wake-up and never blocks the vCPU that kicked. Chains are
// answered in order. At most MaxBytesPerChain bytes are produced per chain,
// because overlapping guest descriptors can make a chain look arbitrarily
// large.
//
// It does not rate-limit entropy.
package rng

import (
	"crypto/rand"
	"errors"
	"log/slog"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// QueueSize is the maximum size of the request queue.
const QueueSize = 256

// MaxBytesPerChain caps the entropy written into one chain.
const MaxBytesPerChain = 64 << 10

// Device is a virtio-rng device.
type Device struct {
	wake    virtio.Waker
	workers virtio.Workers
}

var _ virtio.Device = (*Device)(nil)

// New returns an inactive virtio-rng device.
func New() *Device { return &Device{wake: virtio.NewWaker()} }

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() virtio.DeviceID { return virtio.IDRNG }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc
}

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device; virtio-rng has no configuration.
func (d *Device) ReadConfig(offset uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(_ memory.Memory, _ uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	if len(qs) != 1 || qs[0] == nil {
		return errors.New("virtio-rng: request queue not set up")
	}
	q := qs[0]
	d.workers.Start()
	d.workers.Go(func(stop <-chan struct{}) {
		virtio.ServeQueue("rng", q, d.wake, stop, irq, fill)
	})
	d.wake.Wake() // serve chains published before DRIVER_OK
	return nil
}

// fill writes random bytes into every writable buffer of c, up to
// MaxBytesPerChain.
func fill(c *queue.Chain) uint32 {
	w := c.Writer()
	for left := MaxBytesPerChain; left > 0; {
		b := w.Next(left)
		if b == nil {
			break
		}
		if _, err := rand.Read(b); err != nil {
			// crypto/rand does not fail on Linux; if it ever does, hand
			// back what is filled rather than unrandom bytes.
			slog.Error("virtio-rng: reading crypto/rand", "err", err)
			return w.Written() - uint32(len(b))
		}
		left -= len(b)
	}
	return w.Written()
}

// QueueNotify implements virtio.Device.
func (d *Device) QueueNotify(index int) {
	if index == 0 {
		d.wake.Wake()
	}
}

// Reset implements virtio.Device.
func (d *Device) Reset() { d.workers.Stop() }
