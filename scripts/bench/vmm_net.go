package main

// Section vmm-net: TCP throughput both ways and request latency between a
// guest and its host, for vmctl-vmm's virtio-net next to QEMU's, inside
// the nested L1 of internal/nested (the only place on these hosts where
// KVM runs Linux). Three guests run at once in one L1, each on a tap of
// one bridge that carries L1's address: QEMU with its own virtio-net
// (userspace, the like-for-like peer), QEMU with vhost-net (the host
// kernel's virtio-net, shown for reference) and vmctl-vmm. They get the
// same guest kernel and the same busybox initramfs with
// scripts/nested/netload as the server; netload in L1 is the client. In
// each round every guest is measured in turn (the order rotates), and
// the table shows the median of the rounds.
//
// A transfer is one TCP stream for a fixed time, without hashing (the
// nested scenarios verify integrity; hashing here would measure the CPU);
// the latency is the mean time of 64-byte request/response exchanges on
// one connection (L1's clock is jiffies, 4 ms steps, under TCG: single
// exchanges cannot be timed; giving L1 the TSC with tsc=reliable slowed
// every guest down tenfold, so the harness's default stays). The VMM's
// CPU time per MiB moved is its process's user and system time, the
// guest's included (vhost-net's kernel thread is not in QEMU's).
// Everything runs under TCG's emulation of SVM, so absolute numbers are
// small and a busy host moves them a lot; the ratios are the result.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/internal/nested"
)

func init() { sections = append(sections, section{"vmm-net", runNet}) }

// netGuest is one measured guest in L1.
type netGuest struct {
	label, tap, addr, mac string
}

var netGuests = []netGuest{
	{"qemu", "vtq", "10.90.0.2", "02:00:00:00:90:02"},
	{"qemu-vhost", "vth", "10.90.0.3", "02:00:00:00:90:03"},
	{"vmctl-vmm", "vtv", "10.90.0.4", "02:00:00:00:90:04"},
}

const (
	netTransfer = 3 * time.Second
	netRRCount  = 500
)

