package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"

	units "github.com/docker/go-units"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/server"
)

func newInfoCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show which engine serves vmctl, which hypervisor it runs containers on, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withEngine("info", false, func(r *remote) error { return r.info(cmd.Context()) })
		},
	}
}

// infoLabels are the labels vmctl info gives the engine's DriverStatus
// entries, in the engine's order; an entry not listed keeps its key.
var infoLabels = map[string]string{
	server.InfoHypervisor:     "Hypervisor:",
	server.InfoAccel:          "  Accelerator:",
	server.InfoReason:         "  Why:",
	server.InfoOuter:          "  Runs under:",
	server.InfoVirtualization: "  VT-x/AMD-V:",
	server.InfoKVM:            "  KVM:",
	server.InfoQEMU:           "  QEMU:",
	server.InfoFastPath:       "  Fast path:",
}

func (r *remote) info(ctx context.Context) error {
	res, err := r.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return r.fail(err)
	}
	info := res.Info
	if r.inProcess {
		fmt.Printf("%-15s in this process (%s)\n", "Engine:", r.why)
	} else {
		fmt.Printf("%-15s %s\n", "Daemon:", r.host)
	}
	fmt.Printf("%-15s %s\n", "Version:", info.ServerVersion)
	for _, kv := range info.DriverStatus {
		label, ok := infoLabels[kv[0]]
		if !ok {
			label = kv[0] + ":"
		}
		value := kv[1]
		if kv[0] == server.InfoHypervisor {
			value += " (auto)"
		}
		fmt.Printf("%-15s %s\n", label, value)
	}
	for _, w := range info.Warnings {
		fmt.Printf("%-15s %s\n", "Warning:", w)
	}
	var runtimes []string
	for name := range info.Runtimes {
		if name == info.DefaultRuntime {
			name += " (default)"
		}
		runtimes = append(runtimes, name)
	}
	slices.Sort(runtimes)
	fmt.Printf("%-15s %s\n", "Runtimes:", strings.Join(runtimes, ", "))
	fmt.Printf("%-15s %d (%d running, %d stopped)\n", "Containers:", info.Containers, info.ContainersRunning, info.ContainersStopped)
	fmt.Printf("%-15s %d\n", "Images:", info.Images)
	fmt.Printf("%-15s %s\n", "Data root:", info.DockerRootDir)
	fmt.Printf("%-15s %s (%s/%s, kernel %s, %d CPUs, %s)\n", "Host:", info.Name, info.OSType, info.Architecture,
		info.KernelVersion, info.NCPU, units.BytesSize(float64(info.MemTotal)))
	return nil
}

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the versions of vmctl and of the engine it uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Printf("vmctl %s (%s, %s/%s)\n", engine.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return g.withEngine("version", false, func(r *remote) error {
				v, err := r.api.ServerVersion(cmd.Context(), client.ServerVersionOptions{})
				if err != nil {
					return r.fail(err)
				}
				where := "vmctld " + v.Version + " at " + r.host
				if r.inProcess {
					where = "engine " + v.Version + " in this process"
				}
				fmt.Printf("%s (API %s, client uses %s, %s/%s)\n", where, v.APIVersion, r.api.ClientVersion(), v.Os, v.Arch)
				return nil
			})
		},
	}
}
