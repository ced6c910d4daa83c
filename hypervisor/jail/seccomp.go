package jail

import (
	"fmt"
	"slices"
	"time"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/hypervisor/kvm"
)

// Kind is a kind of VMM thread, each with its own seccomp filter.
//
// Go multiplexes goroutines over threads: the control API, the device
// workers (virtqueues, the tap, vsock connections, 9P) and the runtime's
// own work run on any thread that is not locked, so they share the
// process filter (KindVMM). vCPU goroutines are locked to their threads
// for life, so each vCPU thread stacks a narrower filter (KindVCPU) on top:
// whatever runs there can neither open files nor make or accept
// connections. The runtime starts new threads from a template thread, not
// from a locked one, so no thread inherits the vCPU filter by accident.
type Kind int

const (
	// KindVMM is the process-wide filter: the VMM's main thread, the
	// control API and the device workers.
	KindVMM Kind = iota
	// KindVCPU is stacked on each vCPU thread.
	KindVCPU
)

func (k Kind) String() string {
	if k == KindVCPU {
		return "vcpu"
	}
	return "vmm"
}

// Mode is what a filter does to a system call it does not allow.
type Mode int

const (
	// ModeKill kills the whole process with SIGSYS (SECCOMP_RET_KILL_PROCESS),
	// as Firecracker does: a VMM that asks for something it never needs
	// is compromised and must not go on.
	ModeKill Mode = iota
	// ModeTrap raises SIGSYS in the calling thread (SECCOMP_RET_TRAP): the
	// Go runtime then prints the stack of the goroutine that made the call
	// before exiting, which is how a missing entry is found.
	ModeTrap
)

// Needs says which optional devices a VM has, so the filters allow only
// the calls those devices make.
type Needs struct {
	// Shares: a virtio-9p device serves host directories, which takes the
	// file system calls (openat and the *at family, xattrs, ...).
	Shares bool
}

// runtimeCalls are the Go runtime's own: memory, threads, scheduling,
// signals, timers and the network poller. Every thread makes them.
var runtimeCalls = []string{
	"read", "write", "close", "mmap", "munmap", "madvise", "mprotect", "mincore",
	"futex", "clone", "exit", "exit_group", "restart_syscall",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
	"gettid", "getpid", "tgkill", "sched_yield", "sched_getaffinity",
	"nanosleep", "clock_gettime", "clock_nanosleep", "gettimeofday", "getrandom",
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"eventfd2", "pipe2", "fcntl", "fstat", "newfstatat", "readv", "writev",
}

// vmmCalls are the I/O of the devices' workers and the control API on
// descriptors opened before the filter: disk images, the tap, the console,
// the control and vsock sockets. Sockets may be made only in AF_UNIX (the
// vsock device dials <socket>_<port> for a guest-initiated connection).
var vmmCalls = []string{
	"pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
	"lseek", "fsync", "fdatasync", "fallocate",
	"accept", "accept4", "connect", "shutdown", "getsockopt", "setsockopt",
	"getsockname", "getpeername", "recvfrom", "sendto", "recvmsg", "sendmsg",
	// Removing the control socket at the end (inside a jail there is no
	// such path, and the root is read-only).
	"unlinkat",
}

// shareCalls are the 9P server's: it holds each node as an O_PATH
// descriptor and works one name at a time with the *at calls, reopening
// through /proc/self/fd.
var shareCalls = []string{
	"openat", "getdents64", "readlinkat", "mkdirat", "mknodat", "symlinkat", "linkat",
	"renameat", "renameat2", "fchownat", "fchmodat", "fchmodat2", "utimensat",
	"truncate", "ftruncate", "fstatfs", "statfs",
	"getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
	"listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
}

// tapIoctls are the requests the virtio-net device makes when the guest
// negotiates its features.
var tapIoctls = []uint64{unix.TUNSETOFFLOAD, unix.TUNSETVNETHDRSZ}

// Policy returns the seccomp policy of a thread kind for a VM with needs.
func Policy(kind Kind, needs Needs, mode Mode) seccomp.Policy {
	names := slices.Clone(runtimeCalls)
	if kind == KindVMM {
		names = append(names, vmmCalls...)
		if needs.Shares {
			names = append(names, shareCalls...)
		}
	}
	names = slices.DeleteFunc(names, func(n string) bool {
		_, known := arch.X86_64.SyscallNames[n]
		return !known // a call this table predates is refused, not an error
	})
	var conds []seccomp.NameWithConditions
	for _, req := range append(kvm.RunningIoctls(), tapIoctls...) {
		conds = append(conds, seccomp.NameWithConditions{Name: "ioctl", Conditions: seccomp.ArgumentConditions{
			{Argument: 1, Operation: seccomp.Equal, Value: req},
		}})
	}
	if kind == KindVMM {
		conds = append(conds,
			seccomp.NameWithConditions{Name: "socket", Conditions: seccomp.ArgumentConditions{
				{Argument: 0, Operation: seccomp.Equal, Value: unix.AF_UNIX},
			}},
			// A vCPU thread stacks its filter under this one; adding a
			// filter can only take calls away.
			seccomp.NameWithConditions{Name: "seccomp", Conditions: seccomp.ArgumentConditions{
				{Argument: 0, Operation: seccomp.Equal, Value: unix.SECCOMP_SET_MODE_FILTER},
				{Argument: 1, Operation: seccomp.Equal, Value: 0},
			}})
	}
	action := seccomp.ActionKillProcess
	if mode == ModeTrap {
		action = seccomp.ActionTrap
	}
	return seccomp.Policy{
		DefaultAction: action,
		Syscalls: []seccomp.SyscallGroup{
			{Names: names, Action: seccomp.ActionAllow},
			{NamesWithCondtions: conds, Action: seccomp.ActionAllow},
		},
	}
}

// LoadProcess sets no_new_privs and installs the KindVMM filter on every
// thread of the process (SECCOMP_FILTER_FLAG_TSYNC). It must come before
// any thread stacks a filter of its own.
func LoadProcess(needs Needs, mode Mode) error {
	preload()
	err := seccomp.LoadFilter(seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy:     Policy(KindVMM, needs, mode),
	})
	if err != nil {
		return fmt.Errorf("seccomp (%s threads): %w", KindVMM, err)
	}
	return nil
}

// preload makes the standard library open now what it would otherwise
// open on first use, when the filter (or the jail) no longer lets it: the
// local time zone (/etc/localtime), which the first log line with a
// timestamp loads.
func preload() {
	time.Now().Zone()
}

// LoadThread stacks the filter of kind on the calling thread only, after
// LoadProcess. The
// caller has locked its goroutine to the thread for good
// (runtime.LockOSThread without a matching unlock), or the runtime would
// run other goroutines under it.
func LoadThread(kind Kind, needs Needs, mode Mode) error {
	// no_new_privs is set already: LoadProcess set it on every thread.
	err := seccomp.LoadFilter(seccomp.Filter{Policy: Policy(kind, needs, mode)})
	if err != nil {
		return fmt.Errorf("seccomp (%s thread): %w", kind, err)
	}
	return nil
}
