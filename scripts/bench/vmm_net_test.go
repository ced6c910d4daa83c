package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseNetBench(t *testing.T) {
	out := `NETLOAD send label=qemu bytes=1 secs=3.000 mbps=100.5 verified=no
NETLOAD send label=vmctl-vmm bytes=1 secs=3.000 mbps=120.0 verified=no
NETLOAD recv label=qemu bytes=2097152 secs=3.000 mbps=90.0 verified=no
NETBENCH cpu label=qemu dir=recv ticks=50 hz=100
[   12.3] some kernel message
NETLOAD rr label=vmctl-vmm n=500 size=64 mean_us=800 p50_us=700 p90_us=900 p99_us=2000
NETBENCH-FAIL vm=qemu-vhost never answered: x
`
	res, failures := parseNetBench(out)
	want := map[string]netBenchResult{
		"qemu":      {send: []float64{100.5}, recv: []float64{90}, cpuRecv: []float64{250}},
		"vmctl-vmm": {send: []float64{120}, mean: []float64{800}},
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("parseNetBench = %+v, want %+v", res, want)
	}
	if len(failures) != 1 || !strings.HasPrefix(failures[0], "vm=qemu-vhost") {
		t.Errorf("failures = %q", failures)
	}
}

// Every round measures every guest, starting with a different one.
func TestNetScriptRotates(t *testing.T) {
	s := netScript(3)
	var firsts []string
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) == 5 && f[0] == "measure" && f[3] == "send" {
			firsts = append(firsts, f[1])
		}
	}
	if len(firsts) != 9 {
		t.Fatalf("%d send runs, want 9 (3 rounds of 3 guests)", len(firsts))
	}
	if firsts[0] == firsts[3] || firsts[3] == firsts[6] || firsts[0] == firsts[6] {
		t.Errorf("rounds start with %s, %s, %s: the order does not rotate", firsts[0], firsts[3], firsts[6])
	}
}

// A peer guest's failures are reported and do not fail the section;
// vmctl-vmm's do.
func TestNetFailures(t *testing.T) {
	if err := netFailures(nil); err != nil {
		t.Errorf("no failures: %v", err)
	}
	peers := []string{"vm=qemu-vhost recv: netload recv: after 82422480 bytes: i/o timeout", "vm=qemu-vhost rr: dial: i/o timeout", "vm=qemu send: dial: i/o timeout"}
	if err := netFailures(peers); err != nil {
		t.Errorf("peers' failures failed the section: %v", err)
	}
	err := netFailures(append(peers, "vm=vmctl-vmm never answered: console: panic"))
	if err == nil || !strings.Contains(err.Error(), "vm=vmctl-vmm never answered") || strings.Contains(err.Error(), "qemu-vhost") {
		t.Errorf("vmctl-vmm's failure: err = %v, want it alone", err)
	}
}
