// Command sysprobe makes system calls and prints what the kernel answered,
// one "name=ANSWER" per call on a line (OK, or the errno's name): how the
// confinement tests see a container's seccomp filter from inside. Each call
// is made so that the kernel refuses it without a side effect once a
// filter lets it through (unshare of nothing, clone3 and mount with bad
// arguments, keyctl with an unknown command, mkdir of a bad address,
// syslog's buffer size), so EPERM or ENOSYS is the filter's answer.
// Usage: sysprobe CALL...
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

const badAddress = 1

var calls = map[string][4]uintptr{
	"keyctl":  {unix.SYS_KEYCTL, 9999},
	"unshare": {unix.SYS_UNSHARE, 0},
	"clone3":  {unix.SYS_CLONE3, 0, 0},
	"mount":   {unix.SYS_MOUNT, 0, badAddress, 0},
	"mkdir":   {unix.SYS_MKDIR, badAddress, 0o755},
	"syslog":  {unix.SYS_SYSLOG, unix.SYSLOG_ACTION_SIZE_BUFFER, 0, 0},
}

func main() {
	// A filter may be per thread: make every call on one.
	runtime.LockOSThread()
	var out []string
	for _, name := range os.Args[1:] {
		c, ok := calls[name]
		if !ok {
			fmt.Fprintln(os.Stderr, "sysprobe: unknown call", name)
			os.Exit(2)
		}
		_, _, errno := unix.RawSyscall(c[0], c[1], c[2], c[3])
		answer := "OK"
		if errno != 0 {
			answer = unix.ErrnoName(errno)
		}
		out = append(out, name+"="+answer)
	}
	fmt.Println(strings.Join(out, " "))
}
