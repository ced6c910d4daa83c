package nested

import (
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test: "TestVMMDiskPersists",
		Scenario: nested.Scenario{Name: "vmm-disk", Timeout: 60 * time.Second, Script: `
dd if=/dev/zero of=/tmp/disk.img bs=1M count=4 2>/dev/null
tok=$(cut -c1-8 /proc/sys/kernel/random/uuid)
# The console is streamed (tee) so that a hung boot still shows how far L2 got.
set -o pipefail
boot() {
	vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1BusyboxL2 + ` -memory 128 -disk /tmp/disk.img,serial=data \
		-cmdline "console=ttyS0 reboot=k panic=-1 quiet $1" -console - 2>&1 | tee /tmp/boot.out
}
boot "l2.mode=write l2.token=$tok"
rc=$?
if [ "$rc" != 0 ] || ! grep -q "L2-WROTE $tok" /tmp/boot.out; then
	echo "first boot did not write the token (vmctl-vmm exit $rc)"
	exit 1
fi
boot "l2.mode=read"
rc=$?
if [ "$rc" != 0 ] || ! grep -q "L2-READ $tok" /tmp/boot.out; then
	echo "second boot did not read back $tok (vmctl-vmm exit $rc)"
	exit 1
fi
echo "token $tok written in one boot was read back in the next"
`},
		needs: vmmNeeds,
		files: l2BusyboxFiles,
	})
}

// TestVMMDiskPersists: a virtio-blk write in one boot is read back in the
// next (the VMM's file-backed disk, flush on reboot).
func TestVMMDiskPersists(t *testing.T) { result(t, "vmm-disk") }
