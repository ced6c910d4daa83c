// Package virtio defines the contract between virtio device models (blk,
// net, vsock, rng, console) and their transport (virtio-mmio version 2),
// plus the feature bits and status values of the virtio 1.x specification.
//
// Device models never touch KVM: on activation they get guest memory, their
// queues and an interrupt trigger.
package virtio


// Interrupt raises the device's interrupt line (an irqfd in the VMM; a
// counter in tests). The transport sets the interrupt status bits before
// calling it.
type Interrupt interface {
	Trigger() error
}
