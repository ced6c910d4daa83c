package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
	"github.com/vmctl/vmctl/engine/sandbox/vmm"
)

// Config is what the shim needs to boot VMs.
type Config struct {
	// Kernel and Initrd are the guest kernel and the agent's initramfs.
	Kernel, Initrd string
	// Hypervisor is "auto", "kvm" (vmctl-vmm) or "qemu".
	Hypervisor string
	// QEMU and VMM are the hypervisor binaries; empty looks them up.
	QEMU, VMM string
	// StateRoot holds one directory per VM (sockets, logs): short, as unix
	// socket paths are limited to 107 bytes, which bundle paths with
	// 64-character IDs exceed.
	StateRoot string
	// BootTimeout bounds a boot to agent-ready.
	BootTimeout time.Duration
}

// DefaultStateRoot is Config.StateRoot's default.
const DefaultStateRoot = "/run/vmctl-shim"

func (c *Config) setDefaults() {
	if c.Hypervisor == "" {
		c.Hypervisor = "auto"
	}
	if c.StateRoot == "" {
		c.StateRoot = DefaultStateRoot
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = 60 * time.Second
	}
}

// vmRecordName is the file in the bundle that names the task's VM, so
// that the shim's delete command can end it after the shim died.
const vmRecordName = "vm.json"

// vmRecord is what vm.json holds.
type vmRecord struct {
	ID       string `json:"id"`
	Driver   string `json:"driver"`
	Accel    string `json:"accel,omitempty"`
	Pid      int    `json:"pid"`
	StateDir string `json:"stateDir"`
	// PodShared is a pod's shared directory, a mount of its own.
	PodShared string `json:"podShared,omitempty"`
}

// vm is the task's VM and its agent.
type vm struct {
	sb       sandbox.Sandbox
	agent    *agent.Client
	shareFS  string // the file system the guest mounts shares with
	stateDir string
	bundle   string
}

// sandboxID is the VM's name: short and unique per namespace and task.
func sandboxID(namespace, id string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + id))
	return hex.EncodeToString(sum[:])[:16]
}

// openDriver returns the driver for a choice, as the engine does.
func (c Config) openDriver(choice sandbox.Choice) (sandbox.Driver, error) {
	if err := sandbox.CanRun(choice); err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err)
	}
	for _, f := range []struct{ what, path string }{{"guest kernel", c.Kernel}, {"guest image", c.Initrd}} {
		if st, err := os.Stat(f.path); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s not found at %s: install vmctl (make install)", errdefs.ErrFailedPrecondition, f.what, f.path)
		}
	}
	var (
		d   sandbox.Driver
		err error
	)
	switch choice.Driver {
	case "qemu":
		d, err = qemu.New(qemu.Options{Binary: c.QEMU, Accel: choice.Accel})
	case "kvm":
		d, err = vmm.New(vmm.Options{Binary: c.VMM})
	default:
		return nil, fmt.Errorf("%w: hypervisor %s: no driver", errdefs.ErrNotImplemented, choice.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err)
	}
	return d, nil
}

// vmShape sizes the VM for the spec's resources: a vCPU per CPU of quota
// (one without), and the memory limit plus what the guest's kernel and
// agent take (256 MiB without a limit), as vmctld does.
func vmShape(spec *specs.Spec) (vcpus, memMiB int) {
	vcpus, memMiB = 1, 256
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return vcpus, memMiB
	}
	r := spec.Linux.Resources
	if cpu := r.CPU; cpu != nil && cpu.Quota != nil && *cpu.Quota > 0 && cpu.Period != nil && *cpu.Period > 0 {
		// In floating point, capped before converting: a huge quota must
		// not overflow into a small count.
		vcpus = int(math.Min(maxVCPUs, math.Max(1, math.Ceil(float64(*cpu.Quota)/float64(*cpu.Period)))))
	}
	if m := r.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		memMiB = int(*m.Limit>>20) + 128
	}
	return vcpus, memMiB
}

