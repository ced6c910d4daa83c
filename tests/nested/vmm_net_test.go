package nested

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

// The network scenarios: vmctl-vmm in L1 boots the project's guest kernel
// with a busybox L2 whose /init gives eth0 an address and runs netload's
// server (scripts/nested/netload, which also builds that initramfs); L1's
// netload client moves data both ways over TCP, with SHA-256 on both ends,
// and measures request latency. The guest NIC is configured by L2's own
// /init (busybox ip) rather than the agent, so that the scenario proves
// the data path (virtio-net, the tap, a bridge, both kernels' TCP with
// offloads) and depends on nothing else.
//
// L1 plumbing, as the engine does it on a host: a persistent tap with
// vnet headers on a bridge that carries the host side's address.

// Paths inside L1.
const l1NetImage = "guest/l2-net.img"

// netPrelude (L1 loaded the bridge and tun modules at boot) defines
// bridge_tap NAME BRIDGE ADDR [MTU]: a persistent tap on a new bridge
// with the host side's address.
var netPrelude = prelude + `
fail() { echo "FAIL: $*"; exit 1; }
bridge_tap() {
	netload mktap ${4:+-mtu $4} "$1" || fail "mktap $1"
	brctl addbr "$2" || fail "addbr $2"
	brctl addif "$2" "$1" || fail "addif $2 $1"
	ip link set "$1" up
	ip link set "$2" up
	[ -z "$4" ] || ip link set "$2" mtu "$4"
	ip addr add "$3" dev "$2" || fail "address $3 on $2"
}
`

// netRun boots vmctl-vmm on tap with the net L2 at guest address addr
// (the host side is .1), moves 32 MiB each way with verification, measures
// latency, and ends the guest. vmmArgs and cmdline are extra flags and
// kernel arguments.
//
// A transfer that fails is tried once more in a new VM, after the first
// VM's state (its queues and interrupt status, logged as it stops) is in
// the output: under TCG's emulation of SVM an L2 guest sometimes stops or
// triple-faults under load, QEMU's as well as ours (an open issue); a
// second failure fails the test.
func netRun(tap, addr, vmmArgs, cmdline string) string {
	ip := strings.Split(addr, "/")[0]
	return `
net_attempt() {
	vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1NetImage + ` -memory 256 -tap ` + tap + ` ` + vmmArgs + ` \
		-cmdline "console=ttyS0 reboot=k panic=-1 quiet netload.addr=` + addr + ` ` + cmdline + `" -console - &
	vmm=$!
	abort() { kill $vmm 2>/dev/null; wait $vmm; echo "ATTEMPT-FAILED: $*"; }
	netload wait -to ` + ip + `:5201 -timeout 90s || { abort "the guest never answered on ` + ip + `"; return 1; }
	netload send -to ` + ip + `:5201 -bytes 32M -label ` + tap + ` || { abort "send"; return 1; }
	netload recv -to ` + ip + `:5201 -bytes 32M -label ` + tap + ` || { abort "recv"; return 1; }
	netload rr -to ` + ip + `:5201 -n 500 -label ` + tap + ` || { abort "rr"; return 1; }
	netload quit -to ` + ip + `:5201 || { abort "quit"; return 1; }
	t0=$(ms)
	wait $vmm
	rc=$?
	echo "vmctl-vmm exited with $rc $(($(ms) - t0)) ms after QUIT"
	[ "$rc" = 0 ]
}
if ! net_attempt; then
	echo "RETRY: once more in a new VM"
	net_attempt || fail "the transfer failed twice"
fi
`
}

func init() {
	files := func(root, tmp string) ([]nested.File, error) {
		load, err := buildStatic(root, tmp, "./scripts/nested/netload")
		if err != nil {
			return nil, err
		}
		img := filepath.Join(tmp, "l2-net.img")
		if _, err := os.Stat(img); err != nil {
			if out, err := exec.Command(load, "l2image", "-o", img).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("netload l2image: %w: %s", err, out)
			}
		}
		return append(vmmFiles(root),
			nested.File{Path: "nested/bin/netload", Source: load},
			nested.File{Path: "nested/" + l1NetImage, Source: img}), nil
	}
	register(scenario{
		test: "TestVMMNet",
		Scenario: nested.Scenario{Name: "vmm-net", Timeout: 420 * time.Second, Script: netPrelude + `
