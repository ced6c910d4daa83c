package qemu

// Saving and restoring VMs (sandbox.Saver), with QEMU's migration stream:
//
//   - A Template VM boots with the shape of the VMs it stands for, its
//     disks empty null-co drives and its NICs virtio-net devices with no
//     host side, and a second QMP monitor. Save stops it, hands QEMU the
//     write end of a pipe ("getfd") and runs "migrate fd:state"; the
//     driver copies the stream from the pipe's read end to the caller's
//     writer.
//   - A restored VM runs the same command line with its own disks and taps
//     in the placeholders' places and "-incoming fd:5", the read end of a
//     pipe the driver feeds from Config.Restore. QEMU loads the device and
//     memory state paused (-S); the driver resumes it only once the whole
//     state was read without error, so a reader that finds the state
//     damaged at its end stops the VM before its first instruction.
//
// Migration carries device state, not backends: a virtio-blk disk's size,
// serial and read-only flag and a virtio-net device's offloads come from
// the new backends when the guest reads them again, which it does when its
// drivers are rebound (the agent's Restored call). The MAC address is
// migrated: the guest keeps sandbox.TemplateMAC(i) until given its own.
// vhost-user-fs devices cannot be migrated, so VMs with shares boot.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/digitalocean/go-qemu/qemu"
	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/sandbox"
)

var _ sandbox.Saver = (*Driver)(nil)

// saveFormat changes whenever the template's command line does in a way
// that a saved state depends on.
const saveFormat = "qemu-save-1"

const errSharesUnsaved = "sandbox config: a VM with shared directories cannot be saved or restored (virtio-fs devices do not migrate)"

// SaveIdentity is the saved state's dependence on this QEMU: the format,
// the kernel command line the driver gives, the binary (binaryKey: path,
// inode, size, change time), the accelerator and the CPU model, which
// under KVM is the host's.
func (d *Driver) SaveIdentity() string {
	// The guest booted with the driver's kernel command line (the
	// caller's arguments are the caller's to add to its key).
	parts := []string{saveFormat, d.accel, fmt.Sprintf("%q %q", kernelCmdline(d.accel, 1, nil), kernelCmdline(d.accel, 2, nil))}
	if key, err := sandbox.BinaryKey(d.binary); err == nil {
		parts = append(parts, key)
	}
	if d.accel == "kvm" {
		parts = append(parts, "cpu="+sandbox.HostCPUSignature())
	}
	return strings.Join(parts, " ")
}

// CanRestore refuses VMs with shares.
func (d *Driver) CanRestore(cfg sandbox.Config) error {
	if len(cfg.Shares) > 0 {
		return errors.New(errSharesUnsaved)
	}
	return nil
}

// saveTimeout bounds Save when ctx has no deadline.
const saveTimeout = time.Minute

// Save stops sb, a Template VM, and writes its migration stream to w. It
// speaks QMP itself on the template's second monitor: go-qemu's monitor
// cannot pass QEMU the descriptor ("getfd") that QEMU 7.2's outgoing
// migration needs.
func (d *Driver) Save(ctx context.Context, sb sandbox.Sandbox, w io.Writer) error {
	v, ok := sb.(*vm)
	if !ok || v.savePath == "" {
		return errors.New("save: not a template VM of this driver")
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(saveTimeout)
	}
	// The guest's agent must have seen the host go and opened its port
	// again, to wait for the next host: saved any earlier, a restored
	// guest would take the next host for the one that left.
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	stopWait := make(chan struct{})
	go func() {
		select {
		case <-wctx.Done():
		case <-v.exited:
		}
		close(stopWait)
	}()
	if !v.agentPort.waitOpen(2, stopWait) {
		return errors.New("save: the guest did not reopen its agent port after the host let go of it")
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: v.savePath, Net: "unix"})
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer conn.Close()
	// Ending ctx or QEMU unblocks every read and write below.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	conn.SetDeadline(deadline)
	mon := &rawMonitor{conn: conn, r: bufio.NewReader(conn)}
	if _, err := mon.r.ReadBytes('\n'); err != nil { // the greeting
		return fmt.Errorf("save: qmp greeting: %w", err)
	}
	for _, c := range []string{"qmp_capabilities", "stop"} {
		if _, err := mon.exec(c, nil, nil); err != nil {
			return fmt.Errorf("save: %w", err)
		}
	}
	if v.sharedRAM {
		if _, err := mon.exec("migrate-set-capabilities", ignoreShared, nil); err != nil {
			return fmt.Errorf("save: %w", err)
		}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer pr.Close()
	_, err = mon.exec("getfd", map[string]any{"fdname": "state"}, pw)
	pw.Close()
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, pr)
		copied <- err
	}()
	if _, err := mon.exec("migrate", map[string]any{"uri": "fd:state"}, nil); err != nil {
		v.kill() // ends the copy
		<-copied
		return fmt.Errorf("save: %w", err)
	}
	// QEMU closes its end when the stream is complete, or failed.
	select {
	case err := <-copied:
		if err != nil {
			v.kill()
			return fmt.Errorf("save: write state: %w", err)
		}
	case <-ctx.Done():
		v.kill()
		<-copied
		return fmt.Errorf("save: %w", ctx.Err())
	}
	raw, err := mon.exec("query-migrate", nil, nil)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	var res struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("save: query-migrate: %w", err)
	}
	if res.Status != "completed" {
		return fmt.Errorf("save: migration %s %s", res.Status, res.ErrorDesc)
	}
	return nil
}

