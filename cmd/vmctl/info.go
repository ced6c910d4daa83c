package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/vmctl/vmctl/engine"
)

func newInfoCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show which hypervisor runs containers on this host, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.host != "" {
				return remoteInfo(cmd.Context(), g)
			}
			info := engine.HostInfo(engine.Config{DataRoot: g.dataRoot, ExecRoot: g.execRoot, Kernel: g.kernel, Initrd: g.initrd})
			fmt.Printf("Version:        %s\n", engine.Version)
			fmt.Printf("Hypervisor:     %s (auto)\n", info.Hypervisor)
			fmt.Printf("  Accelerator:  %s\n", info.Accel)
			fmt.Printf("  Why:          %s\n", info.Reason)
			fmt.Printf("  KVM:          %s\n", info.KVM)
			if info.QEMU != "" {
				fmt.Printf("  QEMU:         %s\n", info.QEMU)
			}
			fmt.Printf("Guest kernel:   %s\n", info.Kernel)
			fmt.Printf("Guest image:    %s\n", info.Initrd)
			fmt.Printf("Data root:      %s\n", g.dataRoot)
			fmt.Printf("Exec root:      %s\n", g.execRoot)
			fmt.Printf("Host:           %s/%s, %d CPUs\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
			return nil
		},
	}
}

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the vmctl version (and the daemon's, with -H)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.host != "" {
				return remoteVersion(cmd.Context(), g)
			}
			fmt.Printf("vmctl %s (%s, %s/%s)\n", engine.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
