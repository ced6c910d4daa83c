package jail

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/hypervisor/kvm"
)

// A probe makes one system call with arguments that do no harm when the
// filter lets it through (a descriptor of -1, a null path): what is checked
// is only whether the filter allows the call at all.
type probe func() (uintptr, uintptr, uintptr, uintptr)

// probes are the calls `vmctl-vmm -seccomp-probe` can make: ones a VMM
// never needs (each must kill it) and ones it does (each must return).
var probes = map[string]probe{
	"openat":      func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_OPENAT, badFD, 0, 0 },
	"execve":      func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_EXECVE, 0, 0, 0 },
	"ptrace":      func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, 0, 0 },
	"mount":       func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_MOUNT, 0, 0, 0 },
	"kill":        func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_KILL, 0, 0, 0 },
	"setuid":      func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_SETUID, 0, 0, 0 },
	"socket-inet": func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0 },
	"socket-unix": func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_SOCKET, unix.AF_UNIX, 1 << 30, 0 },
	"accept4":     func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_ACCEPT4, badFD, 0, 0 },
	"pread64":     func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_PREAD64, badFD, 0, 0 },
	"unlinkat":    func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_UNLINKAT, badFD, 0, 0 },
	"ioctl-kvm-run": func() (uintptr, uintptr, uintptr, uintptr) {
		return unix.SYS_IOCTL, badFD, kvm.IoctlRun, 0
	},
	// Making a VM is done before the filter: afterwards it is forbidden.
	"ioctl-kvm-create-vm": func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_IOCTL, badFD, kvm.IoctlCreateVM, 0 },
	"ioctl-tiocsti":       func() (uintptr, uintptr, uintptr, uintptr) { return unix.SYS_IOCTL, badFD, unix.TIOCSTI, 0 },
	// Blocks reading standard input until it is closed, so the confined
	// process can be looked at from outside (/proc/PID/status, its root).
	"stdin-wait": func() (uintptr, uintptr, uintptr, uintptr) {
		return unix.SYS_READ, 0, uintptr(unsafe.Pointer(&stdinBuf[0])), uintptr(len(stdinBuf))
	},
}

var stdinBuf [1]byte

const badFD = ^uintptr(0) // -1

// ProbeNames lists the probes, sorted.
func ProbeNames() []string {
	var names []string
	for n := range probes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Probe makes the system call named by spec, "KIND:NAME" (KIND vmm or
// vcpu), from a thread of that kind: for vcpu, a thread locked for good
// with the vCPU filter stacked as a vCPU thread has it (when filtered is
// true). It returns the call's errno when the call came back; a call the
// filter forbids does not come back (the process is killed, or with
// ModeTrap the runtime crashes with SIGSYS).
func Probe(spec string, needs Needs, mode Mode, filtered bool) (unix.Errno, error) {
	kind, name, ok := strings.Cut(spec, ":")
	p := probes[name]
	if !ok || p == nil || (kind != "vmm" && kind != "vcpu") {
		return 0, fmt.Errorf("probe %q: want vmm:NAME or vcpu:NAME, NAME one of %s", spec, strings.Join(ProbeNames(), ", "))
	}
	type result struct {
		errno unix.Errno
		err   error
	}
	done := make(chan result, 1)
	go func() {
		if kind == "vcpu" {
			runtime.LockOSThread() // never unlocked: the thread carries the filter
			if filtered {
				if err := LoadThread(KindVCPU, needs, mode); err != nil {
					done <- result{err: err}
					return
				}
			}
		}
		trap, a1, a2, a3 := p()
		_, _, e := unix.Syscall(trap, a1, a2, a3)
		done <- result{errno: e}
	}()
	r := <-done
	return r.errno, r.err
}
