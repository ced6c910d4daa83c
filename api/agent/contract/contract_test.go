package contract

import (
	"strings"
	"testing"
)

// maxSerial is VIRTIO_BLK_ID_BYTES: a longer serial is cut by the device.
const maxSerial = 20

// maxVolumes is the most volumes a container can have (one virtio-mmio
// transport each; engine/services/containersvc enforces it).
const maxVolumes = 16

func TestSerialsFitVirtioBlk(t *testing.T) {
	serials := []string{ImageDiskSerial, WritableDiskSerial, VolumeDiskSerial(maxVolumes - 1)}
	seen := map[string]bool{}
	for _, s := range serials {
		if len(s) > maxSerial {
			t.Errorf("serial %q is %d bytes, virtio-blk keeps %d", s, len(s), maxSerial)
		}
		if seen[s] {
			t.Errorf("serial %q used for two disks", s)
		}
		seen[s] = true
	}
	for i := 0; i < maxVolumes; i++ {
		if s := VolumeDiskSerial(i); s == ImageDiskSerial || s == WritableDiskSerial {
			t.Errorf("VolumeDiskSerial(%d) = %q, the serial of another disk", i, s)
		}
	}
	if got, want := VolumeDiskSerial(3), "vmctl-vol3"; got != want {
		t.Errorf("VolumeDiskSerial(3) = %q, want %q", got, want)
	}
}

// Kernel command-line flags are single words the agent matches bare or
// before "=".
func TestKernelFlagsAreWords(t *testing.T) {
	for _, f := range []string{SelftestFlag, TraceFlag} {
		if f == "" || strings.ContainsAny(f, " \t\n=") {
			t.Errorf("kernel flag %q must be one word without '='", f)
		}
	}
}

// Interface names must be valid Linux interface names (dev_valid_name:
// at most IFNAMSIZ-1 bytes, no '/', ':' or white space) for every NIC a VM
// can have.
func TestInterfaceNames(t *testing.T) {
	if got := InterfaceName(0); got != "eth0" {
		t.Errorf("InterfaceName(0) = %q, want eth0", got)
	}
	for _, i := range []int{0, 1, 99} {
		n := InterfaceName(i)
		if len(n) > 15 || strings.ContainsAny(n, "/: \t\n") || n == "lo" {
			t.Errorf("InterfaceName(%d) = %q is not a valid interface name", i, n)
		}
	}
}
