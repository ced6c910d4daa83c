package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/vmctl/vmctl/engine/server"
)

func newCheckCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Check how this host can run containers' VMs, and how to get the native VMM where it cannot",
		Long: `Check reports the hypervisor this host runs under (DMI and the CPUID hypervisor
leaf), whether hardware virtualization (VT-x/AMD-V) reaches it, what /dev/kvm can
do, QEMU and its accelerators, which driver auto picks and why, and, where auto
falls back to QEMU's emulation, the setting that would give the native VMM.

It checks the host of the engine vmctl uses (as vmctl info names it). It exits 0
when containers can run there, on some driver, and 1 when none can.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withEngine("check", false, func(r *remote) error { return r.check(cmd.Context()) })
		},
	}
}

// checkLines are the engine's DriverStatus entries vmctl check prints, in
// its order, with its labels.
var checkLines = []struct{ key, label string }{
	{server.InfoOuter, "Outer hypervisor:"},
	{server.InfoVirtualization, "VT-x/AMD-V:"},
	{server.InfoKVM, "/dev/kvm:"},
	{server.InfoQEMU, "QEMU:"},
	{server.InfoHypervisor, "auto picks:"},
	{server.InfoReason, "Why:"},
	{server.InfoFastPath, "Fast path:"},
}

func (r *remote) check(ctx context.Context) error {
	res, err := r.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return r.fail(err)
	}
	if r.inProcess {
		fmt.Printf(checkFormat, "Engine:", "in this process ("+r.why+")")
	} else {
		fmt.Printf(checkFormat, "Daemon:", r.host)
	}
	return writeCheck(os.Stdout, res.Info)
}

const checkFormat = "%-18s %s\n"

// writeCheck writes the host check of an engine's /info to w, and returns
// an error of status 1, in one line, where no hypervisor can run there.
func writeCheck(w io.Writer, info system.Info) error {
	status := map[string]string{}
	for _, kv := range info.DriverStatus {
		status[kv[0]] = kv[1]
	}
	driver := status[server.InfoHypervisor]
	for _, l := range checkLines {
		value := status[l.key]
		switch {
		case l.key == server.InfoHypervisor && driver != "":
			value = fmt.Sprintf("%s (accelerator %s)", driver, status[server.InfoAccel])
		case l.key == server.InfoFastPath && value == "" && driver == "kvm":
			value = "in use: the native VMM runs on hardware virtualization"
		}
		if value != "" {
			fmt.Fprintf(w, checkFormat, l.label, value)
		}
	}
	if driver == "" {
		why := "the engine names no hypervisor"
		for _, warning := range info.Warnings {
			if reason, ok := strings.CutPrefix(warning, server.NoHypervisorWarning); ok {
				why = reason
			}
		}
		return &statusError{code: 1, err: fmt.Errorf("no hypervisor can run containers here: %s", why)}
	}
	fmt.Fprintf(w, checkFormat, "Result:", fmt.Sprintf("containers can run here, on %s with %s", driver, status[server.InfoAccel]))
	return nil
}
