package main

// Section net: a container's network next to a plain one, through vmctld
// and the QEMU driver (TCG here), all inside the bench's own namespace:
//
//	outside  a namespace of the bench's, on a veth to the bench's
//	         namespace (198.51.100.2; the bench's side is .1): the host
//	         beyond the bridge, running the netload server;
//	veth     a namespace on a veth of its own, routed to the outside
//	         (10.88.0.2): what a runc container on a bridge-less veth is,
//	         the baseline without a VM;
//	vmctl    a container on vmctld's default network (vmctl0), reaching
//	         the outside through NAT.
//
// Table 1, container <-> outside: TCP throughput both ways and 64-byte
// request/response latency, netload in the container (its own timing,
// so the container's boot is not counted) against netload in the veth
// namespace. Table 2, published ports: request/response latency to a
// container's server through its published port against straight to its
// address, from the host (127.0.0.1, the userland proxy) and from the
// outside (the host's address, DNAT); then the same with vmctld restarted
// with --userland-proxy=false (DNAT from 127.0.0.1 too).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmctl/vmctl/internal/imagefile"
)

func init() { sections = append(sections, section{"net", runNetwork}) }

const (
	netOutsideAddr = "198.51.100.2"
	netHostAddr    = "198.51.100.1"
	netVethAddr    = "10.88.0.2"
	netPort        = "5201"
	netPublished   = "15201"
	netSeconds     = 3 * time.Second
	netRequests    = 1000
)

