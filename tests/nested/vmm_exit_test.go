package nested

import (
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test: "TestVMMTripleFault",
		Scenario: nested.Scenario{Name: "vmm-triple-fault", Timeout: 30 * time.Second, Script: `
vmctl-vmm -kernel ` + l1TripleBz + ` -memory 64 -console -
rc=$?
echo "vmctl-vmm exited with $rc; a triple fault is documented as 10"
[ "$rc" = 10 ]
`},
		needs: vmmNeeds,
		files: func(root, tmp string) ([]nested.File, error) {
			return append(vmmFiles(root), nested.File{Path: "nested/" + l1TripleBz, Data: tripleFaultBzImage()}), nil
		},
	})
	register(scenario{
		test: "TestVMMReboot",
		Scenario: nested.Scenario{Name: "vmm-reboot", Timeout: 30 * time.Second, Script: prelude + `
: >/tmp/reboot.console
vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1BusyboxL2 + ` -memory 128 \
	-cmdline "console=ttyS0 reboot=k panic=-1 quiet l2.mode=reboot" -console /tmp/reboot.console &
vmm=$!
# Stream the console while polling it, so that a hung boot shows how far L2 got.
tail -f /tmp/reboot.console 2>/dev/null &
tailpid=$!
until grep -q L2-REBOOTING /tmp/reboot.console 2>/dev/null; do
	if ! alive $vmm; then
		kill $tailpid
		echo "vmctl-vmm ended before L2's init ran"
		exit 1
	fi
	sleep 0.05
done
t0=$(ms)
wait $vmm
rc=$?
took=$(($(ms) - t0))
kill $tailpid
echo "vmctl-vmm exited with $rc ${took} ms after L2 ran reboot -f"
[ "$rc" = 0 ] && [ "$took" -le 5000 ]
`},
		needs: vmmNeeds,
		files: l2BusyboxFiles,
	})
	register(scenario{
		test: "TestVMMClockSMP",
		Scenario: nested.Scenario{Name: "vmm-clock-smp", Timeout: 30 * time.Second, Script: `
: >/tmp/clock.console
vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1BusyboxL2 + ` -memory 128 -vcpus 2 \
	-cmdline "console=ttyS0 reboot=k panic=-1 quiet l2.mode=clock" -console /tmp/clock.console &
vmm=$!
# Stream the console, so that a frozen clock shows how far L2 got.
tail -f /tmp/clock.console 2>/dev/null &
tailpid=$!
wait $vmm
rc=$?
kill $tailpid
line=$(grep L2-CLOCK /tmp/clock.console)
echo "vmctl-vmm exited with $rc; L2 said: $line"
[ "$rc" = 0 ] && echo "$line" | grep -q "cpus=2 "
`},
		needs: vmmNeeds,
		files: l2BusyboxFiles,
	})
}

func l2BusyboxFiles(root, tmp string) ([]nested.File, error) {
	img, err := l2BusyboxImage(tmp)
	return append(vmmFiles(root), nested.File{Path: "nested/" + l1BusyboxL2, Source: img}), err
}

// TestVMMTripleFault: a guest that triple-faults ends vmctl-vmm with the
// documented exit code 10.
func TestVMMTripleFault(t *testing.T) { result(t, "vmm-triple-fault") }

// TestVMMReboot: `reboot -f` in an L2 busybox guest (i8042 reset, reboot=k)
// ends vmctl-vmm with exit code 0 within 5 s.
func TestVMMReboot(t *testing.T) { result(t, "vmm-reboot") }

// TestVMMClockSMP: a 2-vCPU L2 brings up both CPUs and its clock runs:
// `sleep 1` returns (it never did while the PIT and LAPIC timers were
// misrouted), then its reboot ends vmctl-vmm with 0.
func TestVMMClockSMP(t *testing.T) { result(t, "vmm-clock-smp") }
