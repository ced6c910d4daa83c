package tests

import (
	"os"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// checkLine returns the value vmctl check (or info) printed after label,
// or fails the test.
func checkLine(t *testing.T, out, label string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, label); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q line in:\n%s", label, out)
	return ""
}

// `vmctl check` describes this machine as it is: the driver auto picks
// (the one vmctl info names, in this process and through vmctld), what
// /dev/kvm can do, the outer hypervisor as CPUID's hypervisor flag and DMI
// show it, and the fast path's setting where auto falls back to QEMU.
// Without a QEMU on a host whose /dev/kvm cannot run full guests, nothing
// can run, and check says so in one line.
func TestCheck(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 0, "check")
	choice, err := sandbox.Choose("auto")
	must(t, err)
	if got, want := checkLine(t, r.stdout, "auto picks:"), choice.Driver+" (accelerator "+choice.Accel+")"; got != want {
		t.Errorf("check: auto picks %q, want %q", got, want)
	}
	if got := checkLine(t, r.stdout, "Why:"); got != choice.Reason {
		t.Errorf("check: why %q, want %q", got, choice.Reason)
	}
	if got, want := checkLine(t, r.stdout, "Result:"), "containers can run here, on "+choice.Driver+" with "+choice.Accel; got != want {
		t.Errorf("check: result %q, want %q", got, want)
	}

	info := e.mustRun(t, 0, "info")
	if got := checkLine(t, info.stdout, "Hypervisor:"); got != choice.Driver+" (auto)" {
		t.Errorf("info names hypervisor %q, check %s", got, choice.Driver)
	}
	outer := checkLine(t, r.stdout, "Outer hypervisor:")
	if got := checkLine(t, info.stdout, "  Runs under:"); got != outer {
		t.Errorf("info: runs under %q, check: outer hypervisor %q", got, outer)
	}

	ok, why := sandbox.KVMCapability()
	kvm := checkLine(t, r.stdout, "/dev/kvm:")
	fastPath := checkLine(t, r.stdout, "Fast path:")
	switch {
	case ok && (kvm != "runs full guests" || !strings.HasPrefix(fastPath, "in use")):
		t.Errorf("check on a host whose /dev/kvm runs full guests: /dev/kvm %q, fast path %q", kvm, fastPath)
	case !ok && (!strings.HasPrefix(kvm, why) || strings.HasPrefix(fastPath, "in use")):
		t.Errorf("check on a host whose /dev/kvm cannot run full guests (%s): /dev/kvm %q, fast path %q", why, kvm, fastPath)
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && !ok && !strings.Contains(kvm, "kvm_pvm") {
		t.Errorf("check on a host with kvm_pvm loaded does not say so: /dev/kvm %q", kvm)
	}

	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	must(t, err)
	underHypervisor := strings.Contains(string(cpuinfo), " hypervisor")
	if bare := strings.HasPrefix(outer, "none (bare metal)"); bare == underHypervisor {
		t.Errorf("check: outer hypervisor %q, but /proc/cpuinfo's hypervisor flag is %v", outer, underHypervisor)
	}
	if vendor, err := os.ReadFile("/sys/class/dmi/id/sys_vendor"); err == nil && strings.TrimSpace(string(vendor)) != "" {
		if !strings.Contains(outer, "DMI "+strings.TrimSpace(string(vendor))) {
			t.Errorf("check: outer hypervisor %q does not cite DMI's vendor %q", outer, strings.TrimSpace(string(vendor)))
		}
	} else if !strings.Contains(outer, "no DMI table") {
		t.Errorf("check: outer hypervisor %q, on a machine without DMI tables", outer)
	}

	d := startDaemon(t)
	dr := d.mustVmctl(t, 0, "", "check")
	if !strings.HasPrefix(dr.stdout, "Daemon:") || checkLine(t, dr.stdout, "auto picks:") != checkLine(t, r.stdout, "auto picks:") {
		t.Errorf("check through vmctld differs from check in this process:\n%s\n%s", dr.stdout, r.stdout)
	}

	if ok {
		t.Skip("this host's /dev/kvm runs full guests: the native VMM runs without QEMU")
	}
	r = e.runWith(t, nil, []string{"PATH=" + t.TempDir()}, "check")
	if r.code != 1 {
		t.Errorf("check without QEMU on a host without usable KVM: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	oneLine(t, r, "no hypervisor can run containers here: the native VMM cannot run")
	if !strings.Contains(r.stderr, "install qemu-system-x86") || strings.Contains(r.stdout, "Result:") {
		t.Errorf("check without QEMU:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
}
