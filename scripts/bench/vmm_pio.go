package main

// Section vmm-pio: the cost of one userspace port-I/O exit in our Go vCPU
// loop (hypervisor/kvm + hypervisor/vcpu + hypervisor/bus) against the floor
// set by a minimal C loop on the same /dev/kvm and the same guest bytes.
// The C program is compiled with gcc at run time, so both sides run on the
// host as it is now; runs alternate so that host noise hits both.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmctl/vmctl/hypervisor/bus"
	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/machine"
	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

func init() { sections = append(sections, section{"vmm-pio", runPIO}) }

// pioGuest is the guest both loops run, in real mode at pioCodeAddr:
// an endless `out` to pioPort. The C source below embeds the same bytes.
var pioGuest = []byte{
	0xe6, 0x10, // out 0x10, al
	0xeb, 0xfc, // jmp back to the out
}

const (
	pioCodeAddr = 0x1000
	pioPort     = 0x10
	pioMemSize  = 0x10000
	// pioExits per measured run: ~0.2-1 s at the 4-15 µs per exit seen on
	// these hosts, long enough to swamp thread start and setup.
	pioExits = 50000
)

// pioCSource is the floor: KVM_CREATE_VM, one memory slot, one vCPU and a
// KVM_RUN loop that only counts KVM_EXIT_IO. It prints nanoseconds per
// exit. Real mode with CS=0 is what KVM gives a new vCPU except for CS's
// base, which the Go side sets the same way.
const pioCSource = `#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

static const uint8_t code[] = {0xe6, 0x10, 0xeb, 0xfc};

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 50000;
	int sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (sys < 0) die("open /dev/kvm");
	int vm = ioctl(sys, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	uint8_t *mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) die("mmap");
	memcpy(mem + 0x1000, code, sizeof code);
	struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = 0x10000, .userspace_addr = (uint64_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000) < 0) die("KVM_SET_TSS_ADDR");
	int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (cpu < 0) die("KVM_CREATE_VCPU");
	int size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(cpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(cpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
	if (ioctl(cpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
	struct timespec t0, t1;
	long seen = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (seen < n) {
		if (ioctl(cpu, KVM_RUN, 0) < 0) die("KVM_RUN");
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10 || run->io.direction != KVM_EXIT_IO_OUT) {
			fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
			return 1;
		}
		seen++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
	printf("%.1f\n", ns / n);
	return 0;
}
`

func runPIO(n int) error {
	// Tiny real-mode guests run on any /dev/kvm, a PVM one included; a host
	// without one has nothing to measure.
	if err := machine.DefaultHost.CheckHost(); errors.Is(err, machine.ErrNoKVM) {
		return skip("%v", err)
	}
	dir, err := os.MkdirTemp("", "vmctl-bench-pio-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	floor, err := buildPIOFloor(dir)
	if err != nil {
		return err
	}
	// Warm-up of both: page cache, CPU frequency, KVM's own caches.
	if _, err := runPIOFloor(floor, pioExits/10); err != nil {
		return err
	}
	if _, err := runPIOGo(pioExits / 10); err != nil {
		return err
	}
	var cs, gos []time.Duration
	for i := 0; i < n; i++ {
		c, err := runPIOFloor(floor, pioExits)
		if err != nil {
			return err
		}
		g, err := runPIOGo(pioExits)
		if err != nil {
			return err
		}
		cs, gos = append(cs, c), append(gos, g)
	}
	c, g := medianDur(cs), medianDur(gos)
	fmt.Printf("\nUserspace PIO exit round trip on this host's /dev/kvm: C KVM_RUN loop vs Go vCPU loop, same real-mode guest (median of %d runs of %d exits, interleaved)\n\n", n, pioExits)
	printHeader("C loop (floor)", "Go vCPU loop")
	printRow("µs per PIO exit (target ratio <= 1.10x)", fmt.Sprintf("%.2fµs", us(c)), fmt.Sprintf("%.2fµs", us(g)), float64(g)/float64(c))
	printRow("fastest run, µs per PIO exit", fmt.Sprintf("%.2fµs", us(minDur(cs))), fmt.Sprintf("%.2fµs", us(minDur(gos))), float64(minDur(gos))/float64(minDur(cs)))
	fmt.Println()
	return nil
}

// buildPIOFloor compiles the C loop into dir.
func buildPIOFloor(dir string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", errors.New("gcc is not installed: the C floor of the PIO bench is built at run time (apt-get install gcc)")
	}
	src := filepath.Join(dir, "pioloop.c")
	if err := os.WriteFile(src, []byte(pioCSource), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "pioloop")
	if out, err := exec.Command(gcc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc: %w: %s", err, out)
	}
	return bin, nil
}

