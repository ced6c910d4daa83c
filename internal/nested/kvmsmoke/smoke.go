// Package kvmsmoke runs the smallest possible guest on a /dev/kvm: one vCPU
// in real mode executing a dozen bytes of hand-assembled code that does
// arithmetic, writes guest memory, performs port I/O and halts. It proves
// that a KVM device can create a VM, map memory, run a vCPU and deliver exits
// to user space, independently of the project's VMM.
//
// The nested harness runs it inside its L1 machine to prove the chain
// (QEMU TCG -> emulated SVM -> L1 kvm-amd) before any vmctl-vmm scenario;
// its own tests run it on the host's /dev/kvm, where tiny real-mode guests
// work even on the PVM flavour.
//
// It deliberately does not share code with hypervisor/kvm: a smoke test of
// the platform must not fail because of the code it is meant to vouch for.
// It does not boot anything, set up interrupts or emulate devices.
package kvmsmoke

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Guest physical layout of the smoke VM.
const (
	memSize   = 0x10000 // one 64 KiB slot at guest physical 0
	codeAddr  = 0x1000
	storeAddr = 0x2000
	// resultPort receives the arithmetic result as a 16-bit OUT.
	resultPort = 0x10
	serialPort = 0x3f8
	sum        = 0x1234 + 0x0101
)

// code is 16-bit real-mode machine code, loaded at codeAddr with CS=0.
var code = []byte{
	0xb8, 0x34, 0x12, // mov ax, 0x1234
	0x05, 0x01, 0x01, // add ax, 0x0101
	0xa3, 0x00, 0x20, // mov [0x2000], ax
	0xba, 0x10, 0x00, // mov dx, resultPort
	0xef,             // out dx, ax
	0xba, 0xf8, 0x03, // mov dx, serialPort
	0xb0, 'o', // mov al, 'o'
	0xee,      // out dx, al
	0xb0, 'k', // mov al, 'k'
	0xee, // out dx, al
	0xf4, // hlt
}

// Result says what the guest did.
type Result struct {
	APIVersion int
	// Serial is what the guest wrote to the serial port ("ok").
	Serial string
	// Sum is the 16-bit value written to resultPort.
	Sum uint16
	// Stored is the value the guest left at storeAddr in its memory.
	Stored uint16
	// Exits is the number of KVM_RUN returns, the final HLT included.
	Exits int
}

// maxExits bounds the run loop: the program causes four exits, so more
// means the guest is not executing what we loaded.
const maxExits = 32

// Run creates a VM on the KVM device at dev, runs the smoke program to its
// HLT and checks every exit on the way. It returns what the guest did, or an
// error naming the first step that failed.
func Run(dev string) (Result, error) {
	var res Result
	sys, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return res, fmt.Errorf("open %s: %w", dev, err)
	}
	defer unix.Close(sys)

	api, err := ioctl(sys, kvmGetAPIVersion, 0)
	if err != nil {
		return res, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	res.APIVersion = int(api)
	if api != 12 {
		return res, fmt.Errorf("KVM API version %d, want 12", api)
	}
	vmfd, err := ioctl(sys, kvmCreateVM, 0)
	if err != nil {
		return res, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	vm := int(vmfd)
	defer unix.Close(vm)

	mem, err := unix.Mmap(-1, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return res, fmt.Errorf("mmap guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem[codeAddr:], code)
	if err := setMemoryRegion(vm, mem); err != nil {
		return res, fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}

	cpufd, err := ioctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		return res, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	cpu := int(cpufd)
	defer unix.Close(cpu)
	runSize, err := ioctl(sys, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return res, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if runSize < kvmRunMinSize {
		return res, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %d bytes, smaller than struct kvm_run", runSize)
	}
	run, err := unix.Mmap(cpu, 0, int(runSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return res, fmt.Errorf("mmap kvm_run: %w", err)
	}
	defer unix.Munmap(run)

	if err := enterRealMode(cpu); err != nil {
		return res, err
	}

	var serial strings.Builder
	gotSum := false
	for {
		if res.Exits == maxExits {
			return res, fmt.Errorf("guest still running after %d exits", maxExits)
		}
		if err := kvmRun(cpu); err != nil {
			return res, fmt.Errorf("KVM_RUN: %w", err)
		}
		res.Exits++
		switch reason := exitReason(run); reason {
		case exitIO:
			io := decodeIO(run)
			if io.out != 1 || io.count != 1 {
				return res, fmt.Errorf("unexpected I/O exit %+v", io)
			}
			data, err := ioData(run, io)
			if err != nil {
				return res, err
			}
			switch {
			case io.port == resultPort && io.size == 2:
				res.Sum = uint16(data[0]) | uint16(data[1])<<8
				gotSum = true
			case io.port == serialPort && io.size == 1:
				serial.WriteByte(data[0])
			default:
				return res, fmt.Errorf("unexpected I/O exit %+v", io)
			}
		case exitHLT:
			res.Serial = serial.String()
			res.Stored = uint16(mem[storeAddr]) | uint16(mem[storeAddr+1])<<8
			return res, check(res, gotSum)
		default:
			return res, fmt.Errorf("unexpected exit reason %d (%s)", reason, exitName(reason))
		}
	}
}

func check(r Result, gotSum bool) error {
	var problems []string
	if !gotSum {
		problems = append(problems, fmt.Sprintf("no OUT to port %#x", resultPort))
	} else if r.Sum != sum {
		problems = append(problems, fmt.Sprintf("sum %#x, want %#x", r.Sum, sum))
	}
	if r.Stored != sum {
		problems = append(problems, fmt.Sprintf("memory at %#x holds %#x, want %#x", storeAddr, r.Stored, sum))
	}
	if r.Serial != "ok" {
		problems = append(problems, fmt.Sprintf("serial %q, want \"ok\"", r.Serial))
	}
	if len(problems) > 0 {
		return errors.New("guest misbehaved: " + strings.Join(problems, "; "))
	}
	return nil
}

// enterRealMode points the vCPU at codeAddr with flat 16-bit segments at 0.
// A fresh vCPU starts at the reset vector (CS base 0xffff0000); only CS and
// RIP need changing.
func enterRealMode(cpu int) error {
	var s sregs
	if err := ioctlPtr(cpu, kvmGetSregs, &s); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := ioctlPtr(cpu, kvmSetSregs, &s); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	r := regs{RIP: codeAddr, RFLAGS: 0x2} // bit 1 of RFLAGS is reserved, always 1
	if err := ioctlPtr(cpu, kvmSetRegs, &r); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// IsKVMDevice reports whether path is the KVM character device (10:232).
func IsKVMDevice(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("%s is not a character device", path)
	}
	if maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev); maj != 10 || min != 232 {
		return fmt.Errorf("%s is device %d:%d, not KVM's 10:232", path, maj, min)
	}
	return nil
}
