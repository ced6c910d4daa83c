package main

// The restore paths of the QEMU and vmctl-vmm drivers inside the nested L1
// (section vmm-nested): engine/sandbox/qemu, engine/sandbox/vmm and
// engine/sandbox/snapshot as vmctl runs them, on L1's KVM. The template is saved once; each boot then
// starts QEMU from it, and health_ms runs to the agent's answer to
// Restored (the guest brought up to date), the point a restored container
// can be created.

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containerd/ttrpc"

	agentapi "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
	"github.com/vmctl/vmctl/engine/sandbox/snapshot"
	"github.com/vmctl/vmctl/engine/sandbox/vmm"
)

type l1Restorer struct {
	o     l1Opts
	kind  string // the VMMBOOT line's vmm=
	drv   sandbox.Driver
	store *snapshot.Store
	cfg   sandbox.Config
}

// newL1Restorer measures the restore path of QEMU's driver (kind
// qemu-restored) or vmctl-vmm's (vmctl-vmm-restored).
func newL1Restorer(o l1Opts, tmp, kind string) (*l1Restorer, error) {
	var drv sandbox.Driver
	if kind == "qemu-restored" {
		bin, err := exec.LookPath(o.qemu)
		if err != nil {
			return nil, err
		}
		if drv, err = qemu.New(qemu.Options{Binary: bin, Accel: "kvm"}); err != nil {
			return nil, err
		}
	} else {
		bin, err := exec.LookPath(o.vmm)
		if err != nil {
			return nil, err
		}
		if drv, err = vmm.New(vmm.Options{Binary: bin}); err != nil {
			return nil, err
		}
	}
	ready := func(ctx context.Context, sb sandbox.Sandbox) error {
		conn, err := sb.DialAgent(ctx)
		if err != nil {
			return err
		}
		tc := ttrpc.NewClient(conn)
		defer tc.Close()
		_, err = agentapi.NewTTRPCAgentClient(tc).Health(ctx, &agentapi.HealthRequest{})
		return err
	}
	kernel, err := filepath.Abs(o.kernel)
	if err != nil {
		return nil, err
	}
	initrd, err := filepath.Abs(o.initrd)
	if err != nil {
		return nil, err
	}
	return &l1Restorer{o: o, kind: kind, drv: drv, store: snapshot.New(filepath.Join(tmp, kind), "bench", ready),
		cfg: sandbox.Config{Kernel: kernel, Initrd: initrd, VCPUs: 1, MemoryMiB: o.memMiB}}, nil
}

// save makes the template (a first restore, not measured).
func (r *l1Restorer) save() error {
	_, err := r.boot(-1)
	return err
}

func (r *l1Restorer) boot(i int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.o.timeout)
	defer cancel()
	cfg := r.cfg
	cfg.ID = fmt.Sprintf("r%d", i+1)
	cfg.StateDir = filepath.Join(os.TempDir(), fmt.Sprintf("%s%d", r.kind[:1], i+1))
	start := time.Now()
	sb, restored, err := r.store.Start(ctx, r.drv, cfg)
	if err != nil {
		return "", err
	}
	defer sb.Destroy()
	if !restored {
		return "", fmt.Errorf("not restored")
	}
	conn, err := sb.DialAgent(ctx)
	if err != nil {
		return "", err
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	api := agentapi.NewTTRPCAgentClient(tc)
	if _, err := api.Health(ctx, &agentapi.HealthRequest{}); err != nil {
		return "", fmt.Errorf("Health: %w", err)
	}
	seed := make([]byte, 64)
	rand.Read(seed)
	if _, err := api.Restored(ctx, &agentapi.RestoredRequest{Seed: seed, UnixNanos: time.Now().UnixNano()}); err != nil {
		return "", fmt.Errorf("Restored: %w", err)
	}
	health := time.Since(start)
	mem, err := readSmaps(sb.Pid(), uint64(r.o.memMiB)<<20)
	if err != nil {
		return "", err
	}
	if _, err := api.Shutdown(ctx, &agentapi.ShutdownRequest{}); err != nil {
		return "", fmt.Errorf("Shutdown: %w", err)
	}
	if _, err := sb.Wait(ctx); err != nil {
		return "", fmt.Errorf("did not exit after the agent's Shutdown: %w", err)
	}
	return fmt.Sprintf("VMMBOOT vmm=%s health_ms=%d exit_ms=%d rss_kb=%d pss_kb=%d guest_kb=%d",
		r.kind, health.Milliseconds(), time.Since(start).Milliseconds(), mem.RSS, mem.PSS, mem.GuestRSS), nil
}
