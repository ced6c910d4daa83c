// Package machine turns a validated Config into a running VM: guest RAM
// registered with KVM, the in-kernel irqchip and PIT, the legacy devices
// and virtio-mmio devices on the buses with their irqfds and ioeventfds,
// the kernel loaded by the Linux boot protocol, and one vCPU per
// configured CPU. It offers Start, Pause, Resume, Stop and Wait over the
// whole VM.
//
// The VM ends when any vCPU ends (a guest reboot, a triple fault, ...) or
// Stop is called; the first reason wins and every other vCPU is stopped
// with it. Pause stops the vCPUs only: virtio devices finish requests
// already queued.
//
// It does not parse command lines or serve the control API (cmd/vmctl-vmm
// and package control do).
package machine

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/vmctl/vmctl/hypervisor/arch/x86"
	"github.com/vmctl/vmctl/hypervisor/bus"
	"github.com/vmctl/vmctl/hypervisor/devices"
	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/loader"
	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

// Legacy device placement.
const (
	serialBase = 0x3f8
	serialSize = 8
	serialIRQ  = 4
)

// Machine is one VM.
type Machine struct {
	cfg    Config
	vm     *kvm.VM
	mem    *memory.Guest
	buses  vcpu.Buses
	cpus   []*kvm.VCPU
	vcpus  []*vcpu.VCPU
	boot   *devices.BootTimer
	serial *devices.Serial
	virtio []*virtioDevice
	// msrIndex lists the MSRs KVM saves and restores (read while /dev/kvm
	// is open); a snapshot keeps those each vCPU can read.
	msrIndex []uint32
	// Cmdline is the kernel command line the guest got.
	Cmdline string

	mu      sync.Mutex // guards state
	state   vcpu.State
	endOnce sync.Once
	result  vcpu.Result
	done    chan struct{} // closed when every vCPU has exited
}

// New builds the VM described by cfg, ready to Start. On error nothing it
// created is left behind.
func New(cfg Config) (_ *Machine, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.SkipHostCheck {
		if err := cfg.Host.CheckHost(); err != nil {
			return nil, err
		}
	}
	// m is not the result: every error return sets that to nil before
	// this cleanup runs.
	m := &Machine{cfg: cfg, done: make(chan struct{}),
		buses: vcpu.Buses{PIO: bus.New("pio"), MMIO: bus.New("mmio")}}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	sys, err := kvm.Open(cfg.Host.DevKVM)
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	missing, err := sys.MissingCaps(kvm.RequiredCaps)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks %v: this VMM needs them", cfg.Host.DevKVM, missing)
	}
	var saved *savedVM
	if cfg.Restore != nil {
		if saved, err = decodeSnapshot(cfg.Restore.State); err != nil {
			return nil, err
		}
		if saved.VCPUs != cfg.VCPUs || saved.MemoryMiB != cfg.MemoryMiB {
			return nil, fmt.Errorf("restore: the saved VM has %d vCPUs and %d MiB, this configuration %d and %d",
				saved.VCPUs, saved.MemoryMiB, cfg.VCPUs, cfg.MemoryMiB)
		}
	}
	if m.vm, err = sys.CreateVM(); err != nil {
		return nil, err
	}
	if err := m.setupVM(); err != nil {
		return nil, err
	}
	if err := m.setupMemory(); err != nil {
		return nil, err
	}
	if err := m.setupLegacyDevices(); err != nil {
		return nil, err
	}
	extra, err := m.setupVirtio()
	if err != nil {
		return nil, err
	}
	var entry uint64
	if saved == nil {
		m.Cmdline = strings.TrimSpace(strings.Join(append([]string{cfg.Cmdline}, extra...), " "))
		if entry, err = m.load(); err != nil {
			return nil, err
		}
	} else {
		if err := m.checkDevices(saved); err != nil {
			return nil, err
		}
		m.Cmdline = saved.Cmdline
	}
	if err := m.setupVCPUs(sys, entry, saved); err != nil {
		return nil, err
	}
	if saved != nil {
		if err := m.restoreKVM(saved); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if err := m.restoreDevices(saved); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		m.cfg.Log.Info("VM restored", "vcpus", cfg.VCPUs, "memory_mib", cfg.MemoryMiB, "devices", len(m.virtio))
	}
	m.state = vcpu.Created
	return m, nil
}

func (m *Machine) setupVM() error {
	if err := m.vm.SetTSSAddr(x86.TSSAddr); err != nil {
		return err
	}
	if err := m.vm.SetIdentityMapAddr(x86.IdentityMapAddr); err != nil {
		return err
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return err
	}
	return m.vm.CreatePIT2()
}

func (m *Machine) setupMemory() error {
	ranges, err := x86.RAMRanges(uint64(m.cfg.MemoryMiB) << 20)
	if err != nil {
		return err
	}
	switch r := m.cfg.Restore; {
	case r != nil && r.Memory != nil:
		m.mem, err = memory.NewGuestFromFile(ranges, r.Memory, false)
	case m.cfg.RAM != nil:
		m.mem, err = memory.NewGuestFromFile(ranges, m.cfg.RAM, r == nil)
	default:
		m.mem, err = memory.NewGuest(ranges)
	}
	if err != nil {
		return err
	}
	for i, r := range m.mem.Regions() {
		if err := m.vm.SetUserMemoryRegion(uint32(i), r.GPA, r.Host); err != nil {
			return err
		}
	}
	return nil
}