func runNetwork(n int) error {
	if os.Geteuid() != 0 {
		return skip("needs root for network namespaces")
	}
	tmp, err := os.MkdirTemp("", "vmctl-bench-net-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	exe, err := os.MkdirTemp("", "vbn")
	if err != nil {
		return err
	}
	defer os.RemoveAll(exe)
	load := filepath.Join(tmp, "netload")
	if err := buildStatic(load, "./scripts/nested/netload"); err != nil {
		return err
	}
	archive := filepath.Join(tmp, "netload.tar")
	if err := netloadImage(load, archive); err != nil {
		return fmt.Errorf("netload image: %w", err)
	}

	// The outside host and the veth baseline.
	pid := os.Getpid()
	outside, peer := fmt.Sprintf("vmctl-bench-out-%d", pid), fmt.Sprintf("vmctl-bench-veth-%d", pid)
	defer exec.Command("ip", "netns", "del", outside).Run()
	defer exec.Command("ip", "netns", "del", peer).Run()
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "add", outside},
		{"ip", "netns", "add", peer},
		{"ip", "link", "add", "bo-host", "type", "veth", "peer", "name", "bo-out", "netns", outside},
		{"ip", "addr", "add", netHostAddr + "/24", "dev", "bo-host"},
		{"ip", "link", "set", "bo-host", "up"},
		{"ip", "-n", outside, "link", "set", "lo", "up"},
		{"ip", "-n", outside, "addr", "add", netOutsideAddr + "/24", "dev", "bo-out"},
		{"ip", "-n", outside, "link", "set", "bo-out", "up"},
		// The outside reaches the veth namespace and containers' addresses
		// through the host, as a router's neighbours do.
		{"ip", "-n", outside, "route", "add", "10.88.0.0/24", "via", netHostAddr},
		{"ip", "-n", outside, "route", "add", "172.30.0.0/16", "via", netHostAddr},
		{"ip", "link", "add", "bv-host", "type", "veth", "peer", "name", "bv-peer", "netns", peer},
		{"ip", "addr", "add", "10.88.0.1/24", "dev", "bv-host"},
		{"ip", "link", "set", "bv-host", "up"},
		{"ip", "-n", peer, "link", "set", "lo", "up"},
		{"ip", "-n", peer, "addr", "add", netVethAddr + "/24", "dev", "bv-peer"},
		{"ip", "-n", peer, "link", "set", "bv-peer", "up"},
		{"ip", "-n", peer, "route", "add", "default", "via", "10.88.0.1"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	server := exec.Command("ip", "netns", "exec", outside, load, "serve", "-listen", ":"+netPort)
	if err := server.Start(); err != nil {
		return err
	}
	defer func() { server.Process.Kill(); server.Wait() }()
	if out, err := exec.Command("ip", "netns", "exec", peer, load, "wait", "-to", netOutsideAddr+":"+netPort).CombinedOutput(); err != nil {
		return fmt.Errorf("the outside's server: %v: %s", err, out)
	}

	vmctl, _ := filepath.Abs("bin/vmctl")
	sock := filepath.Join(tmp, "d.sock")
	stop, err := startVmctld(sock, filepath.Join(tmp, "data"), exe)
	if err != nil {
		return err
	}
	defer func() { stop() }()
	v := func(args ...string) (string, error) {
		out, err := exec.Command(vmctl, append([]string{"-H", "unix://" + sock}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("vmctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	if _, err := v("load", "-i", archive); err != nil {
		return err
	}
	info, err := v("info")
	if err != nil {
		return err
	}

	// Table 1. Each round runs the three measurements in the veth
	// namespace, then in one container (its boot is outside netload's
	// timing), interleaved.
	to := netOutsideAddr + ":" + netPort
	secs := fmt.Sprintf("%ds", int(netSeconds.Seconds()))
	script := fmt.Sprintf("netload send -to %[1]s -label L -duration %[2]s -verify=false && "+
		"netload recv -to %[1]s -label L -duration %[2]s -verify=false && "+
		"netload rr -to %[1]s -label L -n %[3]d", to, secs, netRequests)
	res := map[string]netBenchResult{}
	var failures []string
	collect := func(label, out string) {
		r, f := parseNetBench(strings.ReplaceAll(out, "label=L", "label="+label))
		res[label] = appendNet(res[label], r[label])
		failures = append(failures, f...)
	}
	for i := 0; i < n; i++ {
		out, err := exec.Command("ip", "netns", "exec", peer, "sh", "-c", strings.ReplaceAll(script, "netload ", load+" ")).CombinedOutput()
		if err != nil {
			failures = append(failures, fmt.Sprintf("veth: %v: %s", err, lastLine(string(out))))
		}
		collect("veth", string(out))
		out2, err := v("run", "--rm", "netload:bench", "sh", "-c", script)
		if err != nil {
			failures = append(failures, lastLine(err.Error()))
		}
		collect("vmctl", out2)
	}
	fmt.Printf("\nnet: a container <-> a host beyond the bridge (another namespace), netload: TCP for %s each way without "+
		"verification, then %d 64-byte requests; the veth row is a namespace on a plain veth, routed; vmctl is a "+
		"container on vmctld's default network (%s), through NAT; median of %d rounds, interleaved\n\n",
		netSeconds, netRequests, driverOf(info), n)
	netTable("veth namespace", "vmctl container", []netRow{
		{"container -> outside throughput (higher: better)", "Mbit/s", func(r netBenchResult) []float64 { return r.send }},
		{"outside -> container throughput (higher: better)", "Mbit/s", func(r netBenchResult) []float64 { return r.recv }},
		{"request/response mean (lower: better)", "µs", func(r netBenchResult) []float64 { return r.mean }},
	}, res["veth"], res["vmctl"])

	// Table 2: one container serving, its port published; with the
	// userland proxy (dockerd's default), then with the daemon restarted
	// with --userland-proxy=false (DNAT alone, the host's loopback too).
	rr := func(label, ns, addr string) {
		args := []string{load, "rr", "-to", addr, "-label", label, "-n", fmt.Sprint(netRequests)}
		if ns != "" {
			args = append([]string{"ip", "netns", "exec", ns}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v: %s", label, err, lastLine(string(out))))
		}
		r, _ := parseNetBench(string(out))
		res[label] = appendNet(res[label], r[label])
	}
	published := func(mode string) error {
		if _, err := v("run", "-d", "--name", "bench-srv", "-p", netPublished+":"+netPort, "netload:bench", "netload", "serve"); err != nil {
			return err
		}
		defer v("rm", "-f", "bench-srv")
		ipOut, err := v("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "bench-srv")
		if err != nil {
			return err
		}
		ip := strings.TrimSpace(ipOut)
		if out, err := exec.Command(load, "wait", "-to", ip+":"+netPort, "-timeout", "60s").CombinedOutput(); err != nil {
			return fmt.Errorf("bench-srv's server: %v: %s", err, out)
		}
		for i := 0; i < n; i++ {
			rr(mode+"host-direct", "", ip+":"+netPort)
			rr(mode+"host-published", "", "127.0.0.1:"+netPublished)
			rr(mode+"out-direct", outside, ip+":"+netPort)
			rr(mode+"out-published", outside, netHostAddr+":"+netPublished)
		}
		return nil
	}
	if err := published(""); err != nil {
		return err
	}
	stop()
	stop = func() {}
	stopK, err := startVmctld(sock, filepath.Join(tmp, "data"), exe, "--userland-proxy=false")
	if err != nil {
		return err
	}
	stop = stopK
	if err := published("k-"); err != nil {
		return err
	}
	fmt.Printf("published ports: %d 64-byte requests to a container's server (vmctl run -p %s:%s), median of %d rounds, interleaved; "+
		"vmctld as by default (userland proxy), then restarted with --userland-proxy=false\n\n", netRequests, netPublished, netPort, n)
	for _, t := range []struct{ mode, name, how string }{
		{"", "from the host, 127.0.0.1", "userland proxy"},
		{"", "from outside, " + netHostAddr, "DNAT"},
		{"k-", "from the host, 127.0.0.1", "no proxy: DNAT"},
		{"k-", "from outside, " + netHostAddr, "no proxy: DNAT"},
	} {
		where := "host"
		if strings.HasPrefix(t.name, "from outside") {
			where = "out"
		}
		netTable("to the container's address", "to the published port", []netRow{
			{t.name + " (" + t.how + ")", "µs", func(r netBenchResult) []float64 { return r.mean }},
		}, res[t.mode+where+"-direct"], res[t.mode+where+"-published"])
	}
	if len(failures) > 0 {
		return fmt.Errorf("some runs failed: %s", strings.Join(failures, "; "))
	}
	return nil
}

type netRow struct {
	name, unit string
	pick       func(netBenchResult) []float64
}

// netTable prints rows of medians of peer and ours side by side, with
// ours over peer.
func netTable(peerName, oursName string, rows []netRow, peer, ours netBenchResult) {
	fmt.Printf("| %-52s | %26s | %26s | %8s |\n", "", peerName, oursName, "ratio")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 54), strings.Repeat("-", 28), strings.Repeat("-", 28), strings.Repeat("-", 10))
	for _, row := range rows {
		cell := func(r netBenchResult) (string, float64) {
			v := row.pick(r)
			if len(v) == 0 {
				return "failed", 0
			}
			m := medianFloat(v)
			return fmt.Sprintf("%.0f %s", m, row.unit), m
		}
		p, pv := cell(peer)
		o, ov := cell(ours)
		ratio := "-"
		if pv > 0 && ov > 0 {
			ratio = fmt.Sprintf("%.2fx", ov/pv)
		}
		fmt.Printf("| %-52s | %26s | %26s | %8s |\n", row.name, p, o, ratio)
	}
	fmt.Println()
}

func appendNet(a, b netBenchResult) netBenchResult {
	a.send = append(a.send, b.send...)
	a.recv = append(a.recv, b.recv...)
	a.mean = append(a.mean, b.mean...)
	return a
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// driverOf is the hypervisor and accelerator vmctl info reports.
func driverOf(info string) string {
	var hv, accel string
	for _, line := range strings.Split(info, "\n") {
		k, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "Hypervisor":
			hv = strings.Fields(val + " ?")[0]
		case "Accelerator":
			accel = strings.TrimSpace(val)
		}
	}
	return strings.TrimSpace(hv + " " + accel)
}

// netloadImage writes "netload:bench", busybox with /bin/netload, as a
// docker save archive.
func netloadImage(bin, archive string) error {
	prog, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	return imagefile.Add("build/busybox.tar", "bin/netload", 0o755, prog, "netload:bench", archive)
}
