package systemsvc

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/vmctl/vmctl/engine/sandbox/hostcheck"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
)

// HostConfig is what ProbeHost reports besides what it finds.
type HostConfig struct {
	// Kernel and Initrd are the guest kernel and the guest image.
	Kernel, Initrd string
	// QEMU is the qemu-system-x86_64 binary; empty means look it up in PATH.
	QEMU string
}

// Host describes how this host runs VMs. Every text is one line.
type Host struct {
	Hypervisor string // the driver auto picks; empty if none can run
	Accel      string
	Reason     string // why auto picks it, or why there is none
	// Outer is the hypervisor this host runs under ("none (bare metal)"),
	// with what named it.
	Outer string
	// Virtualization says whether VT-x/AMD-V reaches this host.
	Virtualization string
	KVM            string // what /dev/kvm can do
	QEMU           string // the QEMU binary and its accelerators, or why there is none
	// FastPath is the setting that would let auto pick the native VMM,
	// where it does not; empty where it does or where nothing would.
	FastPath string
	Kernel   string
	Initrd   string
}

// ProbeHost reports the hypervisor choice for this host, what it rests on,
// and the guest files.
func ProbeHost(ctx context.Context, cfg HostConfig) Host {
	r, err := hostcheck.Default.Check()
	if err != nil {
		return Host{Reason: err.Error(), Kernel: cfg.Kernel, Initrd: cfg.Initrd}
	}
	return describeHost(cfg, r, probeQEMU(ctx, cfg.QEMU, r.Choice.Accel))
}

// qemuProbe is what ProbeHost finds of QEMU.
type qemuProbe struct {
	path   string
	accels []string // built in, as -accel help lists them
	err    error    // why QEMU cannot run VMs here
}

// probeQEMU checks the QEMU binary bin (empty: PATH's) as the driver
// would for accel, and asks it for its accelerators.
func probeQEMU(ctx context.Context, bin, accel string) qemuProbe {
	if _, err := qemu.New(qemu.Options{Binary: bin, Accel: accel}); err != nil {
		return qemuProbe{err: err}
	}
	p := qemuProbe{path: bin}
	if p.path == "" {
		if path, err := exec.LookPath(qemu.Binary); err == nil {
			p.path = path
		}
	}
	p.accels, _ = hostcheck.QEMUAccelerators(ctx, p.path) // a QEMU that cannot list them still runs
	return p
}

// describeHost puts a host check and QEMU's probe into a Host. Where auto
// picks QEMU and QEMU cannot run, no hypervisor can: Hypervisor is empty
// and Reason says why, for both.
func describeHost(cfg HostConfig, r hostcheck.Report, q qemuProbe) Host {
	h := Host{
		Hypervisor: r.Choice.Driver, Accel: r.Choice.Accel, Reason: r.Choice.Reason,
		Outer: r.Outer.String(), Virtualization: r.Virtualization, KVM: r.KVM, FastPath: r.Advice,
		Kernel: cfg.Kernel, Initrd: cfg.Initrd,
	}
	if q.err != nil {
		h.QEMU = q.err.Error()
		if r.Choice.Driver == "qemu" {
			h.Hypervisor, h.Accel = "", ""
			h.Reason = fmt.Sprintf("the native VMM cannot run (%s), nor can QEMU (%s)", r.KVM, q.err)
		}
		return h
	}
	h.QEMU = q.path
	if len(q.accels) > 0 {
		usable := []string{}
		for _, a := range q.accels {
			if a == "tcg" || a == "kvm" && r.KVMOK {
				usable = append(usable, a)
			}
		}
		h.QEMU += fmt.Sprintf(" (accelerators %s; usable here: %s)", strings.Join(q.accels, ", "), orNone(usable))
		if !slices.Contains(q.accels, r.Choice.Accel) && r.Choice.Driver == "qemu" {
			h.Hypervisor, h.Accel = "", ""
			h.Reason = fmt.Sprintf("the native VMM cannot run (%s), and %s has no %s accelerator", r.KVM, q.path, r.Choice.Accel)
		}
	}
	return h
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
