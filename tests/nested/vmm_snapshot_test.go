package nested

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	disk := func(image, rw string) string {
		return `-disk ` + image + `,serial=` + contract.ImageDiskSerial + `,ro -disk ` + rw + `,serial=` + contract.WritableDiskSerial
	}
	register(scenario{
		test: "TestVMMSnapshot",
		Scenario: nested.Scenario{Name: "vmm-snapshot", Timeout: 150 * time.Second, Script: prelude + `
rel=$(cat ` + l1Release + `)
fail() { echo "FAIL: $*"; for f in /tmp/snap-*.log; do echo "--- $f"; tail -n 20 $f; done; exit 1; }
mkdir -p /tmp/snap
cp ` + l1WritableDisk + ` /tmp/snap-rw-a.ext4
cp ` + l1WritableDisk + ` /tmp/snap-rw-b.ext4
# The template: boots to the agent's readiness, then is saved and ends.
vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1Image + ` -memory 256 -vsock-uds /tmp/tpl.vsock -control /tmp/tpl.ctl \
	-save-to /tmp/snap ` + disk(l1ImageDisk, l1WritableDisk) + ` -console /tmp/snap-template-console.log 2>/tmp/snap-template.log &
tpl=$!
agentcheck -uds /tmp/tpl.vsock -timeout 60s -release "$rel" -save /tmp/tpl.ctl > /tmp/snap-template-check.log 2>&1 || fail "template: $(cat /tmp/snap-template-check.log)"
cat /tmp/snap-template-check.log
wait $tpl
rc=$?
[ "$rc" = 0 ] || fail "the saved template's vmctl-vmm exited with $rc"
echo "snapshot files: $(du -k /tmp/snap/vm.mem | cut -f1) KiB of RAM in use, state $(stat -c %s /tmp/snap/vm.state) bytes"
# Two VMs restored from the one snapshot, side by side, each on its own
# writable disk and vsock socket.
for v in a b; do
	vmctl-vmm -restore /tmp/snap -memory 256 -vsock-uds /tmp/$v.vsock ` + disk(l1ImageDisk, "/tmp/snap-rw-$v.ext4") + ` \
		-console /tmp/snap-$v-console.log 2>/tmp/snap-$v.log &
	eval vmm_$v=$!
done
for v in a b; do
	agentcheck -uds /tmp/$v.vsock -timeout 60s -release "$rel" -restored -container "uname -r" -shutdown > /tmp/snap-$v-check.log 2>&1 &
	eval check_$v=$!
done
for v in a b; do
	eval wait \$check_$v || fail "restored VM $v: $(cat /tmp/snap-$v-check.log)"
	sed "s/^agentcheck: /agentcheck $v: /" /tmp/snap-$v-check.log
done
for v in a b; do
	eval wait \$vmm_$v
	rc=$?
	[ "$rc" = 0 ] || fail "restored VM $v's vmctl-vmm exited with $rc"
done
echo "two VMs restored from one snapshot ran uname -r side by side: $rel"
`},
		needs: append(vmmNeeds, "bin/guest/initramfs.img", "bin/guest/kernel.release"),
		files: containerFiles,
	})
}

// TestVMMSnapshot: vmctl-vmm saves a guest booted to the agent's readiness
// (vCPU, interrupt controller, device and RAM state) and two VMs restored
// from the one snapshot run side by side: each answers Health and
// Restored, runs `uname -r` in a container on its own writable disk and
// prints the project kernel's release.
func TestVMMSnapshot(t *testing.T) {
	r := result(t, "vmm-snapshot")
	health := regexp.MustCompile(`^agentcheck( [ab])?: health after ([0-9.]+)s`)
	var boot float64
	var restores []float64
	for _, line := range strings.Split(r.Output, "\n") {
		if strings.HasPrefix(line, "agentcheck") || strings.HasPrefix(line, "snapshot files") {
			t.Log(strings.TrimSpace(line))
		}
		if m := health.FindStringSubmatch(line); m != nil {
			s, _ := strconv.ParseFloat(m[2], 64)
			if m[1] == "" {
				boot = s
			} else {
				restores = append(restores, s)
			}
		}
	}
	if len(restores) != 2 || boot == 0 {
		t.Fatalf("want the template's and two restored VMs' health times in the output, got %v and %v", boot, restores)
	}
	t.Logf("to agent Health: cold boot %.2fs, restores %.2fs and %.2fs (side by side)", boot, restores[0], restores[1])
}

func init() {
	register(scenario{
		test: "TestVMMEngineSnapshot",
		Scenario: nested.Scenario{Name: "vmm-engine-snapshot", Timeout: 210 * time.Second, Script: prelude + `
mkdir -p /tmp/es /run/es
cd /x
V="/x/vmctl --data-root /tmp/es --exec-root /run/es"
$V load -i busybox.tar >/dev/null || { echo "vmctl load failed"; exit 1; }
rel=$(cat /nested/` + l1Release + `)
# run FLAGS: one vmctl run of uname -r under vmctl-vmm, timed.
run() {
	t0=$(ms)
	out=$($V run --hypervisor kvm --rm --network none "$@" busybox uname -r 2>&1)
	rc=$?
	took=$(($(ms) - t0))
	[ "$rc" = 0 ] && [ "$(echo "$out" | tail -n 1)" = "$rel" ] || { echo "FAIL: vmctl run $* exited with $rc: $out"; exit 1; }
}
run --cold-boot
echo "cold boot run: ${took} ms"
run
echo "first run (saves the template): ${took} ms"
ls /tmp/es/snapshots/kvm-1cpu-*-2disk-0nic/state >/dev/null 2>&1 || { echo "FAIL: no saved kvm state: $(ls -R /tmp/es/snapshots 2>&1)"; exit 1; }
for i in 1 2; do
	run
	echo "restored run $i: ${took} ms"
done
# With a NIC: the template's is on a detached tap; each restored VM's on
# its own tap on the default network, with its own address and MAC.
mkdir -p /tmp/www-es && echo page-es >/tmp/www-es/index.html
httpd -p 8001 -h /tmp/www-es || { echo "FAIL: httpd in L1"; exit 1; }
macs=""
for i in 1 2 3; do
	t0=$(ms)
	out=$($V run --hypervisor kvm --rm busybox sh -c \
		'ip -4 -o addr show eth0; cat /sys/class/net/eth0/address; timeout 20 wget -q -O- http://172.30.0.1:8001/ || exit 1' 2>&1)
	rc=$?
	took=$(($(ms) - t0))
	mac=$(echo "$out" | grep -E '^([0-9a-f]{2}:){5}[0-9a-f]{2}$')
	[ "$rc" = 0 ] && echo "$out" | grep -q "inet 172\.30\." && [ "$(echo "$out" | tail -n 1)" = page-es ] ||
		{ echo "FAIL: networked run $i exited with $rc: $out"; exit 1; }
	[ "$mac" != 02:76:6d:74:00:00 ] || { echo "FAIL: networked run $i kept the template's MAC"; exit 1; }
	macs="$macs $mac"
	echo "networked run $i: ${took} ms, MAC $mac"
done
ls /tmp/es/snapshots/kvm-1cpu-*-2disk-1nic/state >/dev/null 2>&1 || { echo "FAIL: no saved kvm state with a NIC: $(ls /tmp/es/snapshots)"; exit 1; }
$V info 2>/dev/null | grep -i snapshots
[ -z "$(ls /run/es 2>/dev/null)" ] || { echo "FAIL: exec root not empty: $(ls /run/es)"; exit 1; }
echo "vmctl run under vmctl-vmm from a saved guest printed $rel"
`},
		needs: append(vmmNeeds, "bin/vmctl", "bin/guest/initramfs.img", "bin/guest/kernel.release", "build/busybox.tar"),
		files: func(root, tmp string) ([]nested.File, error) {
			files, err := vmctlRunFiles(root, tmp)
			if err != nil {
				return nil, err
			}
			return append(files, nested.File{Path: "nested/" + l1Release, Source: filepath.Join(root, "bin/guest/kernel.release")}), nil
		},
	})
}

// TestVMMEngineSnapshot: the engine starts vmctl-vmm VMs from a saved
// guest: the first `vmctl run --network none` saves a template of its
// shape in the data root, later ones restore it, and each prints the
// guest kernel's release from its container; on the default network, the
// restored containers have their own address and MAC and reach a server
// on the host (L1).
func TestVMMEngineSnapshot(t *testing.T) {
	r := result(t, "vmm-engine-snapshot")
	t.Log(r.Output)
}
