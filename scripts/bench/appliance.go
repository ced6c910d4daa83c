package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmctl/vmctl/internal/appliance"
)

// The appliance section boots the demo appliance (make appliance) under
// QEMU's software emulation as a desktop hypervisor would run it, once on a
// CPU without VT-x/AMD-V (vmctl falls back to QEMU) and once with emulated
// AMD-V (vmctl-vmm on /dev/kvm), and times each from power-on to the login
// prompt, to the first output of `vmctl run --rm busybox uname -a` typed
// after logging in, and a `docker run` after it. One run each: a boot takes
// minutes under emulation.
func init() { sections = append(sections, section{"appliance", runAppliance}) }

const applianceImage = "build/appliance/vmctl.qcow2"

type applianceTimes struct {
	login, firstRun, secondRun, docker time.Duration
	driver                             string
}

func runAppliance(int) error {
	if _, err := os.Stat(applianceImage); err != nil {
		return skip("no %s: make appliance builds it (several minutes, root)", applianceImage)
	}
	boots := []struct {
		name string
		cpu  appliance.CPU
	}{
		{"CPU without VT-x/AMD-V (fallback: QEMU TCG)", appliance.NoVirt},
		{"emulated AMD-V (nested: vmctl-vmm)", appliance.EmulatedSVM},
	}
	var rows []applianceTimes
	for _, b := range boots {
		t, err := timeAppliance(b.cpu)
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		rows = append(rows, t)
	}
	fmt.Printf("\nThe appliance under QEMU TCG (2 vCPUs, 4 GiB), from power-on; one run each\n\n")
	fmt.Printf("| %-46s | %9s | %16s | %16s | %13s | %10s |\n", "boot", "login", "vmctl run (1st)", "vmctl run (2nd)", "docker run", "driver")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 48), strings.Repeat("-", 11), strings.Repeat("-", 18), strings.Repeat("-", 18), strings.Repeat("-", 15), strings.Repeat("-", 12))
	for i, b := range boots {
		r := rows[i]
		fmt.Printf("| %-46s | %8.1fs | %15.1fs | %15.1fs | %12.1fs | %10s |\n", b.name,
			r.login.Seconds(), r.firstRun.Seconds(), r.secondRun.Seconds(), r.docker.Seconds(), r.driver)
	}
	fmt.Println("\nlogin: power-on to the console's login prompt; vmctl run (1st): power-on to its output (vmctld socket-activated by it);")
	fmt.Println("vmctl run (2nd) and docker run: each command alone, typed after the first.")
	fmt.Println()
	return nil
}

func timeAppliance(cpu appliance.CPU) (applianceTimes, error) {
	var t applianceTimes
	vm, err := appliance.Boot(appliance.Config{Image: applianceImage, CPU: cpu})
	if err != nil {
		return t, err
	}
	defer vm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := vm.Login(ctx); err != nil {
		return t, err
	}
	t.login = vm.LoginPrompt.Sub(vm.Started)
	run := func(cmd, want string) (time.Duration, error) {
		start := time.Now()
		out, rc, err := vm.Run(ctx, cmd)
		if err == nil && (rc != 0 || !strings.Contains(out, want)) {
			err = fmt.Errorf("%s: exit %d: %s", cmd, rc, out)
		}
		return time.Since(start), err
	}
	if _, err := run("vmctl run --rm busybox uname -a", "Linux"); err != nil {
		return t, err
	}
	t.firstRun = time.Since(vm.Started)
	if t.secondRun, err = run("vmctl run --rm busybox uname -a", "Linux"); err != nil {
		return t, err
	}
	if t.docker, err = run("docker run --rm busybox echo hi", "hi"); err != nil {
		return t, err
	}
	out, _, err := vm.Run(ctx, "vmctl check | sed -n 's/^auto picks: *//p'")
	if err != nil {
		return t, err
	}
	t.driver, _, _ = strings.Cut(strings.TrimSpace(out), " ")
	return t, nil
}
