package qemu

import "syscall"

// procAttr puts QEMU in its own process group, so a terminal's Ctrl-C
// (sent to the engine's foreground group) does not reach it, and makes it
// die with the engine unless detach is set. A detached QEMU gets a session
// of its own instead, so it also survives the engine's terminal closing.
func procAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		// setsid also makes QEMU a process group leader; Setpgid on top
		// would fail (a session leader cannot change group).
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