func (m *Machine) setupLegacyDevices() error {
	log := m.cfg.Log
	serial := devices.NewSerial(m.cfg.Console, func(high bool) {
		if err := m.vm.IRQLine(serialIRQ, high); err != nil {
			log.Warn("serial interrupt", "err", err)
		}
	})
	if err := m.buses.PIO.Register(serialBase, serialSize, "serial", serial); err != nil {
		return err
	}
	m.serial = serial
	if m.cfg.ConsoleIn != nil {
		go serial.Feed(m.cfg.ConsoleIn)
	}
	reset := devices.NewI8042(func() { m.end(vcpu.Result{Reason: vcpu.ReasonReboot, Detail: "i8042 reset"}) })
	if err := m.buses.PIO.Register(devices.I8042Base, devices.I8042Size, "i8042", reset); err != nil {
		return err
	}
	m.boot = devices.NewBootTimer(m.cfg.ProcessStart, func(e devices.BootEvent) {
		log.Info("guest boot timer", "value", e.Value, "since_start", e.Since.String())
	})
	return m.buses.PIO.Register(devices.BootTimerPort, 1, "boot-timer", m.boot)
}

// load places the kernel, initrd, boot tables and MP table; it returns
// the kernel's 64-bit entry point.
func (m *Machine) load() (uint64, error) {
	kernel, err := os.Open(m.cfg.Kernel)
	if err != nil {
		return 0, fmt.Errorf("kernel: %w", err)
	}
	defer kernel.Close()
	ks, err := kernel.Stat()
	if err != nil {
		return 0, fmt.Errorf("kernel: %w", err)
	}
	l := loader.Linux{Kernel: kernel, KernelSize: ks.Size(), Cmdline: m.Cmdline}
	if m.cfg.Initrd != "" {
		initrd, err := os.Open(m.cfg.Initrd)
		if err != nil {
			return 0, fmt.Errorf("initrd: %w", err)
		}
		defer initrd.Close()
		is, err := initrd.Stat()
		if err != nil {
			return 0, fmt.Errorf("initrd: %w", err)
		}
		l.Initrd, l.InitrdSize = initrd, is.Size()
	}
	if l.E820, err = x86.E820(ramRanges(m.mem)); err != nil {
		return 0, err
	}
	b, err := loader.LoadLinux(m.mem, l)
	if err != nil {
		return 0, fmt.Errorf("load %s: %w", m.cfg.Kernel, err)
	}
	if err := x86.WriteBootTables(m.mem); err != nil {
		return 0, err
	}
	if err := x86.WriteMPTable(m.mem, m.cfg.VCPUs); err != nil {
		return 0, err
	}
	return b.Entry, nil
}

func ramRanges(g *memory.Guest) []memory.Range {
	var r []memory.Range
	for _, reg := range g.Regions() {
		r = append(r, memory.Range{GPA: reg.GPA, Size: uint64(len(reg.Host))})
	}
	return r
}

// setupVCPUs creates the vCPUs. All get CPUID, MSRs, FPU and LAPIC; only
// the boot CPU gets the 64-bit entry state: with the in-kernel LAPIC the
// others wait for INIT/SIPI from the guest, which resets their registers.
// A restored VM's vCPUs get CPUID and then their saved state instead.
func (m *Machine) setupVCPUs(sys *kvm.System, entry uint64, saved *savedVM) error {
	supported, err := sys.SupportedCPUID()
	if err != nil {
		return err
	}
	if m.msrIndex, err = sys.MSRIndexList(); err != nil {
		return err
	}
	deadline, err := sys.CheckExtension(kvm.CapTSCDeadlineTimer)
	if err != nil {
		return err
	}
	opts := x86.CPUIDOptions{TSCDeadline: deadline > 0}
	for i := 0; i < m.cfg.VCPUs; i++ {
		c, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.cpus = append(m.cpus, c)
		if err := c.SetCPUID(x86.PatchCPUID(supported, i, m.cfg.VCPUs, opts)); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
		if saved != nil {
			if err := m.restoreCPU(c, saved.CPUs[i]); err != nil {
				return fmt.Errorf("restore vCPU %d: %w", i, err)
			}
		} else if err := bootCPU(c, i, entry); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
		v := vcpu.New(i, c, m.buses, m.cfg.Log)
		v.ThreadSetup = m.cfg.VCPUThreadSetup
		m.vcpus = append(m.vcpus, v)
	}
	return nil
}

// bootCPU gives vCPU i its power-on state; the boot CPU (0) starts at the
// kernel's 64-bit entry.
func bootCPU(c *kvm.VCPU, i int, entry uint64) error {
	if err := c.SetMSRs(x86.BootMSRs()); err != nil {
		return err
	}
	if err := c.SetFPU(x86.BootFPU()); err != nil {
		return err
	}
	lapic, err := c.LAPIC()
	if err != nil {
		return err
	}
	if err := c.SetLAPIC(x86.BootLAPIC(lapic, i == 0)); err != nil {
		return err
	}
	if i != 0 {
		return nil
	}
	sr, err := c.Sregs()
	if err != nil {
		return err
	}
	if err := c.SetSregs(x86.LongModeSregs(sr)); err != nil {
		return err
	}
	return c.SetRegs(x86.BootRegs(entry))
}
