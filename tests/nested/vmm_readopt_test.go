package nested

import (
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test: "TestVMMReadopt",
		Scenario: nested.Scenario{Name: "vmm-readopt", Timeout: 150 * time.Second, Script: prelude + `
mkdir -p /tmp/d /run/v
cd /x
fail() { echo "FAIL: $*"; echo "--- vmctld log"; tail -n 20 /tmp/vmctld.log; exit 1; }
sock=/run/vmctld.sock
V="/x/vmctl -H unix://$sock"
/x/vmctl --data-root /tmp/d --exec-root /run/v load -i busybox.tar >/dev/null || fail "vmctl load"
daemon() {
	rm -f $sock
	/x/vmctld --data-root /tmp/d --exec-root /run/v -H unix://$sock >>/tmp/vmctld.log 2>&1 &
	dpid=$!
	i=0
	until $V version >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 300 ] || fail "vmctld did not serve $sock"
		sleep 0.1
	done
}
# waitfor N: until the ticker's log holds "tick N" (up to 60 s).
waitfor() {
	i=0
	until $V logs ticker 2>/dev/null | grep -qx "tick $1"; do
		i=$((i + 1)); [ $i -lt 600 ] || fail "no tick $1 in the log: $($V logs ticker 2>&1 | tail -n 3)"
		sleep 0.1
	done
}
daemon
$V run -d --name ticker busybox sh -c 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done' >/dev/null || fail "vmctl run -d"
waitfor 2
vmm=$(pidof vmctl-vmm)
[ -n "$vmm" ] || fail "no vmctl-vmm process"
kill -9 $dpid
wait $dpid 2>/dev/null
sleep 2
alive $vmm || fail "the VMM ended with the daemon"
daemon
$V ps | grep ticker | grep -q Up || fail "ticker is not Up after the restart: $($V ps -a 2>&1)"
last=$($V logs ticker | tail -n 1 | cut -d' ' -f2)
waitfor $((last + 5))
# Every line is there, including the one in flight at the crash.
$V logs ticker | awk '$2 != NR - 1 { print "missing tick " NR - 1; exit 1 }' || fail "a gap in the re-adopted log"
$V stop -t 1 ticker >/dev/null || fail "vmctl stop of the re-adopted container"
$V ps -a | grep ticker | grep -q Exited || fail "ticker is not Exited after stop: $($V ps -a 2>&1)"
i=0
while alive $vmm; do i=$((i + 1)); [ $i -lt 100 ] || fail "the adopted VMM still runs after stop"; sleep 0.1; done
$V rm ticker >/dev/null || fail "vmctl rm"
[ -z "$(ls /run/v)" ] || fail "exec root not empty: $(ls /run/v)"
kill $dpid; wait $dpid
echo "re-adopted a vmctl-vmm VM: logs continuous, stop and rm work, nothing left"
`},
		needs: append(vmmNeeds, "bin/vmctl", "bin/guest/initramfs.img", "build/busybox.tar"),
		files: func(root, tmp string) ([]nested.File, error) {
			files, err := vmctlRunFiles(root, tmp)
			if err != nil {
				return nil, err
			}
			vmctld, err := buildStatic(root, tmp, "./cmd/vmctld")
			if err != nil {
				return nil, err
			}
			return append(files, nested.File{Path: "x/vmctld", Source: vmctld, Mode: 0o755}), nil
		},
	})
}

// TestVMMReadopt: inside L1, vmctld runs a container in a vmctl-vmm VM, is
// killed with SIGKILL and started again; the new daemon re-adopts the VM:
// the container shows Up, its log goes on without a missing line, stop ends
// the VM and rm leaves nothing in the exec root.
func TestVMMReadopt(t *testing.T) {
	r := result(t, "vmm-readopt")
	t.Log(r.Output)
}
