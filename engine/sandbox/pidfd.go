package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// HeldProcess is a VMM process that an earlier engine process started and
// this one adopts (Reattacher). It is held by a pidfd, so a recycled pid is
// never signalled, and, not being a child of this process, it is waited
// for by polling the pidfd: its exit status is unknown here.
type HeldProcess struct {
	Pid int
	fd  int
}

// HoldProcess checks an adoption request (cfg as Reattacher documents it)
// and holds process pid if own accepts its command line. The command line
// is read after the pidfd is open, so it is the held process's: own must
// make sure the process runs this VM (its sockets are in cfg.StateDir).
// what names the VMM in errors.
func HoldProcess(cfg Config, pid int, what string, own func(pid int, args [][]byte) error) (*HeldProcess, error) {
	if cfg.ID == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, errors.New("reattach: the VM ID and an absolute state directory are needed")
	}
	if pid <= 0 {
		return nil, fmt.Errorf("reattach VM %s: invalid pid %d", cfg.ID, pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("reattach VM %s: %s process %d: %w", cfg.ID, what, pid, err)
	}
	args, err := ProcessArgs(pid)
	if err == nil {
		err = own(pid, args)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reattach VM %s: %w", cfg.ID, err)
	}
	return &HeldProcess{Pid: pid, fd: fd}, nil
}

// ProcessArgs returns the command line of process pid, one argument each.
func ProcessArgs(pid int) ([][]byte, error) {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	return bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0}), nil
}

// Kill sends SIGKILL to the held process.
func (h *HeldProcess) Kill() error { return unix.PidfdSendSignal(h.fd, unix.SIGKILL, nil, 0) }

// Wait blocks until the held process has ended (a pidfd becomes readable
// then, whether or not its parent has reaped it yet).
func (h *HeldProcess) Wait() {
	fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}

// Release lets go of the process (its pidfd); call it once it has ended.
func (h *HeldProcess) Release() { unix.Close(h.fd) }
