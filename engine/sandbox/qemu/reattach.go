package qemu

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

var _ sandbox.Reattacher = (*Driver)(nil)

// reattachMonitorTimeout bounds the QMP handshake with an adopted QEMU.
const reattachMonitorTimeout = 5 * time.Second

// Reattach adopts a QEMU started by an earlier engine process (with
// Options.Detach) from its state directory and pid:
//   - the process is held by a pidfd, so a recycled pid is never signalled,
//     and it must be the QEMU whose pid file is in cfg.StateDir;
//   - QMP: QEMU itself listens on qmp.sock (the inherited descriptor), and
//     takes a new client once the old one is gone, so the driver connects
//     again. If that fails the VM is still adopted: Stop and Destroy then
//     fall back to SIGKILL, and the exit reason is less precise;
//   - the agent channel: QEMU serves agent.sock as it does qmp.sock, so
//     DialAgent connects again. A QEMU started by an engine from before
//     QEMU served it connects to the driver's socket instead (its command
//     line says reconnect=1): the driver then listens again and the
//     chardev connects within about a second;
//   - the end of the VM is noticed by polling the pidfd: QEMU is not a
//     child of this process, so its wait status is unknown.
func (d *Driver) Reattach(ctx context.Context, cfg sandbox.Config, pid int) (_ sandbox.Sandbox, err error) {
	agentPath := filepath.Join(cfg.StateDir, agentSocketName)
	pidPath := filepath.Join(cfg.StateDir, pidFileName)
	var clientMode bool
	proc, err := sandbox.HoldProcess(cfg, pid, "QEMU", func(pid int, args [][]byte) (err error) {
		clientMode, err = checkOwnQEMU(pid, args, pidPath, agentPath)
		return err
	})
	if err != nil {
		return nil, err
	}
	v := &vm{
		id:          cfg.ID,
		stateDir:    cfg.StateDir,
		consoleLog:  cfg.ConsoleLog,
		qmpPath:     filepath.Join(cfg.StateDir, qmpSocketName),
		agentPath:   agentPath,
		logPath:     filepath.Join(cfg.StateDir, stderrLogName),
		pidPath:     pidPath,
		pid:         pid,
		exited:      make(chan struct{}),
		done:        make(chan struct{}),
		agentConns:  make(chan net.Conn, 1),
		createdDir:  true,
		releaseProc: proc.Release,
		killProc:    proc.Kill,
	}
	v.created = []string{v.qmpPath, v.agentPath, v.logPath, v.pidPath, filepath.Join(cfg.StateDir, jailDirName)}
	v.waitProc = func() syscall.WaitStatus {
		proc.Wait()
		return 0
	}
	go v.reap()
	defer func() {
		if err != nil {
			// Leave the VM running: the caller decides whether to end it.
			v.mu.Lock()
			v.closed = true
			v.mu.Unlock()
			if v.agentLn != nil {
				v.agentLn.Close()
			}
			v.closeMonitor()
		}
	}()

	if clientMode {
		if err := removeStaleSocket(v.agentPath); err != nil {
			return nil, fmt.Errorf("reattach VM %s: %w", cfg.ID, err)
		}
		if v.agentLn, err = listenUnix(v.agentPath); err != nil {
			return nil, fmt.Errorf("reattach VM %s: %w", cfg.ID, err)
		}
		go v.acceptAgent()
	}

	monCtx, cancel := context.WithTimeout(ctx, reattachMonitorTimeout)
	defer cancel()
	if merr := v.connectMonitor(monCtx, false); merr != nil {
		select {
		case <-v.exited:
			return nil, fmt.Errorf("reattach VM %s: QEMU exited", cfg.ID)
		default:
		}
		// Without QMP the VM is still usable through its agent and can be
		// ended by signal; the caller sees no difference.
		fmt.Fprintf(os.Stderr, "vmctl: VM %s: QMP not reconnected (%v): it will be stopped by signal\n", cfg.ID, merr)
	}
	return v, nil
}

// checkOwnQEMU makes sure process pid, whose command line is args, runs the
// QEMU of this VM (it names pidPath as its pid file, or, started by an
// older engine, agentPath as the socket it connects to), so that a
// recycled pid or another program is never adopted. clientMode reports the
// older form.
func checkOwnQEMU(pid int, args [][]byte, pidPath, agentPath string) (clientMode bool, err error) {
	legacy := []byte("path=" + escape(agentPath) + ",reconnect=")
	own := false
	for i, arg := range args {
		if string(arg) == "-pidfile" && i+1 < len(args) && string(args[i+1]) == pidPath {
			own = true
		}
		if bytes.HasPrefix(arg, []byte("socket,id=agent,")) && bytes.Contains(arg, legacy) {
			clientMode = true
		}
	}
	if own || clientMode {
		return clientMode, nil
	}
	return false, fmt.Errorf("process %d is not the QEMU of this VM (its command line names no pid file %s)", pid, pidPath)
}
