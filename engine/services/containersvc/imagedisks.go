package containersvc

import (
	"os"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// An image comes as a stack of read-only disks (rootfs.Builder.ImageDisks):
// a flattened base and a disk per layer above it, so a rebuild that changes
// one layer writes only that layer's disk. Every disk is a virtio device,
// and vmctl-vmm attaches at most vmmMaxDisks, so the stack gets what the
// writable disk and the volumes leave, at most maxImageDisks; a container
// with many volumes gets the image as one flattened disk, as before stacks.
const (
	vmmMaxDisks   = 8
	maxImageDisks = 4
)

// imageDiskBudget is how many disks the image of a container with vols
// volumes may take.
func imageDiskBudget(vols int) int {
	return max(1, min(maxImageDisks, vmmMaxDisks-1-vols))
}

// imageSandboxDisks are the container's image disks as the driver attaches
// them, top first, each with its serial.
func imageSandboxDisks(c *containers.Container) []sandbox.Disk {
	var out []sandbox.Disk
	for i, p := range c.Config.Disks() {
		out = append(out, sandbox.Disk{Path: p, Serial: contract.ImageDiskSerialN(i), ReadOnly: true})
	}
	return out
}

// imageStorages tell the agent to stack the image disks, top first.
func imageStorages(c *containers.Container) []agent.Storage {
	var out []agent.Storage
	for i := range c.Config.Disks() {
		out = append(out, agent.Storage{Serial: contract.ImageDiskSerialN(i), FSType: "ext4", ReadOnly: true, Role: contract.RoleImage})
	}
	return out
}

// allRegular reports whether every path is a regular file (and there is one).
func allRegular(paths []string) bool {
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return len(paths) > 0
}
