package kvmsmoke

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl request numbers, include/uapi/linux/kvm.h; _IOC as in
// include/uapi/asm-generic/ioctl.h (dir<<30 | size<<16 | type<<8 | nr).
const (
	kvmio  = 0xae
	iocW   = 1
	iocR   = 2
	ioctlT = kvmio << 8

	kvmGetAPIVersion   = ioctlT | 0x00
	kvmCreateVM        = ioctlT | 0x01
	kvmGetVCPUMmapSize = ioctlT | 0x04
	kvmCreateVCPU      = ioctlT | 0x41
	kvmRunIoctl        = ioctlT | 0x80
)

var (
	kvmSetUserMemoryRegion = ioc(iocW, 0x46, unsafe.Sizeof(memoryRegion{}))
	kvmSetRegs             = ioc(iocW, 0x82, unsafe.Sizeof(regs{}))
	kvmGetSregs            = ioc(iocR, 0x83, unsafe.Sizeof(sregs{}))
	kvmSetSregs            = ioc(iocW, 0x84, unsafe.Sizeof(sregs{}))
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | ioctlT | nr }

// memoryRegion mirrors struct kvm_userspace_memory_region, include/uapi/linux/kvm.h.
type memoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// regs mirrors struct kvm_regs, arch/x86/include/uapi/asm/kvm.h.
type regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// segment mirrors struct kvm_segment, arch/x86/include/uapi/asm/kvm.h.
type segment struct {
	Base                         uint64
	Limit                        uint32
	Selector                     uint16
	Type, Present, DPL, DB, S, L uint8
	G, AVL, Unusable, padding    uint8
}

// dtable mirrors struct kvm_dtable, arch/x86/include/uapi/asm/kvm.h.
type dtable struct {
	Base    uint64
	Limit   uint16
	padding [3]uint16
}

// sregs mirrors struct kvm_sregs, arch/x86/include/uapi/asm/kvm.h.
type sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT segment
	GDT, IDT                        dtable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER, APICBase                  uint64
	InterruptBitmap                 [4]uint64
}

// Offsets into struct kvm_run (include/uapi/linux/kvm.h): exit_reason is the
// u32 at 8; the exit union starts at 32, where KVM_EXIT_IO puts
// struct { u8 direction; u8 size; u16 port; u32 count; u64 data_offset; }.
const (
	runExitReason = 8
	runExitUnion  = 32
	kvmRunMinSize = runExitUnion + 16
)

// Exit reasons, include/uapi/linux/kvm.h.
const (
	exitIO            = 2
	exitHLT           = 5
	exitShutdown      = 8
	exitFailEntry     = 9
	exitInternalError = 17
)

func exitName(r uint32) string {
	switch r {
	case exitShutdown:
		return "KVM_EXIT_SHUTDOWN"
	case exitFailEntry:
		return "KVM_EXIT_FAIL_ENTRY"
	case exitInternalError:
		return "KVM_EXIT_INTERNAL_ERROR"
	}
	return "see include/uapi/linux/kvm.h"
}

type ioExit struct {
	out, size uint8
	port      uint16
	count     uint32
	offset    uint64
}

func exitReason(run []byte) uint32 { return binary.LittleEndian.Uint32(run[runExitReason:]) }

func decodeIO(run []byte) ioExit {
	u := run[runExitUnion:]
	return ioExit{
		out:    u[0],
		size:   u[1],
		port:   binary.LittleEndian.Uint16(u[2:]),
		count:  binary.LittleEndian.Uint32(u[4:]),
		offset: binary.LittleEndian.Uint64(u[8:]),
	}
}

// ioData returns the bytes of an I/O exit, checking that the kernel-supplied
// offset stays inside the kvm_run mapping.
func ioData(run []byte, io ioExit) ([]byte, error) {
	n := uint64(io.size) * uint64(io.count)
	if io.offset > uint64(len(run)) || n > uint64(len(run))-io.offset {
		return nil, fmt.Errorf("I/O exit data at offset %d (+%d) outside kvm_run (%d bytes)", io.offset, n, len(run))
	}
	return run[io.offset : io.offset+n], nil
}

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// ioctlPtr passes a pointer to a Go value mirroring a kernel struct; the
// value stays alive and unmoved for the duration of the syscall because the
// conversion happens in the call expression.
func ioctlPtr[T any](fd int, req uintptr, p *T) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(p)))
	if errno != 0 {
		return errno
	}
	return nil
}

func setMemoryRegion(vm int, mem []byte) error {
	r := memoryRegion{
		MemorySize:    uint64(len(mem)),
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
	}
	return ioctlPtr(vm, kvmSetUserMemoryRegion, &r)
}

// kvmRun enters the guest, retrying when a signal interrupts the ioctl
// before the guest ran (Go's runtime preempts threads with signals).
func kvmRun(cpu int) error {
	for {
		_, err := ioctl(cpu, kvmRunIoctl, 0)
		if err != unix.EINTR {
			return err
		}
	}
}
