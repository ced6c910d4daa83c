// Package virtio defines the contract between virtio device models (blk,
// net, vsock, rng, 9p) and their transport (virtio-mmio version 2), plus the
// feature bits and status values of the virtio 1.x specification.
//
// Device models never touch KVM: on activation they get guest memory, their
// queues and an interrupt trigger. Each device runs one goroutine per queue,
// woken by QueueNotify; the transport's register handlers (which run on vCPU
// threads) only record state and wake those goroutines, so no host I/O ever
// runs on a vCPU thread.
//
// This package does not lay out or walk virtqueues (package queue does) and
// does not decode registers (package mmio does).
package virtio

import (
	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// Interrupt raises the device's interrupt line (an irqfd in the VMM; a
// counter in tests). The transport sets the interrupt status bits before
// calling it.
type Interrupt interface {
	Trigger() error
}

// DeviceID is the virtio device type (virtio 1.2, section 5).
type DeviceID uint32

// Device types implemented by this project.
const (
	IDNet     DeviceID = 1
	IDBlock   DeviceID = 2
	IDConsole DeviceID = 3
	IDRNG     DeviceID = 4
	ID9P      DeviceID = 9
	IDVsock   DeviceID = 19
)

func (id DeviceID) String() string {
	switch id {
	case IDNet:
		return "net"
	case IDBlock:
		return "block"
	case IDConsole:
		return "console"
	case IDRNG:
		return "rng"
	case ID9P:
		return "9p"
	case IDVsock:
		return "vsock"
	}
	return "unknown"
}

// Device-independent feature bits (virtio 1.2, section 6).
const (
	// FeatureIndirectDesc lets the driver use indirect descriptor tables.
	FeatureIndirectDesc uint64 = 1 << 28
	// FeatureEventIdx enables used_event/avail_event notification
	// suppression.
	FeatureEventIdx uint64 = 1 << 29
	// FeatureVersion1 marks a virtio 1.x (non-legacy) device. Every device
	// here offers it and the transport refuses drivers that do not ack it.
	FeatureVersion1 uint64 = 1 << 32
)

// Device status bits, a 1:1 mapping of the Device Status Field (virtio 1.2,
// section 2.1).
const (
	StatusAcknowledge      uint32 = 1
	StatusDriver           uint32 = 2
	StatusDriverOK         uint32 = 4
	StatusFeaturesOK       uint32 = 8
	StatusDeviceNeedsReset uint32 = 64
	StatusFailed           uint32 = 128
)

// Device is a virtio device model behind a transport.
//
// Lifecycle: Inactive --Activate--> Active --Reset--> Inactive. The
// transport serialises calls to Activate, Reset, ReadConfig and
// WriteConfig; QueueNotify may be called concurrently with everything
// (from an ioeventfd goroutine) and must never block.
type Device interface {
	// DeviceID is the virtio device type the transport reports.
	DeviceID() DeviceID
	// Features are the offered feature bits. They include FeatureVersion1.
	Features() uint64
	// QueueMaxSizes gives one maximum size (a power of two) per queue; its
	// length is the device's queue count.
	QueueMaxSizes() []uint16
	// ReadConfig fills data from the device configuration space at offset.
	// Bytes beyond the configuration space read as zero.
	ReadConfig(offset uint64, data []byte)
	// WriteConfig handles a driver write to the configuration space. Writes
	// to read-only fields are ignored.
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device after the driver set DRIVER_OK. features
	// are the negotiated bits (a subset of Features, with
	// FeatureVersion1). queues has one entry per queue, nil for queues the
	// driver did not make ready. irq signals used buffers.
	//
	// Preconditions: the device is inactive.
	Activate(mem memory.Memory, features uint64, queues []*queue.Queue, irq Interrupt) error
	// QueueNotify wakes the worker of queue index (a guest kick). Unknown
	// indexes and inactive devices ignore it.
	QueueNotify(index int)
	// Reset stops the device's queue workers, waits for them to return and
	// forgets guest memory, queues and the interrupt. It is a no-op on an
	// inactive device.
	Reset()
}

// Waker wakes one queue worker goroutine. Notifications coalesce: any
// number of Wake calls before the worker looks count as one, and Wake never
// blocks, so a vCPU thread can always kick a busy or stalled worker.
type Waker chan struct{}

// NewWaker returns a Waker with room for one pending wake-up.
func NewWaker() Waker { return make(Waker, 1) }

// Wake records a pending wake-up without blocking.
func (w Waker) Wake() {
	select {
	case w <- struct{}{}:
	default:
	}
}

// ReadConfigBytes copies cfg[offset:] into data, zero-filling whatever lies
// beyond cfg, so devices can serve any guest-chosen offset and width.
func ReadConfigBytes(cfg []byte, offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
		if off := offset + uint64(i); off >= offset && off < uint64(len(cfg)) {
			data[i] = cfg[off]
		}
	}
}