bridge_tap vt0 br0 10.77.0.1/24
# A tap that does not exist: one line, exit code 1 (setup failure).
vmctl-vmm -kernel ` + l1Kernel + ` -tap vt-missing -console '' 2>/tmp/missing.err
rc=$?
echo "missing tap: exit $rc, $(wc -l </tmp/missing.err) line(s): $(cat /tmp/missing.err)"
[ "$rc" = 1 ] && [ "$(wc -l </tmp/missing.err)" = 1 ] || fail "a missing tap: want exit 1 and one line"
` + netRun("vt0", "10.77.0.2/24", "-mac 02:00:00:00:00:02", "")},
		needs: vmmNeeds,
		files: files,
	})
	register(scenario{
		test: "TestVMMNetJumbo",
		Scenario: nested.Scenario{Name: "vmm-net-jumbo", Timeout: 420 * time.Second, Script: netPrelude + `
bridge_tap vt1 br1 10.78.0.1/24 9000
` + netRun("vt1", "10.78.0.2/24", "", "virtio_net.csum=0 virtio_net.gso=0")},
		needs: vmmNeeds,
		files: files,
	})
}

// netOutput is what a network scenario printed that the tests check.
type netOutput struct {
	features string // the guest's negotiated feature bits, bit 0 first
	mtu      int
	netload  map[string]map[string]string // "send", "recv", "rr" -> key -> value
	vmm      vmmNetStats
	guest    map[string]int // the guest's eth0 counters at the end
}

type vmmNetStats struct {
	txFrames, txBytes, rxFrames, rxBytes int64
	drops                                string // the counters line after the totals
	found                                bool
}

var (
	l2NetUp    = regexp.MustCompile(`L2-NET up features=([01]{64}) mtu=(\d+)`)
	l2NetDone  = regexp.MustCompile(`L2-NET done (.*)`)
	netloadRe  = regexp.MustCompile(`NETLOAD (send|recv|rr) (.*)`)
	vmmCounter = regexp.MustCompile(`stats="tx (\d+) frames (\d+) bytes, rx (\d+) frames (\d+) bytes([^"]*)"`)
)

