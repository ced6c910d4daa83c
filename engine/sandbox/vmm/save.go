package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	vmmapi "github.com/vmctl/vmctl/api/vmm/v1"
	"github.com/vmctl/vmctl/engine/sandbox"
)

var _ sandbox.Saver = (*Driver)(nil)

// saveFormat changes when what the driver saves, or how it restores it,
// does.
const saveFormat = "vmctl-vmm-save-1"

// SaveIdentity implements sandbox.Saver: the format, the kernel command
// line the driver gives, the binary (path, inode, size, ctime) and the
// host CPU (a saved vCPU carries its features).
func (d *Driver) SaveIdentity() string {
	parts := []string{saveFormat, strconv.Quote(baseCmdline), "cpu=" + sandbox.HostCPUSignature()}
	if key, err := sandbox.BinaryKey(d.binary); err == nil {
		parts = append(parts, key)
	}
	return strings.Join(parts, " ")
}

// CanRestore implements sandbox.Saver. vmctl-vmm saves VMs without shared
// directories (9p keeps open host files). A template's NIC is on a tap of
// its own that nothing else uses (-detached-nic).
func (d *Driver) CanRestore(cfg sandbox.Config) error {
	switch {
	case len(cfg.Shares) > 0:
		return errors.New("vmctl-vmm cannot save a VM with shared directories: its open host files cannot follow it")
	case cfg.MemoryMiB <= 0:
		return errors.New("vmctl-vmm saves VMs of a given memory size only")
	}
	return nil
}

// Save implements sandbox.Saver: the VMM writes the VM's state into the
// pipe it was given at Start (the RAM is in the template's memory file
// already) and ends the VM.
func (d *Driver) Save(ctx context.Context, sb sandbox.Sandbox, w io.Writer) error {
	v, ok := sb.(*vm)
	if !ok || v.saveState == nil {
		return errors.New("save: not a template VM of this driver")
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, v.saveState)
		copied <- err
	}()
	if _, err := v.ctlAPI.Save(ctx, &vmmapi.SaveRequest{}); err != nil {
		v.saveState.Close() // ends the copy
		<-copied
		return fmt.Errorf("save: %w", err)
	}
	// The VMM closed its end once the state was written.
	select {
	case err := <-copied:
		if err != nil {
			return fmt.Errorf("save: %w", err)
		}
		return nil
	case <-ctx.Done():
		v.saveState.Close()
		<-copied
		return ctx.Err()
	}
}

// saveFiles adds to cmd what a template or restored VM needs beyond the
// usual arguments: the guest RAM's file and a pipe for the state (written
// by Save on a template, fed from cfg.Restore to a restored VM). It
// returns the pipe's end this process keeps, or nil for an ordinary VM.
func saveFiles(cmd *exec.Cmd, cfg sandbox.Config) (*os.File, error) {
	if !cfg.Template && cfg.Restore == nil {
		return nil, nil
	}
	if cfg.Memory == nil {
		return nil, errors.New("sandbox config: a vmctl-vmm template or restored VM needs its RAM's memory file")
	}
	// A descriptor of its own: the command's extra files are closed once
	// it has started, and cfg.Memory stays the caller's.
	fd, err := unix.FcntlInt(cfg.Memory.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("memory file: %w", err)
	}
	ram := os.NewFile(uintptr(fd), "ram")
	r, w, err := os.Pipe()
	if err != nil {
		ram.Close()
		return nil, err
	}
	add := func(flag string, f *os.File) {
		cmd.Args = append(cmd.Args, flag, strconv.Itoa(3+len(cmd.ExtraFiles)))
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	add("-ram-fd", ram)
	if cfg.Template {
		add("-save-state-fd", w)
		return r, nil
	}
	add("-restore-state-fd", r)
	cmd.Args = append(cmd.Args, "-wait-start")
	return w, nil
}

// templateDisks are a template VM's placeholder disks: empty files in its
// state directory, one per disk of its shape. Writable (with nothing to
// write): a read-only disk offers one feature more, and a restored VM's
// disks must offer every feature its template's driver acked.
func templateDisks(cfg sandbox.Config) ([]sandbox.Disk, error) {
	var disks []sandbox.Disk
	for i := range cfg.Disks {
		p := filepath.Join(cfg.StateDir, fmt.Sprintf("template-disk%d", i))
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
		disks = append(disks, sandbox.Disk{Path: p})
	}
	return disks, nil
}