// rawMonitor is a minimal QMP client: one command at a time, events
// skipped, a descriptor passed along with a command when asked.
type rawMonitor struct {
	conn *net.UnixConn
	r    *bufio.Reader
}

// exec sends command and returns its "return" value, or its error.
func (m *rawMonitor) exec(command string, args map[string]any, fd *os.File) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	if _, _, err := m.conn.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		line, err := m.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		var reply struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &reply); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case reply.Event != "":
			continue
		case reply.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s", command, reply.Error.Desc)
		}
		return reply.Return, nil
	}
}

// ignoreShared leaves shared RAM (a template's Config.Memory) out of the
// migration stream, which then says where it is; both sides must set it.
var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// startIncoming starts loading the saved state of a VM whose RAM is the
// template's memory (-incoming defer): the capability first, then the
// stream from stateFD.
func (v *vm) startIncoming(ctx context.Context) error {
	for _, c := range []qmp.Command{
		{Execute: "migrate-set-capabilities", Args: ignoreShared},
		{Execute: "migrate-incoming", Args: map[string]any{"uri": fmt.Sprintf("fd:%d", stateFD)}},
	} {
		if err := v.runCommand(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// feedState copies the saved state into the pipe QEMU loads it from and
// reports the outcome once: the reader's error (a damaged state) or nil at
// its end.
func feedState(w *os.File, r io.Reader) <-chan error {
	fed := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, r)
		w.Close()
		fed <- err
	}()
	return fed
}

// restorePoll is how often awaitRestore asks QEMU whether the state has
// loaded; QMP announces the end of an incoming migration only to clients
// that enabled events before it began.
const restorePoll = 2 * time.Millisecond

// awaitRestore waits until the whole saved state was fed without error and
// QEMU has loaded it (paused, as -S asks). On failure QEMU is killed: a
// guest from a damaged state must not run.
func (v *vm) awaitRestore(ctx context.Context, fed <-chan error) error {
	select {
	case err := <-fed:
		if err != nil {
			v.kill()
			return &stateReadError{err}
		}
	case <-v.exited:
		return errors.New("qemu exited while loading the state")
	case <-ctx.Done():
		v.kill()
		return ctx.Err()
	}
	v.mu.Lock()
	dom := v.dom
	v.mu.Unlock()
	if dom == nil {
		return errNoMonitor
	}
	for {
		st, err := dom.Status()
		if err != nil {
			return fmt.Errorf("query-status: %w", err)
		}
		switch st {
		case qemu.StatusInMigrate:
		case qemu.StatusPaused:
			return nil
		default:
			v.kill()
			return fmt.Errorf("the state loaded into status %s", st)
		}
		select {
		case <-time.After(restorePoll):
		case <-v.exited:
			return errors.New("qemu exited while loading the state")
		case <-ctx.Done():
			v.kill()
			return ctx.Err()
		}
	}
}

// stateReadError is a failure to read the saved state (Config.Restore),
// reported as is rather than as QEMU's exit.
type stateReadError struct{ err error }

func (e *stateReadError) Error() string { return "read saved state: " + e.err.Error() }
func (e *stateReadError) Unwrap() error { return e.err }