// The pod's resources CRI puts on its sandbox (the sum of its containers'
// limits and the pod's overhead, as kubelet passes them).
const (
	annoSandboxMemory    = "io.kubernetes.cri.sandbox-memory"
	annoSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	annoSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
)

// podShape sizes a pod's VM from its sandbox's annotations, where CRI
// gives the pod's resources; without them, as vmShape.
func podShape(spec *specs.Spec) (vcpus, memMiB int) {
	vcpus, memMiB = vmShape(spec)
	parse := func(key string) (int64, bool) {
		v, err := strconv.ParseInt(spec.Annotations[key], 10, 64)
		return v, err == nil && v > 0
	}
	if q, ok := parse(annoSandboxCPUQuota); ok {
		if p, ok := parse(annoSandboxCPUPeriod); ok {
			vcpus = int(math.Min(maxVCPUs, math.Max(1, math.Ceil(float64(q)/float64(p)))))
		}
	}
	if m, ok := parse(annoSandboxMemory); ok {
		memMiB = int(min(m>>20, 1<<30)) + 128
	}
	return vcpus, memMiB
}

// maxVCPUs is the most vCPUs a task's VM gets.
const maxVCPUs = 64

// checkResources refuses a memory limit the host cannot give a VM at all
// (its RAM), before anything is made.
func checkResources(spec *specs.Spec) error {
	if spec.Linux == nil || spec.Linux.Resources == nil || spec.Linux.Resources.Memory == nil || spec.Linux.Resources.Memory.Limit == nil {
		return nil
	}
	limit := *spec.Linux.Resources.Memory.Limit
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return nil
	}
	if host := uint64(si.Totalram) * uint64(si.Unit); limit > 0 && uint64(limit) > host {
		return fmt.Errorf("%w: memory limit %d bytes is more than the host's %d bytes", errdefs.ErrInvalidArgument, limit, host)
	}
	return nil
}

// vmDevices is what a VM is given beyond its size.
type vmDevices struct {
	// shares: the rootfs, or a pod's shared directory, then host
	// directories.
	shares []sandbox.Share
	// nics and netNS: a pod's NIC, in the pod's network namespace.
	nics  []sandbox.NIC
	netNS string
	// podShared is recorded for the delete command.
	podShared string
}

// bootVM starts the VM of task id on the driver choice picked, with its
// devices, and waits for its agent. On error nothing is left.
func (c Config) bootVM(ctx context.Context, choice sandbox.Choice, namespace, id, bundle string, spec *specs.Spec, dev vmDevices) (_ *vm, err error) {
	drv, err := c.openDriver(choice)
	if err != nil {
		return nil, err
	}
	vcpus, mem := vmShape(spec)
	if taskKind(spec) == kindSandbox {
		vcpus, mem = podShape(spec)
	}
	sid := sandboxID(namespace, id)
	stateDir := filepath.Join(c.StateRoot, sid)
	if err := os.MkdirAll(c.StateRoot, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", c.StateRoot, err)
	}
	sb, err := drv.Start(ctx, sandbox.Config{
		ID:         sid,
		Kernel:     c.Kernel,
		Initrd:     c.Initrd,
		VCPUs:      vcpus,
		MemoryMiB:  mem,
		Shares:     dev.shares,
		NICs:       dev.nics,
		NetNS:      dev.netNS,
		StateDir:   stateDir,
		ConsoleLog: filepath.Join(bundle, "console.log"),
	})
	if err != nil {
		return nil, err
	}
	v := &vm{sb: sb, shareFS: sandbox.ShareFS(drv), stateDir: stateDir, bundle: bundle}
	defer func() {
		if err != nil {
			v.destroy()
		}
	}()
	rec := vmRecord{ID: sid, Driver: choice.Driver, Accel: choice.Accel, Pid: sb.Pid(), StateDir: stateDir, PodShared: dev.podShared}
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(bundle, vmRecordName), b, 0o600); err != nil {
		return nil, fmt.Errorf("record the VM: %w", err)
	}

	bootCtx, cancel := context.WithTimeout(ctx, c.BootTimeout)
	defer cancel()
	go func() {
		// A VM that dies during boot fails it at once.
		if _, err := sb.Wait(bootCtx); err == nil {
			cancel()
		}
	}()
	conn, err := sb.DialAgent(bootCtx)
	if err != nil {
		return nil, v.bootError("connect to the guest agent", err)
	}
	v.agent = agent.New(conn)
	if _, err := v.agent.Health(bootCtx); err != nil {
		return nil, v.bootError("wait for the guest agent", err)
	}
	return v, nil
}

