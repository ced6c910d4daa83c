package vmm

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/vmctl/vmctl/engine/sandbox"
)

var _ sandbox.Reattacher = (*Driver)(nil)

// Reattach adopts a vmctl-vmm started by an earlier engine process (with
// Options.Detach) from its state directory and pid:
//   - the process is held by a pidfd, so a recycled pid is never signalled,
//     and it must be the vmctl-vmm whose control socket is in cfg.StateDir
//     (its command line says so);
//   - the control API serves any number of clients one after another, so
//     the driver connects again and asks it, as Start does, to report the
//     end of the VM;
//   - the agent is reached as after Start, through the VM's hybrid vsock
//     socket, which the VMM kept listening on: the agent, which lost its
//     connection with the old engine process, accepts a new one;
//   - the end of the VM is noticed by polling the pidfd (the VMM is not a
//     child of this process); its exit code comes from the control API;
//   - a process that is this VM's VMM but whose control API cannot be
//     reached is ended: nobody else could end it.
func (d *Driver) Reattach(ctx context.Context, cfg sandbox.Config, pid int) (_ sandbox.Sandbox, err error) {
	controlSock := filepath.Join(cfg.StateDir, "vmm.sock")
	proc, err := sandbox.HoldProcess(cfg, pid, Binary, func(pid int, args [][]byte) error {
		return checkOwnVMM(pid, args, controlSock)
	})
	if err != nil {
		return nil, err
	}
	v := &vm{
		id:          cfg.ID,
		stateDir:    cfg.StateDir,
		createdDir:  true,
		controlSock: controlSock,
		vsockSock:   filepath.Join(cfg.StateDir, "vsock.sock"),
		logPath:     filepath.Join(cfg.StateDir, "vmm.log"),
		jailDir:     jailDir(cfg.StateDir), // removed if there is one
		exited:      make(chan struct{}),
		pid:         pid,
		release:     proc.Release,
		killProc:    proc.Kill,
	}
	v.waitProc = func() (int, bool, string) {
		proc.Wait()
		return 0, false, fmt.Sprintf("%s process %d ended", Binary, pid)
	}
	go v.reap()
	if err := v.connectControlOnce(); err != nil {
		// This VM's VMM (checked above) with no control API: it cannot be
		// adopted, and the caller, which gets no handle on it, records the
		// container as ended. Left running, it would keep the container's
		// disks in use unseen, and a next start would boot a second VM on
		// the same writable disk. End it.
		v.Destroy()
		return nil, fmt.Errorf("reattach VM %s: %w (the VM was ended)", cfg.ID, err)
	}
	return v, nil
}

// connectControlOnce connects to the control socket of a VMM that already
// serves it (an adopted one: no waiting for it to start).
func (v *vm) connectControlOnce() error {
	conn, err := dialControl(v.controlSock)
	if err != nil {
		return err
	}
	v.attachControl(conn)
	return nil
}

// checkOwnVMM makes sure process pid, whose command line is args, runs the
// vmctl-vmm whose control socket is controlSock, so that a recycled pid or
// another program is never adopted.
func checkOwnVMM(pid int, args [][]byte, controlSock string) error {
	if len(args) == 0 || filepath.Base(string(args[0])) != Binary {
		return fmt.Errorf("process %d is not %s", pid, Binary)
	}
	for i := 1; i+1 < len(args); i++ {
		if string(args[i]) == "-control" && string(args[i+1]) == controlSock {
			return nil
		}
	}
	return fmt.Errorf("process %d is not the %s of this VM (no control socket %s on its command line)", pid, Binary, controlSock)
}