// runPIOFloor runs the C loop for exits exits and returns its time per exit.
func runPIOFloor(bin string, exits int) (time.Duration, error) {
	out, err := exec.Command(bin, strconv.Itoa(exits)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("C PIO loop: %w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, fmt.Errorf("C PIO loop: %w", err)
	}
	ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("C PIO loop printed %q: %w", out, err)
	}
	return time.Duration(ns * float64(time.Nanosecond)), nil
}

// pioCounter is the bus device at pioPort: it stops its vCPU after n writes.
type pioCounter struct {
	n, seen atomic.Int64
	stop    func()
}

func (c *pioCounter) Read(uint64, []byte) {}
func (c *pioCounter) Write(uint64, []byte) {
	if c.seen.Add(1) == c.n.Load() {
		c.stop()
	}
}

// runPIOGo runs the guest under our vCPU loop until exits port writes
// reached the bus device, and returns the time per exit. The time spans
// vcpu.Start to the end of Wait, so it includes the one-off cost of
// starting and stopping the vCPU goroutine (a few µs over 50k exits).
func runPIOGo(exits int) (time.Duration, error) {
	sys, err := kvm.Open("/dev/kvm")
	if err != nil {
		return 0, fmt.Errorf("open /dev/kvm: %w", err)
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	mem, err := memory.NewGuest([]memory.Range{{GPA: 0, Size: pioMemSize}})
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	if err := mem.WriteAt(pioGuest, pioCodeAddr); err != nil {
		return 0, err
	}
	if err := vm.SetUserMemoryRegion(0, 0, mem.Regions()[0].Host); err != nil {
		return 0, err
	}
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		return 0, err
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		return 0, err
	}
	defer cpu.Close()
	sr, err := cpu.Sregs()
	if err != nil {
		return 0, err
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := cpu.SetSregs(sr); err != nil {
		return 0, err
	}
	if err := cpu.SetRegs(kvm.Regs{RIP: pioCodeAddr, RFLAGS: 2}); err != nil {
		return 0, err
	}
	buses := vcpu.Buses{PIO: bus.New("pio"), MMIO: bus.New("mmio")}
	v := vcpu.New(0, cpu, buses, nil)
	c := &pioCounter{stop: func() { v.RequestStop(vcpu.Result{Reason: vcpu.ReasonStopped}) }}
	c.n.Store(int64(exits))
	if err := buses.PIO.Register(pioPort, 1, "counter", c); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := v.Start(); err != nil {
		return 0, err
	}
	r := v.Wait()
	took := time.Since(start)
	if r.Reason != vcpu.ReasonStopped || c.seen.Load() < int64(exits) {
		return 0, fmt.Errorf("Go vCPU loop ended with %v after %d of %d exits", r, c.seen.Load(), exits)
	}
	return took / time.Duration(exits), nil
}

// Table helpers shared by the vmm_* sections: the layout of the boot table
// (measurement, peer, ours, ratio).

func printHeader(peer, ours string) {
	fmt.Printf("| %-44s | %14s | %14s | %7s |\n", "", peer, ours, "ratio")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 46), strings.Repeat("-", 16), strings.Repeat("-", 16), strings.Repeat("-", 9))
}

func printRow(name, peer, ours string, ratio float64) {
	r := "-"
	if ratio > 0 {
		r = fmt.Sprintf("%.2fx", ratio)
	}
	fmt.Printf("| %-44s | %14s | %14s | %7s |\n", name, peer, ours, r)
}

func medianDur(v []time.Duration) time.Duration {
	s := make([]sample, len(v))
	for i, d := range v {
		s[i] = sample{first: d}
	}
	return median(s, func(x sample) time.Duration { return x.first })
}

func minDur(v []time.Duration) time.Duration {
	m := v[0]
	for _, d := range v[1:] {
		m = min(m, d)
	}
	return m
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// firstLineWith reads sc until a line containing marker and reports
// whether it saw one.
func firstLineWith(sc *bufio.Scanner, marker string) bool {
	for sc.Scan() {
		if strings.Contains(sc.Text(), marker) {
			return true
		}
	}
	return false
}