// netScript is the L1 side: plumbing, three guests, n rounds, shutdown.
func netScript(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
fail() { echo "NETBENCH-FAIL $*"; exit 1; }
brctl addbr br0 || fail addbr
ip link set br0 up
ip addr add 10.90.0.1/24 dev br0
for t in %s; do
	netload mktap $t || fail "mktap $t"
	brctl addif br0 $t
	ip link set $t up
done
append="console=ttyS0 panic=-1 quiet netload.addr="
# cpu PID: the process's user+system time so far, in clock ticks.
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
# measure LABEL PID DIR ADDR: one transfer, then the CPU time the VMM
# process spent on it (vhost-net's kernel thread is not in it).
measure() {
	c0=$(cpu $2)
	netload $3 -to $4 -duration %s -verify=false -label $1 2>/tmp/netload.err ||
		echo "NETBENCH-FAIL vm=$1 $3: $(tail -n 1 /tmp/netload.err)"
	echo "NETBENCH cpu label=$1 dir=$3 ticks=$(($(cpu $2) - c0)) hz=$(getconf CLK_TCK 2>/dev/null || echo 100)"
}
`, strings.Join([]string{netGuests[0].tap, netGuests[1].tap, netGuests[2].tap}, " "), netTransfer)
	for _, g := range netGuests {
		switch g.label {
		case "vmctl-vmm":
			fmt.Fprintf(&b, `vmctl-vmm -kernel guest/vmlinuz -initrd guest/l2-net.img -memory %d -tap %s -mac %s \
	-cmdline "${append}%s/24 reboot=k" -console /tmp/%s.console 2>/tmp/%s.log &
`, memGuestMiB, g.tap, g.mac, g.addr, g.label, g.label)
		default:
			vhost := "off"
			if g.label == "qemu-vhost" {
				vhost = "on"
			}
			// The QEMU driver's machine (engine/sandbox/qemu) on L1's KVM.
			fmt.Fprintf(&b, `qemu-system-x86_64 -M microvm,acpi=off -enable-kvm -cpu host -m %d -nodefaults -no-user-config \
	-nographic -no-reboot -serial file:/tmp/%s.console -kernel guest/vmlinuz -initrd guest/l2-net.img \
	-append "${append}%s/24 reboot=t" -global virtio-mmio.force-legacy=false \
	-netdev tap,id=n0,ifname=%s,script=no,downscript=no,vhost=%s -device virtio-net-device,netdev=n0,mac=%s \
	</dev/null >/tmp/%s.log 2>&1 &
`, memGuestMiB, g.label, g.addr, g.tap, vhost, g.mac, g.label)
		}
		fmt.Fprintf(&b, "pid_%s=$!\n", strings.ReplaceAll(g.label, "-", "_"))
	}
	for _, g := range netGuests {
		v := strings.ReplaceAll(g.label, "-", "_")
		fmt.Fprintf(&b, `if netload wait -to %s:5201 -timeout 120s; then ok_%s=1; else
	echo "NETBENCH-FAIL vm=%s never answered: $(tail -n 3 /tmp/%s.log | tr '\n' ' ') console: $(tail -n 3 /tmp/%s.console | tr '\n' ' ')"
fi
`, g.addr, v, g.label, g.label, g.label)
	}
	for round := range n {
		for i := range netGuests {
			g := netGuests[(round+i)%len(netGuests)]
			v := strings.ReplaceAll(g.label, "-", "_")
			to := g.addr + ":5201"
			fmt.Fprintf(&b, `if [ -n "$ok_%s" ]; then
	measure %s $pid_%s send %s
	measure %s $pid_%s recv %s
	netload rr -to %s -n %d -label %s 2>/tmp/netload.err || echo "NETBENCH-FAIL vm=%s rr: $(tail -n 1 /tmp/netload.err)"
fi
`, v, g.label, v, to, g.label, v, to, to, netRRCount, g.label, g.label)
		}
	}
	for _, g := range netGuests {
		fmt.Fprintf(&b, "netload quit -to %s:5201 || kill $pid_%s\n", g.addr, strings.ReplaceAll(g.label, "-", "_"))
	}
	b.WriteString("echo VMM-CONSOLE-TAIL; tail -n 12 /tmp/vmctl-vmm.console | sed 's/^/VMM-CONSOLE /'\n")
	b.WriteString("wait\ngrep -hE 'virtio-net counters|raised again|queues at reset|interrupt status at stop' /tmp/vmctl-vmm.log\n")
	return b.String()
}

func runNet(n int) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	vmm := filepath.Join(root, "bin/vmctl-vmm")
	kernel := filepath.Join(root, "bin/guest/vmlinuz")
	for _, f := range []string{vmm, kernel} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s missing: run `make build kernel`", f)
		}
	}
	qemuBin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64 is not installed (scripts/install-deps.sh)")
	}
	k, err := nested.FindKernel("")
	if err != nil {
		return fmt.Errorf("%w (run scripts/nested/prepare.sh)", err)
	}
	tmp, err := os.MkdirTemp("", "vmctl-bench-net-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	load := filepath.Join(tmp, "netload")
	if err := buildStatic(load, "./scripts/nested/netload"); err != nil {
		return err
	}
	img := filepath.Join(tmp, "l2-net.img")
	if out, err := exec.Command(load, "l2image", "-o", img).CombinedOutput(); err != nil {
		return fmt.Errorf("netload l2image: %w: %s", err, out)
	}
	files, err := nested.HostExecutable(qemuBin, "usr/bin/qemu-system-x86_64")
	if err != nil {
		return err
	}
	files = append(append(files, nested.QEMUFirmware()...),
		nested.File{Path: "nested/bin/netload", Source: load},
		nested.File{Path: "nested/bin/vmctl-vmm", Source: vmm},
		nested.File{Path: "nested/guest/vmlinuz", Source: kernel},
		nested.File{Path: "nested/guest/l2-net.img", Source: img},
	)
	// L1 loaded the bridge, tun and vhost-net modules at boot.
	// Boots take up to a minute on a busy host; each round is two
	// transfers and the latency run per guest.
	perRound := time.Duration(len(netGuests)) * (2*netTransfer + 40*time.Second)
	sc := nested.Scenario{Name: "vmm-net-bench", Timeout: 3*time.Minute + time.Duration(n)*perRound, Script: netScript(n)}
	rep, err := bootL1(nested.Config{Kernel: k, Scenarios: []nested.Scenario{sc}, Files: files})
	if err != nil {
		return fmt.Errorf("nested L1: %w\n%s", err, tailLines(rep.Console, 40))
	}
	r, ok := rep.Result(sc.Name)
	if !ok {
		return fmt.Errorf("L1 reported no result for the network bench\n%s", tailLines(rep.Console, 40))
	}
	res, failures := parseNetBench(r.Output)
	if len(res["vmctl-vmm"].send) == 0 || len(res["qemu"].send) == 0 {
		return fmt.Errorf("no measurements of vmctl-vmm or QEMU: %v\n%s", failures, tailLines(r.Output, 40))
	}
	fmt.Printf("\nNetwork guest <-> L1 inside the nested L1 (KVM on emulated SVM): one TCP stream for %v each way, "+
		"%d 64-byte requests; tap on a bridge; same kernel and initramfs; median of %d rounds, interleaved\n\n",
		netTransfer, netRRCount, n)
	fmt.Printf("| %-40s | %12s | %14s | %12s | %16s |\n", "", "QEMU", "QEMU vhost-net", "vmctl-vmm", "vmctl-vmm / QEMU")
	fmt.Printf("|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 42), strings.Repeat("-", 14), strings.Repeat("-", 16), strings.Repeat("-", 14), strings.Repeat("-", 18))
	row := func(name, unit string, pick func(netBenchResult) []float64) {
		cell := func(label string) (string, float64) {
			v := pick(res[label])
			if len(v) == 0 {
				return "failed", 0
			}
			m := medianFloat(v)
			return fmt.Sprintf("%.0f %s", m, unit), m
		}
		q, qv := cell("qemu")
		h, _ := cell("qemu-vhost")
		o, ov := cell("vmctl-vmm")
		ratio := "-"
		if qv > 0 && ov > 0 {
			ratio = fmt.Sprintf("%.2fx", ov/qv)
		}
		fmt.Printf("| %-40s | %12s | %14s | %12s | %16s |\n", name, q, h, o, ratio)
	}
	row("L1 -> guest throughput (higher: better)", "Mbit/s", func(r netBenchResult) []float64 { return r.send })
	row("guest -> L1 throughput (higher: better)", "Mbit/s", func(r netBenchResult) []float64 { return r.recv })
	row("VMM CPU per MiB L1 -> guest", "ms", func(r netBenchResult) []float64 { return r.cpuSend })
	row("VMM CPU per MiB guest -> L1", "ms", func(r netBenchResult) []float64 { return r.cpuRecv })
	row("request/response mean (lower: better)", "µs", func(r netBenchResult) []float64 { return r.mean })
	// A guest that stops answering (an L2 guest that hangs or dies under
	// TCG's emulated SVM, whichever VMM runs it) fails every later
	// transfer: how many each completed shows which ones did.
	done := func(label string) string {
		r := res[label]
		return fmt.Sprintf("%d of %d", len(r.send)+len(r.recv), 2*n)
	}
	fmt.Printf("| %-40s | %12s | %14s | %12s | %16s |\n", "transfers completed", done("qemu"), done("qemu-vhost"), done("vmctl-vmm"), "-")
	fmt.Println()
	if c := regexp.MustCompile(`stats="([^"]*)"`).FindStringSubmatch(r.Output); c != nil {
		fmt.Printf("vmctl-vmm's virtio-net counters at the end: %s\n\n", c[1])
	}
	if len(failures) > 0 {
		// The state the VMM's queues and interrupt were left in, for the
		// diagnosis of a failed run.
		for _, l := range regexp.MustCompile(`(?m)^.*(queues at reset|interrupt status at stop|^VMM-CONSOLE |NETBENCH cpu label=vmctl-vmm).*$`).FindAllString(r.Output, -1) {
			fmt.Println(l)
		}
	}
	for _, c := range regexp.MustCompile(`raised again" device=(\S+) count=(\d+)`).FindAllStringSubmatch(r.Output, -1) {
		fmt.Printf("vmctl-vmm raised %s interrupts of %s again that the guest had not acknowledged after %v\n\n", c[2], c[1], mmio.ReraiseAfter)
	}
	return netFailures(failures)
}

