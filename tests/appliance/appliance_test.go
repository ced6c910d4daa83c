// Package appliance_test checks the demo appliance that `make appliance`
// builds: the OVA as an importer reads it, and the qcow2 booted under QEMU's
// software emulation and driven over its serial console, once on a CPU
// without virtualization extensions (VirtualBox or VMware without nested
// virtualization: vmctl falls back to QEMU) and once with emulated AMD-V
// (nested virtualization on: vmctl-vmm).
//
// VMCTL_APPLIANCE names the directory with the built appliance
// (make appliance-test sets it to build/appliance).
package appliance_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/appliance"
	"github.com/vmctl/vmctl/internal/ova"
)

var dir = os.Getenv("VMCTL_APPLIANCE")

func TestMain(m *testing.M) {
	if dir == "" {
		fmt.Println("tests/appliance: VMCTL_APPLIANCE is not set: make appliance-test builds the appliance and runs these tests")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func repo(p string) string { return filepath.Join("..", "..", p) }

func TestOVA(t *testing.T) {
	c, err := ova.Verify(filepath.Join(dir, "vmctl.ova"), repo(filepath.Join(ova.SchemaDir, "ovf-envelope.xsd")))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("OVA: %s", strings.Join(c.Names, ", "))
	if h := c.Disks["vmctl-disk1.vmdk"]; h.CapacityBytes() < 4<<30 {
		t.Errorf("disk of %d bytes", h.CapacityBytes())
	}
	// DMTF's own schema, where it is at hand.
	if s := os.Getenv("VMCTL_OVF_SCHEMA"); s != "" {
		if err := ova.ValidateDescriptor(c.Descriptor, s); err != nil {
			t.Error(err)
		}
	}
	sums := exec.Command("sha256sum", "-c", "SHA256SUMS")
	sums.Dir = dir
	out, err := sums.CombinedOutput()
	if err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
	info, err := exec.Command("qemu-img", "info", filepath.Join(dir, "vmctl.qcow2")).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "file format: qcow2") {
		t.Errorf("qemu-img info: %v\n%s", err, info)
	}
	// qemu-img reads the packed disk as a streamOptimized VMDK too.
	ex := t.TempDir()
	if out, err := exec.Command("tar", "-C", ex, "-xf", filepath.Join(dir, "vmctl.ova"), "vmctl-disk1.vmdk").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	info, err = exec.Command("qemu-img", "info", filepath.Join(ex, "vmctl-disk1.vmdk")).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "file format: vmdk") || !strings.Contains(string(info), "create type: streamOptimized") {
		t.Errorf("qemu-img info of the OVA's disk: %v\n%s", err, info)
	}
}

// boot boots the appliance on cpu and logs in; the console goes to a file
// kept with the test's output on failure.
func boot(t *testing.T, cpu appliance.CPU) (*appliance.VM, context.Context) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	vm, err := appliance.Boot(appliance.Config{Image: filepath.Join(dir, "vmctl.qcow2"), CPU: cpu, Console: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Close()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("console:\n%s", b[max(0, len(b)-6000):])
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	t.Cleanup(cancel)
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Minute)
	defer lcancel()
	if err := vm.Login(lctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: login prompt answered after %v", cpu, time.Since(vm.Started).Round(time.Second))
	return vm, ctx
}

// must runs cmd in the appliance and fails the test unless it exits 0.
func must(t *testing.T, ctx context.Context, vm *appliance.VM, cmd string) string {
	t.Helper()
	out, rc, err := vm.Run(ctx, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if rc != 0 {
		t.Fatalf("%s: exit %d\n%s", cmd, rc, out)
	}
	return out
}

func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// demo is what the README says a user does first; both boots run it.
func demo(t *testing.T, ctx context.Context, vm *appliance.VM, cpu appliance.CPU) {
	release, err := os.ReadFile(repo("bin/guest/kernel.release"))
	if err != nil {
		t.Fatal(err)
	}
	contains(t, "/etc/vmctl-appliance", must(t, ctx, vm, "cat /etc/vmctl-appliance"), "vmctl ", "debian 12")
	// DHCP on the E1000, from QEMU's user network.
	addr := must(t, ctx, vm, "for i in $(seq 120); do ip -4 -o addr show scope global | grep -q inet && break; sleep 1; done; ip -4 -o addr show scope global")
	contains(t, "the NIC's address", addr, "10.0.2.15/24")
	contains(t, "vmctl images", must(t, ctx, vm, "vmctl images"), "busybox")

	start := time.Now()
	out := must(t, ctx, vm, "vmctl run --rm busybox uname -a")
	contains(t, "vmctl run", out, "Linux", strings.TrimSpace(string(release)))
	t.Logf("%s: first vmctl run --rm busybox uname -a: %v (boot to its output: %v)", cpu,
		time.Since(start).Round(time.Second), time.Since(vm.Started).Round(time.Second))

	out = must(t, ctx, vm, "docker run --rm busybox echo hello from docker")
	contains(t, "docker run", out, "hello from docker")
	out = must(t, ctx, vm, "docker ps -a --format '{{.Names}}' | wc -l")
	if strings.TrimSpace(out) != "0" {
		t.Errorf("docker ps -a after --rm runs: %s", out)
	}
}

func TestBootWithoutVirtualization(t *testing.T) {
	vm, ctx := boot(t, appliance.NoVirt)
	check := must(t, ctx, vm, "vmctl check")
	contains(t, "vmctl check", check,
		"Daemon:            unix:///run/vmctl/vmctl.sock", // socket-activated, the demo user may use it
		"Outer hypervisor:  QEMU (TCG)",
		"auto picks:        qemu (accelerator tcg)",
		"-cpu max", // the advice for an outer QEMU
	)
	if out, _, _ := vm.Run(ctx, "test -e /dev/kvm && echo has-kvm"); strings.Contains(out, "has-kvm") {
		t.Error("/dev/kvm exists on a CPU without virtualization extensions")
	}
	demo(t, ctx, vm, appliance.NoVirt)
}

func TestBootWithNestedVirtualization(t *testing.T) {
	vm, ctx := boot(t, appliance.EmulatedSVM)
	must(t, ctx, vm, "test -c /dev/kvm")
	check := must(t, ctx, vm, "vmctl check")
	// kvm: the native VMM, vmctl-vmm.
	contains(t, "vmctl check", check,
		"Daemon:            unix:///run/vmctl/vmctl.sock",
		"VT-x/AMD-V:        nested virtualization available",
		"auto picks:        kvm (accelerator kvm)",
		"Fast path:         in use")
	demo(t, ctx, vm, appliance.EmulatedSVM)
}
