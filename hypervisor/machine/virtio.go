package machine

import (
	"errors"
	"fmt"
	gonet "net"
	"os"
	"sync"

	"github.com/vmctl/vmctl/hypervisor/arch/x86"
	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/blk"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/net"
	"github.com/vmctl/vmctl/hypervisor/virtio/ninep"
	"github.com/vmctl/vmctl/hypervisor/virtio/ninep/hostfs"
	"github.com/vmctl/vmctl/hypervisor/virtio/rng"
	"github.com/vmctl/vmctl/hypervisor/virtio/vsock"
	"golang.org/x/sys/unix"
)

// virtioIRQs are the IOAPIC pins handed to virtio devices in order: ISA
// IRQs nobody else here uses (4 is the serial port, 8 and 13 are kept
// free for their legacy owners), then the IOAPIC's upper pins.
var virtioIRQs = []uint32{5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}

// virtioDevice is one device on the MMIO bus with its KVM wiring.
type virtioDevice struct {
	name      string
	dev       virtio.Device
	transport *mmio.Transport
	base      uint64
	irq       uint32
	irqfd     *eventFD
	notifies  []*eventFD
	events    []kvm.IOEventFD
	closer    func() error // the device's own resources (files, sockets)
	wg        sync.WaitGroup
}

// eventFD is a non-blocking eventfd handed to Go's poller, so a goroutine
// blocked reading it returns when it is closed.
type eventFD struct {
	fd   int
	file *os.File
}

func newEventFD(name string) (*eventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd for %s: %w", name, err)
	}
	return &eventFD{fd: fd, file: os.NewFile(uintptr(fd), name)}, nil
}

// Trigger implements virtio.Interrupt: KVM turns the write into an edge on
// the device's pin without a trip through this process's vCPU threads.
func (e *eventFD) Trigger() error {
	var one = [8]byte{1}
	_, err := unix.Write(e.fd, one[:])
	if errors.Is(err, unix.EAGAIN) {
		return nil // the counter is saturated: an interrupt is pending anyway
	}
	return err
}

// setupVirtio creates the configured virtio devices, places each in its own
// MMIO window with an irqfd-backed interrupt and one ioeventfd per queue,
// and returns the kernel command line entries that announce them.
func (m *Machine) setupVirtio() ([]string, error) {
	type spec struct {
		name string
		make func() (virtio.Device, func() error, error)
	}
	var specs []spec
	for i, d := range m.cfg.Disks {
		specs = append(specs, spec{fmt.Sprintf("blk%d", i), func() (virtio.Device, func() error, error) {
			dev, err := blk.New(blk.Config{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial})
			if err != nil {
				return nil, nil, fmt.Errorf("disk %s: %w", d.Path, err)
			}
			return dev, dev.Close, nil
		}})
	}
	for i, sh := range m.cfg.Shares {
		specs = append(specs, spec{fmt.Sprintf("9p%d", i), func() (virtio.Device, func() error, error) {
			fs, err := hostfs.New(sh.Path, hostfs.Options{ReadOnly: sh.ReadOnly})
			if err != nil {
				return nil, nil, err
			}
			dev, err := ninep.New(ninep.Config{Tag: sh.Tag, Attacher: fs})
			if err != nil {
				fs.Close()
				return nil, nil, err
			}
			return dev, fs.Close, nil
		}})
	}
	if v := m.cfg.Vsock; v != nil {
		specs = append(specs, spec{"vsock", func() (virtio.Device, func() error, error) {
			dev, err := vsock.New(vsock.Config{GuestCID: uint64(v.CID), UDSPath: v.UDSPath, FirstConnect: v.FirstConnect})
			if err != nil {
				return nil, nil, fmt.Errorf("vsock: %w", err)
			}
			return dev, dev.Close, nil
		}})
	}
	if n := m.cfg.Net; n != nil {
		specs = append(specs, spec{"net", func() (virtio.Device, func() error, error) {
			tap, mtu, err := openTap(n)
			if err != nil {
				return nil, nil, err
			}
			mac := n.MAC
			if mac == ([6]byte{}) {
				mac = macFor(n.Tap)
			}
			dev, err := net.New(net.Config{Tap: tap, MAC: mac, MTU: mtu})
			if err != nil {
				tap.Close()
				return nil, nil, fmt.Errorf("net: %w", err)
			}
			m.cfg.Log.Info("virtio-net", "tap", n.Tap, "mac", gonet.HardwareAddr(mac[:]).String(), "mtu", mtu,
				"features", fmt.Sprintf("%#x", dev.Features()))
			closeTap := func() error {
				m.cfg.Log.Info("virtio-net counters", "tap", n.Tap, "stats", dev.Stats().String())
				return tap.Close()
			}
			return dev, closeTap, nil
		}})
	}
	specs = append(specs, spec{"rng", func() (virtio.Device, func() error, error) {
		return rng.New(), nil, nil
	}})
	if len(specs) > len(virtioIRQs) {
		return nil, fmt.Errorf("%d virtio devices: at most %d", len(specs), len(virtioIRQs))
	}
	var cmdline []string
	for i, s := range specs {
		dev, closer, err := s.make()
		if err != nil {
			return nil, err
		}
		vd := &virtioDevice{name: s.name, dev: dev, closer: closer,
			base: x86.VirtioMMIOBase + uint64(i)*x86.VirtioMMIOStride, irq: virtioIRQs[i]}
		m.virtio = append(m.virtio, vd)
		if err := m.wireVirtio(vd); err != nil {
			return nil, err
		}
		cmdline = append(cmdline, fmt.Sprintf("virtio_mmio.device=%d@%#x:%d", mmio.Size, vd.base, vd.irq))
	}
	return cmdline, nil
}

