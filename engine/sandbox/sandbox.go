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
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
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

// Share is a host directory given to the guest as a virtio-9p device (a
// container's bind mount). The guest mounts it by Tag.
type Share struct {
	// Path is the directory on the host, with no symlinks left to resolve:
	// the engine resolves them before the share exists.
	Path string
	// Tag is 1 to 31 bytes of letters, digits, '-' and '_'.
	Tag string
	// ReadOnly makes the VMM refuse every change, whatever the guest does.
	ReadOnly bool
}

// maxShareTag bounds a share's tag; the kernel's 9p client takes up to 31
// bytes for a virtio mount tag's name on the command line.
const maxShareTag = 31

// Validate checks what every driver needs of a share.
func (s Share) Validate() error {
	if !filepath.IsAbs(s.Path) {
		return fmt.Errorf("shared directory %q is not an absolute path", s.Path)
	}
	if st, err := os.Stat(s.Path); err != nil || !st.IsDir() {
		return fmt.Errorf("shared directory %s is not a directory", s.Path)
	}
	if s.Tag == "" || len(s.Tag) > maxShareTag {
		return fmt.Errorf("share %s: tag %q must be 1 to %d bytes", s.Path, s.Tag, maxShareTag)
	}
	for _, c := range []byte(s.Tag) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("share %s: tag %q: character %q not allowed (use letters, digits, '-', '_')", s.Path, s.Tag, c)
		}
	}
	return nil
}

// NIC is one virtio-net device of a VM, backed by a host tap that the
// engine created and attached to its network (docs/networking.md).
type NIC struct {
	// Tap is the host tap interface: persistent, created with
	// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR. The driver opens it by name.
	Tap string
	// MAC is the guest's address; the agent finds the device by it.
	MAC net.HardwareAddr
	// MTU is offered to the guest (VIRTIO_NET_F_MTU); 0 means 1500.
	MTU int
}

// maxTapName is IFNAMSIZ-1.
const maxTapName = 15

// Validate checks what every driver needs of a NIC: a tap name that is a
// valid interface name and safe in a VMM's option syntax (letters, digits,
// '-', '_', '.'), a unicast Ethernet address, and an MTU a virtio-net
// device can offer (68, the IPv4 minimum, to 65535).
func (n NIC) Validate() error {
	if n.Tap == "" || len(n.Tap) > maxTapName {
		return fmt.Errorf("NIC tap name %q must be 1 to %d bytes", n.Tap, maxTapName)
	}
	for _, c := range []byte(n.Tap) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("NIC tap name %q: character %q not allowed (use letters, digits, '-', '_', '.')", n.Tap, c)
		}
	}
	if len(n.MAC) != 6 || n.MAC[0]&1 != 0 || bytes.Equal(n.MAC, make(net.HardwareAddr, 6)) {
		return fmt.Errorf("NIC on tap %s: MAC address %q is not a unicast Ethernet address", n.Tap, n.MAC)
	}
	if n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535) {
		return fmt.Errorf("NIC on tap %s: MTU %d is outside 68..65535", n.Tap, n.MTU)
	}
	return nil
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
	// Shares are host directories the guest mounts over virtio-9p.
	Shares []Share
	// NICs are the VM's network devices, in guest order: the agent names
	// the i-th contract.InterfaceName(i) (eth0 first). None: the guest has
	// only loopback.
	NICs []NIC
	// NetNS, if set, is the path of the network namespace the VMM runs in,
	// where the NICs' taps are (a Kubernetes pod's). Only the QEMU driver
	// takes it.
	NetNS string
	// StateDir holds the VM's sockets, console log and pid file. The driver
	// creates it if needed and removes what it created on Destroy.
	StateDir string
	// ConsoleLog, if set, receives the guest's serial console.
	ConsoleLog string
	// Template boots a VM to be saved (Saver): Disks and NICs give only
	// its device shape. The driver attaches placeholders in their places:
	// empty disks, and NICs with TemplateMAC(i) and no host side; paths,
	// serials, taps and MACs are ignored. Shares are refused.
	Template bool
	// Restore, if set, is the state of a Template VM written by
	// Saver.Save: the VM starts from it instead of booting. Everything but
	// the console log and the state directory must give the same shape as
	// the template's (Kernel, Initrd, KernelArgs, VCPUs, MemoryMiB, the
	// number of Disks and NICs, no Shares); cfg's own disks and NICs take
	// the placeholders' places. Start fails, and ends the VM, if reading
	// Restore fails (a damaged state is for the reader to detect). The
	// guest still has the template's view of its devices until told
	// otherwise (the agent's Restored call).
	Restore io.Reader
	// Memory, if set with Template or Restore, is the guest's RAM: a
	// memfd of MemoryMiB. A Template VM keeps its RAM there (shared) and
	// its saved state leaves it out; the caller then seals it against
	// writes (F_SEAL_WRITE and the size seals) and gives the same file to
	// every VM restored from that state, which maps it copy-on-write, so
	// their unchanged pages are one copy in the host's memory and nothing
	// a restored VM or its VMM does can change what later VMs start from.
	Memory *os.File
}

// TemplateMAC is the address of a Template VM's i-th NIC, which a VM
// restored from it keeps until its guest is given its own: locally
// administered, unicast, 02:76:6d:74 ("vmt") then i.
func TemplateMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x76, 0x6d, 0x74, byte(i >> 8), byte(i)}
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

// File systems a guest mounts its shared directories with.
const (
	ShareVirtioFS = "virtiofs" // vhost-user-fs devices served by virtiofsd
	Share9P       = "9p"       // virtio-9p devices
)

// ShareFS says which file system a driver's VMs mount shares with
// (ShareVirtioFS unless the driver says otherwise with a ShareFS method).
func ShareFS(d Driver) string {
	if s, ok := d.(interface{ ShareFS() string }); ok {
		return s.ShareFS()
	}
	return ShareVirtioFS
}

// Saver is implemented by drivers that can save a VM booted to the point
// where it waits for work and start others from that state (Config.Restore),
// as Firecracker's snapshots and Kata's VM templates do.
type Saver interface {
	// SaveIdentity names what a saved state depends on beyond the Config:
	// the VMM binary, the accelerator and the CPU model. A state saved
	// under another identity must not be restored.
	SaveIdentity() string
	// CanRestore says why VMs of cfg cannot start from a saved state
	// (shares the VMM cannot migrate), or nil.
	CanRestore(cfg Config) error
	// Save stops sb, a VM started from a Template config, and writes its
	// state to w. sb is left stopped, to be destroyed. The caller must have
	// dialed the agent once and closed the connection: Save first waits
	// for the guest to wait for its next host, which is then the restored
	// VM's.
	Save(ctx context.Context, sb Sandbox, w io.Writer) error
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

// unprivilegedIDBase starts the range of user and group IDs that VMM
// processes run as once they have built their VM, one per VM
// (UnprivilegedID), as Firecracker's jailer advises: a VMM that breaks out
// of its filters still cannot signal, trace or read another one's files.
// The range is far above the IDs distributions hand out to users and to
// subordinate ID ranges.
const unprivilegedIDBase = 1_900_000_000

// UnprivilegedID is the user and group ID the VMM of VM id runs as.
func UnprivilegedID(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return unprivilegedIDBase + int(h.Sum32()%65536)
}
