// Package sandbox defines how the engine runs a guest VM, independent of the
// hypervisor: a Driver turns a Config into a running Sandbox, whose only
// channel into the guest is the agent connection.
//
// Drivers (vmm for vmctl-vmm, qemu) live in subpackages. The engine never
// links a VMM: each VM is its own process, controlled over that process's
// API, so a crashed VMM takes down only its own VM.
//
// This package does not know about containers or images.
package sandbox

import (
	"context"
	"net"
	"time"
)

// Disk is a block device given to the guest as virtio-blk.
type Disk struct {
	// Path is the backing file on the host.
	Path string
	// Serial is the virtio-blk device ID the agent uses to find the disk.
	// At most 20 bytes (VIRTIO_BLK_ID_BYTES).
	Serial   string
	ReadOnly bool
}

// Config describes one VM. Paths must be absolute.
type Config struct {
	// ID names the VM in logs and process titles.
	ID string
	// Kernel is a bzImage; Initrd is the guest image whose /init is the agent.
	Kernel string
	Initrd string
	// KernelArgs are appended to the driver's own command line.
	KernelArgs []string
	VCPUs      int
	MemoryMiB  int
	Disks      []Disk
	// StateDir holds the VM's sockets, console log and pid file. The driver
	// creates it if needed and removes what it created on Destroy.
	StateDir string
	// ConsoleLog, if set, receives the guest's serial console.
	ConsoleLog string
}

// ExitReason says why a VM ended.
type ExitReason string

const (
	// ExitShutdown: the guest shut down or rebooted (the normal end).
	ExitShutdown ExitReason = "shutdown"
	// ExitKilled: the host stopped the VM (Destroy, or a signal).
	ExitKilled ExitReason = "killed"
	// ExitCrashed: the VMM process died or reported a guest panic/internal error.
	ExitCrashed ExitReason = "crashed"
)

// Exit records how a VM ended.
type Exit struct {
	Reason ExitReason
	// Detail is a one-line human explanation (VMM exit status, event name).
	Detail string
	At     time.Time
}

// Sandbox is a running VM.
type Sandbox interface {
	// ID returns Config.ID.
	ID() string
	// Pid returns the VMM process id.
	Pid() int
	// DialAgent opens the agent channel. Under drivers whose channel is a
	// single byte stream (virtio-serial) it may be called only once per VM.
	DialAgent(ctx context.Context) (net.Conn, error)
	// Wait blocks until the VM has ended and returns how.
	Wait(ctx context.Context) (Exit, error)
	// Stop asks the VMM to end the VM (ACPI power-off or equivalent), then
	// kills it if it is still running when ctx ends.
	Stop(ctx context.Context) error
	// Destroy kills the VMM if it still runs, reaps it and removes every
	// host resource the driver created (sockets, pid file, StateDir).
	// Safe to call more than once and after Wait.
	Destroy() error
}

// Driver starts sandboxes on one kind of hypervisor.
type Driver interface {
	// Name is "qemu" or "kvm".
	Name() string
	// Start boots a VM. On error nothing is left behind.
	Start(ctx context.Context, cfg Config) (Sandbox, error)
}

// Reattacher is implemented by drivers whose VMs can outlive the engine
// process and be adopted by a later one (a daemon restarted after a crash).
type Reattacher interface {
	// Reattach adopts the running VM whose VMM process is pid and whose
	// state is in cfg.StateDir (cfg.ID and cfg.ConsoleLog as at Start; the
	// rest of cfg is ignored). It fails, leaving the VM alone, if pid is not
	// that VM's VMM. The returned Sandbox behaves like one from Start: its
	// DialAgent returns the re-established agent channel, and Destroy
	// removes StateDir.
	Reattach(ctx context.Context, cfg Config, pid int) (Sandbox, error)
}