func (m *Machine) wireVirtio(vd *virtioDevice) error {
	var err error
	if vd.irqfd, err = newEventFD(vd.name + "-irq"); err != nil {
		return err
	}
	if err := m.vm.RegisterIRQFD(vd.irqfd.fd, vd.irq); err != nil {
		return fmt.Errorf("%s: %w", vd.name, err)
	}
	vd.transport = mmio.New(vd.dev, m.mem, vd.irqfd)
	if err := m.buses.MMIO.Register(vd.base, mmio.Size, vd.name, vd.transport); err != nil {
		return err
	}
	// One ioeventfd per queue: a guest kick (a 32-bit store of the queue
	// index to QueueNotify) wakes the queue without a vCPU exit.
	for q := range vd.dev.QueueMaxSizes() {
		efd, err := newEventFD(fmt.Sprintf("%s-notify%d", vd.name, q))
		if err != nil {
			return err
		}
		vd.notifies = append(vd.notifies, efd)
		ev := kvm.IOEventFD{FD: efd.fd, Addr: vd.base + mmio.NotifyOffset, Len: 4, DataMatch: true, Data: uint64(q)}
		if err := m.vm.RegisterIOEventFD(ev); err != nil {
			return fmt.Errorf("%s queue %d: %w", vd.name, q, err)
		}
		vd.events = append(vd.events, ev)
		vd.wg.Add(1)
		go func(q uint16) {
			defer vd.wg.Done()
			var buf [8]byte
			for {
				if _, err := efd.file.Read(buf[:]); err != nil {
					return // closed by stopVirtio
				}
				vd.transport.Notify(q)
			}
		}(uint16(q))
	}
	return nil
}

// stopVirtio unhooks the devices from KVM, ends the notify goroutines,
// resets the devices and releases their resources. Safe to call twice.
func (m *Machine) stopVirtio() {
	for _, vd := range m.virtio {
		for _, ev := range vd.events {
			if m.vm != nil {
				_ = m.vm.UnregisterIOEventFD(ev)
			}
		}
		vd.events = nil
		for _, e := range vd.notifies {
			e.file.Close()
		}
		vd.notifies = nil
		vd.wg.Wait()
		if vd.irqfd != nil {
			if m.vm != nil {
				_ = m.vm.UnregisterIRQFD(vd.irqfd.fd, vd.irq)
			}
			if vd.transport != nil {
				vd.transport.Close()
				m.cfg.Log.Info("virtio: interrupt status at stop", "device", vd.name, "status", vd.transport.InterruptStatus())
				if n := vd.transport.Reraised(); n > 0 {
					m.cfg.Log.Info("virtio: interrupts the driver missed were raised again", "device", vd.name, "count", n)
				}
			}
			vd.dev.Reset()
			vd.irqfd.file.Close()
			vd.irqfd = nil
		}
		if vd.closer != nil {
			if err := vd.closer(); err != nil {
				m.cfg.Log.Warn("close virtio device", "device", vd.name, "err", err)
			}
			vd.closer = nil
		}
	}
}
