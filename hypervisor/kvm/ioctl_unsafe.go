package kvm

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues a request whose argument is an integer.
func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// ioctlPtr issues a request whose argument points at v. v is one of this
// package's kernel-mirroring structs, so its Go layout is the C layout the
// request number encodes; the pointer is only used for the duration of the
// syscall, during which Go's garbage collector does not move heap objects.
func ioctlPtr[T any](fd int, req uintptr, v *T) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(v)))
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// sliceAddr is the host virtual address of b's first byte, for
// KVM_SET_USER_MEMORY_REGION. b must be an mmap'd region that the caller
// keeps mapped while KVM uses the address.
func sliceAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// runWord is the first 32-bit word of the mmap'd kvm_run: byte 0 is
// request_interrupt_window, byte 1 is immediate_exit. Another thread sets
// immediate_exit to kick the vCPU, so the byte is changed with 32-bit
// atomics on the aligned word that holds it (Go has no 8-bit atomics).
// The page-aligned mapping makes the word aligned.
func runWord(run []byte) *uint32 {
	return (*uint32)(unsafe.Pointer(&run[0]))
}

// immediateExitBit is immediate_exit's lowest bit within the little-endian
// word at offset 0 of kvm_run.
const immediateExitBit = 1 << 8

func setImmediateExit(run []byte, on bool) {
	w := runWord(run)
	if on {
		atomic.OrUint32(w, immediateExitBit)
	} else {
		atomic.AndUint32(w, ^uint32(0xff00))
	}
}