// netFailures is the section's verdict on its failed runs. A failed run of
// vmctl-vmm fails the section. A peer's guest that stopped answering (QEMU's
// L2 guests do under TCG's emulated SVM, with or without vhost-net) is
// reported, by its first failure, and its row shows how many transfers it
// completed; the rest of the table stands.
func netFailures(failures []string) error {
	var ours []string
	seen := map[string]bool{}
	for _, f := range failures {
		vm, _, _ := strings.Cut(f, " ")
		if vm == "vm=vmctl-vmm" {
			ours = append(ours, f)
		} else if !seen[vm] {
			seen[vm] = true
			fmt.Printf("a peer's guest failed (%s), first: %s\n", strings.TrimPrefix(vm, "vm="), f)
		}
	}
	if len(ours) > 0 {
		return fmt.Errorf("vmctl-vmm's runs failed: %s", strings.Join(ours, "; "))
	}
	return nil
}

type netBenchResult struct {
	send, recv, mean []float64
	// cpuSend, cpuRecv: the VMM process's CPU time per MiB moved, in ms.
	cpuSend, cpuRecv []float64
}

var (
	netloadLine = regexp.MustCompile(`NETLOAD (send|recv|rr) (.*)`)
	cpuLine     = regexp.MustCompile(`NETBENCH cpu label=(\S+) dir=(send|recv) ticks=(\d+) hz=(\d+)`)
)