// bootError says why a boot failed, pointing at the console log when the
// VM died.
func (v *vm) bootError(what string, err error) error {
	waitCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if exit, werr := v.sb.Wait(waitCtx); werr == nil {
		return fmt.Errorf("%w: %s: the VM ended during boot (%s: %s); guest console: %s", errdefs.ErrUnavailable,
			what, exit.Reason, exit.Detail, filepath.Join(v.bundle, "console.log"))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// rootfsStorage is how the agent finds the shared rootfs: the share
// itself, or a pod member's directory in it.
func (v *vm) rootfsStorage(readOnly bool, subdir string) agent.Storage {
	return agent.Storage{Serial: contract.RootfsShareTag, FSType: v.shareFS, Role: contract.RoleRootfs, ReadOnly: readOnly, Subdir: subdir}
}

// shutdown asks the guest to power off cleanly (its file systems synced
// and unmounted), then ends the VM and removes its state.
func (v *vm) shutdown() {
	if v.agent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := v.agent.Shutdown(ctx); err != nil {
			waitCtx, cancelWait := context.WithTimeout(context.Background(), time.Second)
			v.sb.Wait(waitCtx)
			cancelWait()
		}
		cancel()
	}
	v.destroy()
}

// destroy ends the VM at once and removes its state and record.
func (v *vm) destroy() {
	if v.agent != nil {
		v.agent.Close()
	}
	v.sb.Destroy()
	os.Remove(v.stateDir)
	os.Remove(filepath.Join(v.bundle, vmRecordName))
}

// cleanupVM ends the VM a bundle's vm.json names, if it still runs, and
// removes its state: the delete command's work after a shim died. It
// adopts the VM through the driver, which checks that the process is that
// VM's before it signals anything.
func cleanupVM(ctx context.Context, cfg Config, bundle string) (pid int, err error) {
	b, err := os.ReadFile(filepath.Join(bundle, vmRecordName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var rec vmRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.StateDir == "" || rec.ID == "" {
		return 0, fmt.Errorf("bad VM record %s: %v", filepath.Join(bundle, vmRecordName), err)
	}
	defer os.Remove(filepath.Join(bundle, vmRecordName))
	if rec.PodShared != "" {
		defer removeShared(rec.PodShared)
	}
	drv, err := cfg.openDriver(sandbox.Choice{Driver: rec.Driver, Accel: rec.Accel})
	if err != nil {
		return rec.Pid, err
	}
	re, ok := drv.(sandbox.Reattacher)
	if !ok {
		return rec.Pid, fmt.Errorf("driver %s cannot adopt VMs", rec.Driver)
	}
	sb, err := re.Reattach(ctx, sandbox.Config{ID: rec.ID, Kernel: cfg.Kernel, Initrd: cfg.Initrd, StateDir: rec.StateDir}, rec.Pid)
	if err != nil {
		// Gone already (or not that VM any more): only its state is left.
		os.RemoveAll(rec.StateDir)
		return rec.Pid, nil
	}
	err = sb.Destroy()
	os.RemoveAll(rec.StateDir)
	return rec.Pid, err
}
