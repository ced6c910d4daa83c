package qemu

import "syscall"

// procAttr puts QEMU in its own process group, so a terminal's Ctrl-C
// (sent to the engine's foreground group) does not reach it, and makes it
// die with the engine unless detach is set. A detached QEMU gets a session
// of its own instead, so it also survives the engine's terminal closing.
//
// The kernel forgets the parent-death signal when a process changes user,
// which a jailed QEMU does once its VM is built, and QEMU does not set it
// again: a jailed QEMU of an engine killed with SIGKILL outlives it, and
// the next engine on the same exec root adopts or ends it (containersvc's
// Readopt), as it does the VMs a daemon leaves running on purpose.
func procAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		// setsid also makes QEMU a process group leader; Setpgid on top
		// would fail (a session leader cannot change group).
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
