// Package restored brings a guest started from a saved state up to date:
// the state was saved once, from a guest booted to the agent's readiness,
// and every VM of its shape starts from it, so each of them wakes up with
// the template's random generator, clock, disks and NICs.
//
// In order: the host's seed is credited to the kernel's random pool and the
// kernel's generator reseeded (until then two guests restored from one
// state would produce the same "random" bytes); the clock is set; the
// virtio block and network drivers are unbound and bound again, so the
// guest probes its disks and NICs afresh (sizes, serials, read-only flags,
// offloads, MTU) with nothing cached of the template's placeholder disks;
// and each NIC still carrying a template address gets its own (QEMU gives
// a reset NIC its own address already).
//
// What the kernel drew from its generator before the state was saved
// (hash seeds, address-space layout, stack canaries of running tasks) stays
// the same in every restored guest: reseeding only changes what is drawn
// from now on.
package restored

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/rtnetlink"
)

// Seed limits: 256 bits at least, and no more than a page of pool input.
const (
	MinSeed = 32
	MaxSeed = 512
)

// Request is what the host tells a restored guest.
type Request struct {
	Seed []byte
	Now  time.Time
	// MACs maps a template address to the NIC's own.
	MACs map[string]net.HardwareAddr
}

// Check validates r before anything changes.
func Check(r Request) error {
	if len(r.Seed) < MinSeed || len(r.Seed) > MaxSeed {
		return fmt.Errorf("seed of %d bytes: send %d to %d", len(r.Seed), MinSeed, MaxSeed)
	}
	if r.Now.IsZero() {
		return errors.New("no time given")
	}
	seen := map[string]bool{}
	for from, to := range r.MACs {
		f, err := net.ParseMAC(from)
		if err != nil || len(f) != 6 {
			return fmt.Errorf("template address %q is not an Ethernet address", from)
		}
		if len(to) != 6 || to[0]&1 != 0 {
			return fmt.Errorf("address %q is not a unicast Ethernet address", to)
		}
		if seen[to.String()] {
			return fmt.Errorf("address %s given to two NICs", to)
		}
		seen[to.String()] = true
	}
	return nil
}

// Env is where Apply acts; the zero value is the real guest.
type Env struct {
	// SysDir is sysfs; empty means /sys.
	SysDir string
	// Random is the random device; empty means /dev/urandom.
	Random string
	// write writes a sysfs attribute; nil means os.WriteFile (tests record).
	write func(path string, data []byte) error
}

// Apply does every step, in order, and stops at the first that fails.
func (e Env) Apply(r Request) error {
	if err := Check(r); err != nil {
		return err
	}
	if err := e.reseed(r.Seed); err != nil {
		return err
	}
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &unix.Timespec{Sec: r.Now.Unix(), Nsec: int64(r.Now.Nanosecond())}); err != nil {
		return fmt.Errorf("set the clock: %w", err)
	}
	if err := e.rebind("virtio_blk", "virtio_net"); err != nil {
		return err
	}
	return setMACs(r.MACs)
}

// reseed credits seed to the input pool (RNDADDENTROPY) and makes the
// kernel's generator take a new key from it now (RNDRESEEDCRNG).
func (e Env) reseed(seed []byte) error {
	dev := e.Random
	if dev == "" {
		dev = "/dev/urandom"
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(seed)))
	copy(info[8:], seed)
	if err := ioctl(f, unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); err != nil {
		return fmt.Errorf("reseed: add the host's seed: %w", err)
	}
	if err := ioctl(f, unix.RNDRESEEDCRNG, 0); err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	return nil
}

func ioctl(f *os.File, req uint, arg uintptr) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := sc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), arg)
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// rebind unbinds every device of each virtio driver and binds it again,
// all devices at once: a device's removal waits for RCU grace periods and
// its probe for the VMM, and those waits overlap. Probing is synchronous:
// once every bind has returned, the disks' nodes and the NICs exist.
func (e Env) rebind(drivers ...string) error {
	sys := e.SysDir
	if sys == "" {
		sys = "/sys"
	}
	write := e.write
	if write == nil {
		write = func(path string, data []byte) error { return os.WriteFile(path, data, 0) }
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, drv := range drivers {
		dir := filepath.Join(sys, "bus", "virtio", "drivers", drv)
		devs, err := filepath.Glob(filepath.Join(dir, "virtio*"))
		if err != nil {
			return err
		}
		sort.Strings(devs)
		for _, dev := range devs {
			name := []byte(filepath.Base(dev))
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := write(filepath.Join(dir, "unbind"), name)
				if err != nil {
					err = fmt.Errorf("rebind %s %s: unbind: %w", drv, name, err)
				} else if err = write(filepath.Join(dir, "bind"), name); err != nil {
					err = fmt.Errorf("rebind %s %s: bind: %w", drv, name, err)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// setMACs gives each NIC found with a template address its own. A VMM
// that resets a NIC's address to its own when the driver resets the device
// (QEMU does) leaves nothing to do; a NIC with neither address is missing.
func setMACs(macs map[string]net.HardwareAddr) error {
	if len(macs) == 0 {
		return nil
	}
	c, err := rtnetlink.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	links, err := c.Links()
	if err != nil {
		return err
	}
	for from, to := range macs {
		f, _ := net.ParseMAC(from)
		found := false
		for _, l := range links {
			switch l.MAC.String() {
			case f.String():
				if err := c.SetMAC(l.Index, to); err != nil {
					return err
				}
				found = true
			case to.String():
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no NIC with template address %s or address %s", from, to)
		}
	}
	return nil
}