func parseNet(t *testing.T, out string) netOutput {
	t.Helper()
	o := netOutput{netload: map[string]map[string]string{}, guest: map[string]int{}}
	if m := l2NetUp.FindStringSubmatch(out); m != nil {
		o.features = m[1]
		o.mtu, _ = strconv.Atoi(m[2])
	}
	for _, m := range netloadRe.FindAllStringSubmatch(out, -1) {
		kv := map[string]string{}
		for _, f := range strings.Fields(m[2]) {
			k, v, _ := strings.Cut(f, "=")
			kv[k] = v
		}
		o.netload[m[1]] = kv
	}
	// The last VM's counters: a retried transfer's first VM logged some too.
	if all := vmmCounter.FindAllStringSubmatch(out, -1); len(all) > 0 {
		m := all[len(all)-1]
		n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
		o.vmm = vmmNetStats{n(m[1]), n(m[2]), n(m[3]), n(m[4]), strings.TrimSpace(m[5]), true}
	}
	if m := l2NetDone.FindStringSubmatch(out); m != nil {
		for _, f := range strings.Fields(m[1]) {
			k, v, _ := strings.Cut(f, "=")
			o.guest[k], _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return o
}

// Feature bits the guest must have negotiated (virtio 1.2, 5.1.3).
var wantNetFeatures = map[int]string{0: "CSUM", 1: "GUEST_CSUM", 3: "MTU", 5: "MAC", 7: "GUEST_TSO4",
	11: "HOST_TSO4", 15: "MRG_RXBUF", 16: "STATUS", 29: "EVENT_IDX", 32: "VERSION_1"}

// checkNet checks what both network scenarios promise: the guest
// negotiated the offloads, 32 MiB went each way intact, the VMM dropped
// nothing, and the guest counted no bad frame.
func checkNet(t *testing.T, o netOutput, wantMTU int) {
	t.Helper()
	if o.features == "" {
		t.Fatal("the guest did not report its NIC (no L2-NET up line)")
	}
	for bit, name := range wantNetFeatures {
		if o.features[bit] != '1' {
			t.Errorf("the guest did not negotiate %s (features %s)", name, o.features)
		}
	}
	if o.mtu != wantMTU {
		t.Errorf("guest eth0 MTU %d, want %d", o.mtu, wantMTU)
	}
	for _, dir := range []string{"send", "recv"} {
		r := o.netload[dir]
		if r["verified"] != "yes" || r["bytes"] != strconv.Itoa(32<<20) {
			t.Errorf("netload %s: %v, want 32 MiB verified", dir, r)
		}
		t.Logf("L1 %s guest: %s Mbit/s", map[string]string{"send": "to", "recv": "from"}[dir], r["mbps"])
	}
	if rr := o.netload["rr"]; rr == nil {
		t.Error("no request/response result")
	} else {
		// L1's clock may be jiffies (4 ms steps): the mean is what counts.
		t.Logf("request/response (64 bytes): mean %s µs (p50 %s µs, p99 %s µs)", rr["mean_us"], rr["p50_us"], rr["p99_us"])
	}
	if !o.vmm.found {
		t.Fatal("vmctl-vmm logged no virtio-net counters")
	}
	t.Logf("vmctl-vmm counters: tx %d frames %d bytes, rx %d frames %d bytes %s",
		o.vmm.txFrames, o.vmm.txBytes, o.vmm.rxFrames, o.vmm.rxBytes, o.vmm.drops)
	if o.vmm.drops != "" {
		t.Errorf("vmctl-vmm dropped frames: %s", o.vmm.drops)
	}
	if o.vmm.txBytes < 32<<20 || o.vmm.rxBytes < 32<<20 {
		t.Errorf("vmctl-vmm moved %d bytes out, %d in; want at least the 32 MiB each way", o.vmm.txBytes, o.vmm.rxBytes)
	}
	for _, k := range []string{"rx_errors", "rx_length_errors", "tx_errors", "tx_dropped"} {
		if v, ok := o.guest[k]; !ok || v != 0 {
			t.Errorf("guest eth0 %s = %d (reported: %v), want 0", k, v, ok)
		}
	}
}

// TestVMMNet: the guest negotiates checksum and segmentation offload both
// ways and mergeable buffers; TCP between L1 and the guest moves 32 MiB
// each way intact, in frames larger than the MTU both ways (segmentation
// offload on, the tap's offloads matching the guest's); a missing tap is
// one line and exit code 1.
func TestVMMNet(t *testing.T) {
	r := result(t, "vmm-net")
	for _, line := range strings.Split(r.Output, "\n") {
		if strings.HasPrefix(line, "missing tap:") {
			t.Log(line)
		}
	}
	o := parseNet(t, r.Output)
	checkNet(t, o, 1500)
	// Segmentation offload in use both ways: the average frame is larger
	// than an Ethernet frame can be.
	if o.vmm.txFrames == 0 || o.vmm.txBytes/o.vmm.txFrames <= 1514 {
		t.Errorf("guest-to-host frames average %d bytes: TSO from the guest was not used", o.vmm.txBytes/max(o.vmm.txFrames, 1))
	}
	if o.vmm.rxFrames == 0 || o.vmm.rxBytes/o.vmm.rxFrames <= 1514 {
		t.Errorf("host-to-guest frames average %d bytes: TSO to the guest was not used", o.vmm.rxBytes/max(o.vmm.rxFrames, 1))
	}
}

// TestVMMNetJumbo: with no -mtu, the guest gets the tap's MTU of 9000
// through VIRTIO_NET_F_MTU; the guest turns its own transmit offloads
// off (virtio_net.csum=0 gso=0), so it sends fully checksummed jumbo
// frames while still receiving segmentation-offloaded ones; 32 MiB each
// way intact.
func TestVMMNetJumbo(t *testing.T) {
	r := result(t, "vmm-net-jumbo")
	o := parseNet(t, r.Output)
	checkNet(t, o, 9000)
	if o.vmm.txFrames == 0 || o.vmm.txBytes/o.vmm.txFrames <= 1514 {
		t.Errorf("guest-to-host frames average %d bytes: jumbo frames were not used", o.vmm.txBytes/max(o.vmm.txFrames, 1))
	}
}