// parseNetBench collects the NETLOAD lines by label, and the failures.
func parseNetBench(out string) (map[string]netBenchResult, []string) {
	res := map[string]netBenchResult{}
	var failures []string
	lastBytes := map[string]float64{} // label/dir -> bytes of its last transfer
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "NETBENCH-FAIL "); ok {
			failures = append(failures, strings.TrimSpace(rest))
			continue
		}
		if m := cpuLine.FindStringSubmatch(line); m != nil {
			ticks, _ := strconv.ParseFloat(m[3], 64)
			hz, _ := strconv.ParseFloat(m[4], 64)
			mib := lastBytes[m[1]+"/"+m[2]] / (1 << 20)
			if hz > 0 && mib > 0 {
				r := res[m[1]]
				perMiB := ticks * 1000 / hz / mib
				if m[2] == "send" {
					r.cpuSend = append(r.cpuSend, perMiB)
				} else {
					r.cpuRecv = append(r.cpuRecv, perMiB)
				}
				res[m[1]] = r
			}
			continue
		}
		m := netloadLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(m[2]) {
			k, v, _ := strings.Cut(f, "=")
			kv[k] = v
		}
		num := func(k string) float64 { v, _ := strconv.ParseFloat(kv[k], 64); return v }
		r := res[kv["label"]]
		switch m[1] {
		case "send":
			r.send = append(r.send, num("mbps"))
			lastBytes[kv["label"]+"/send"] = num("bytes")
		case "recv":
			r.recv = append(r.recv, num("mbps"))
			lastBytes[kv["label"]+"/recv"] = num("bytes")
		case "rr":
			r.mean = append(r.mean, num("mean_us"))
		}
		res[kv["label"]] = r
	}
	return res, failures
}

func medianFloat(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
