package seccomp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Install loads the filter on the calling thread, or with allThreads on
// every thread of the process (SECCOMP_FILTER_FLAG_TSYNC). The thread must
// have no_new_privs set or CAP_SYS_ADMIN in its effective set; a filter
// stays for the thread's life and passes to what it forks and execs, so the
// caller runs locked to its thread.
func (f *Filter) Install(allThreads bool) error {
	if f == nil || len(f.Program) == 0 {
		return nil
	}
	flags := uintptr(f.Flags)
	if allThreads {
		flags |= unix.SECCOMP_FILTER_FLAG_TSYNC
	}
	prog := unix.SockFprog{Len: uint16(len(f.Program)), Filter: &f.Program[0]}
	// seccomp(2) reads struct sock_fprog, which unix.SockFprog mirrors,
	// during the call only.
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	if allThreads && r != 0 {
		// TSYNC answers the ID of a thread that could not take the filter.
		return fmt.Errorf("install seccomp filter: thread %d cannot take it", r)
	}
	return nil
}
