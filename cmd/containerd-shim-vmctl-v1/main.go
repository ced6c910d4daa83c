// Command containerd-shim-vmctl-v1 is vmctl's containerd runtime
// (io.containerd.vmctl.v1): a shim v2 that runs each task in its own VM.
// containerd runs it; see engine/shim.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/shim"
)

func main() {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
	guest := engine.GuestDir(filepath.Dir(exe))
	shim.Run(shim.Config{
		Kernel:     envOr("VMCTL_KERNEL", filepath.Join(guest, "vmlinuz")),
		Initrd:     envOr("VMCTL_INITRD", filepath.Join(guest, "initramfs.img")),
		Hypervisor: envOr("VMCTL_HYPERVISOR", "auto"),
		StateRoot:  os.Getenv("VMCTL_SHIM_STATE"),
	})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
