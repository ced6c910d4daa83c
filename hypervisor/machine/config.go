package machine

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/vmctl/vmctl/hypervisor/arch/x86"
)

// Config describes one VM.
type Config struct {
	// Kernel is a bzImage; Initrd (optional) an initramfs.
	Kernel, Initrd string
	// Cmdline is the kernel command line; the machine appends a
	// virtio_mmio.device= entry per virtio device.
	Cmdline string
	// VCPUs is the number of vCPUs (1 to x86.MaxVCPUs).
	VCPUs int
	// MemoryMiB is guest RAM in MiB (x86.MinRAM or more, even).
	MemoryMiB int
	// Disks become virtio-blk devices, /dev/vda, /dev/vdb, ... in order.
	Disks []Disk
	// Shares become virtio-9p devices: host directories the guest mounts
	// by tag (mount -t 9p -o trans=virtio TAG DIR).
	Shares []Share
	// Vsock, if set, adds a virtio-vsock device with the hybrid host side.
	Vsock *Vsock
	// Net, if set, adds a virtio-net device on a tap interface.
	Net *Net
	// Console receives the serial port's output (nil: discarded);
	// ConsoleIn, if set, feeds its input.
	Console   io.Writer
	ConsoleIn io.Reader
	// Log receives the machine's own messages (nil: discarded).
	Log *slog.Logger
	// VCPUThreadSetup, if set, runs on each vCPU's locked thread before it
	// first enters the guest (a per-thread seccomp filter); an error ends
	// the VM with ReasonHostError.
	VCPUThreadSetup func() error
	// ProcessStart is what the boot-timer port measures from (zero: New's time).
	ProcessStart time.Time
	// RAM, if set, is a file of MemoryMiB that is the guest's RAM, mapped
	// shared: the guest's writes land in it (a memfd the caller keeps).
	// Save then leaves RAM out of what it writes: the file holds it. With
	// Restore it is the saved RAM, mapped copy-on-write instead (Restore's
	// Memory is then unset).
	RAM *os.File
	// Restore, if set, builds the VM from a saved one (see Snapshot)
	// instead of booting Kernel: VCPUs, MemoryMiB and the devices must be
	// the saved VM's.
	Restore *Snapshot
	// Host is checked for a KVM that can run Linux (zero: DefaultHost).
	Host Host
	// SkipHostCheck builds the VM even where CheckHost fails. Only tests
	// that need the full machine on such a host set it: Linux will not
	// get far there.
	SkipHostCheck bool
}

// Disk is a virtio-blk backing file.
type Disk struct {
	Path     string
	Serial   string // at most 20 bytes, for /dev/disk/by-id
	ReadOnly bool
}

// Share is a host directory served to the guest over virtio-9p.
type Share struct {
	Path     string // the directory, opened once when the machine is built
	Tag      string // what the guest mounts it by, 1 to 255 bytes
	ReadOnly bool   // refuse every change on the host side
}

// Vsock is the hybrid virtio-vsock device's configuration.
type Vsock struct {
	CID     uint32 // the guest's context ID, 3 or more
	UDSPath string // host unix socket: "CONNECT <port>\n" reaches the guest
	// FirstConnect, if set, is called once, on a goroutine of its own,
	// when the guest first accepts a host connection.
	FirstConnect func()
}

// maxDisks and maxShares keep every virtio device on an IOAPIC pin of its
// own.
const (
	maxDisks  = 8
	maxShares = 4
)

// Validate checks c and fills defaults; every error is one line naming the
// offending setting.
func (c *Config) Validate() error {
	if c.Kernel == "" && c.Restore == nil {
		return fmt.Errorf("no kernel given")
	}
	if c.Restore != nil && (c.Restore.Memory == nil) == (c.RAM == nil) {
		return fmt.Errorf("restore: give the saved guest RAM once, as Restore.Memory or RAM")
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.VCPUs < 1 || c.VCPUs > x86.MaxVCPUs {
		return fmt.Errorf("vcpus %d: must be 1 to %d", c.VCPUs, x86.MaxVCPUs)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 256
	}
	if _, err := x86.RAMRanges(uint64(c.MemoryMiB) << 20); err != nil || c.MemoryMiB < 0 {
		return fmt.Errorf("memory %d MiB: must be an even number of MiB, at least %d", c.MemoryMiB, x86.MinRAM>>20)
	}
	if len(c.Disks) > maxDisks {
		return fmt.Errorf("%d disks: at most %d", len(c.Disks), maxDisks)
	}
	for i, d := range c.Disks {
		if d.Path == "" {
			return fmt.Errorf("disk %d: no path", i)
		}
		if len(d.Serial) > 20 {
			return fmt.Errorf("disk %d: serial %q is longer than 20 bytes", i, d.Serial)
		}
	}
	if len(c.Shares) > maxShares {
		return fmt.Errorf("%d shared directories: at most %d", len(c.Shares), maxShares)
	}
	tags := map[string]bool{}
	for i, sh := range c.Shares {
		switch {
		case sh.Path == "":
			return fmt.Errorf("share %d: no path", i)
		case sh.Tag == "" || len(sh.Tag) > 255 || strings.ContainsAny(sh.Tag, ",\x00"):
			return fmt.Errorf("share %d: tag %q must be 1 to 255 bytes without commas", i, sh.Tag)
		case tags[sh.Tag]:
			return fmt.Errorf("share %d: tag %q used twice", i, sh.Tag)
		}
		tags[sh.Tag] = true
	}
	if v := c.Vsock; v != nil {
		if v.CID < 3 {
			return fmt.Errorf("vsock cid %d: must be 3 or more (0-2 are reserved)", v.CID)
		}
		if v.UDSPath == "" {
			return fmt.Errorf("vsock: no unix socket path")
		}
	}
	if c.Net != nil {
		if err := c.Net.validate(); err != nil {
			return err
		}
	}
	if strings.ContainsRune(c.Cmdline, 0) {
		return fmt.Errorf("kernel command line contains a NUL byte")
	}
	if c.ProcessStart.IsZero() {
		c.ProcessStart = time.Now()
	}
	if c.Host == (Host{}) {
		c.Host = DefaultHost
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}
