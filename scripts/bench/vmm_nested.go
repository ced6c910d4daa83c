package main

// Section vmm-nested: boot to agent-ready of the project's guest kernel and
// agent image under vmctl-vmm vs QEMU with KVM, both inside the nested L1
// of internal/nested (QEMU TCG with emulated SVM: the only place on these
// hosts where KVM runs Linux). The two VMMs alternate inside one L1 boot,
// driven by this program's own L1 mode (vmm_l1.go). Absolute times include
// nested-virtualization overhead under TCG; the ratio is the result. The
// VMMs' memory outside guest RAM at agent-ready is reported too: the booted
// counterpart of section vmm-mem.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() { sections = append(sections, section{"vmm-nested", runNested}) }

func runNested(n int) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	vmm := filepath.Join(root, "bin/vmctl-vmm")
	kernel := filepath.Join(root, "bin/guest/vmlinuz")
	initrd := filepath.Join(root, "bin/guest/initramfs.img")
	for _, f := range []string{vmm, kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s missing: run `make build kernel image`", f)
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
	tmp, err := os.MkdirTemp("", "vmctl-bench-nested-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// L1 has no shared libraries: this program goes in static.
	self := filepath.Join(tmp, "vmctl-bench")
	if err := buildStatic(self, "./scripts/bench"); err != nil {
		return err
	}
	files, err := nested.HostExecutable(qemuBin, "usr/bin/qemu-system-x86_64")
	if err != nil {
		return err
	}
	files = append(append(files, nested.QEMUFirmware()...),
		nested.File{Path: "nested/bin/vmctl-bench", Source: self},
		nested.File{Path: "nested/bin/vmctl-vmm", Source: vmm},
		nested.File{Path: "nested/guest/vmlinuz", Source: kernel},
		nested.File{Path: "nested/guest/initramfs.img", Source: initrd},
	)
	// QEMU+KVM in L1 reaches the agent in 2-4 s; 30 s is a hang.
	perBoot := 30 * time.Second
	sc := nested.Scenario{
		Name: "vmm-boot-bench",
		// n rounds of four kinds, and the two templates saved first.
		Timeout: time.Duration(4*n+3)*perBoot + 30*time.Second,
		Script: fmt.Sprintf("%s=1 vmctl-bench -n %d -timeout %s -kernel guest/vmlinuz -initrd guest/initramfs.img -memory %d",
			l1Env, n, perBoot, memGuestMiB),
	}
	rep, err := bootL1(nested.Config{Kernel: k, Scenarios: []nested.Scenario{sc}, Files: files})
	if err != nil {
		return fmt.Errorf("nested L1: %w\n%s", err, tailLines(rep.Console, 40))
	}
	r, ok := rep.Result(sc.Name)
	if !ok {
		return fmt.Errorf("L1 reported no result for the bench scenario\n%s", tailLines(rep.Console, 40))
	}
	samples, failures, err := parseL1Output(r.Output)
	if err != nil {
		return err
	}
	var qs, vs, rs, vrs []l1Sample
	for _, s := range samples {
		switch s.vmm {
		case "qemu":
			qs = append(qs, s)
		case "vmctl-vmm":
			vs = append(vs, s)
		case "qemu-restored":
			rs = append(rs, s)
		case "vmctl-vmm-restored":
			vrs = append(vrs, s)
		}
	}
	if len(qs) == 0 {
		return fmt.Errorf("QEMU+KVM never reached agent-ready in L1: %s\n%s", failures["qemu"], tailLines(r.Output, 30))
	}
	fmt.Printf("\nBoot to agent-ready inside the nested L1 (KVM on emulated SVM): QEMU -enable-kvm vs vmctl-vmm, same kernel+agent image, %d MiB (median of %d, interleaved)\n\n", memGuestMiB, len(qs))
	printHeader("QEMU+KVM", "vmctl-vmm")
	// ours formats vmctl-vmm's median, or says it has none.
	ours := func(v float64, unit string) (string, float64) {
		if len(vs) == 0 {
			return "no agent", 0
		}
		return fmt.Sprintf("%.1f%s", v, unit), 1
	}
	dur := func(name string, pick func(l1Sample) time.Duration) {
		p := medianL1(qs, pick)
		var o time.Duration
		if len(vs) > 0 {
			o = medianL1(vs, pick)
		}
		cell, ok := ours(ms(o), "ms")
		printRow(name, fmt.Sprintf("%.1fms", ms(p)), cell, ok*float64(o)/float64(p))
	}
	dur("start -> agent Health answered (<= 0.7x)", func(s l1Sample) time.Duration { return s.health })
	dur("start -> exit after agent Shutdown", func(s l1Sample) time.Duration { return s.exit })
	kb := func(name string, pick func(l1Sample) uint64) {
		asDur := func(s l1Sample) time.Duration { return time.Duration(pick(s)) }
		p := uint64(medianL1(qs, asDur))
		var o uint64
		if len(vs) > 0 {
			o = uint64(medianL1(vs, asDur))
		}
		cell, ok := ours(mib(o), "MiB")
		printRow(name, fmt.Sprintf("%.1fMiB", mib(p)), cell, ok*float64(o)/float64(p))
	}
	kb("RSS outside guest RAM at agent-ready", func(s l1Sample) uint64 { return s.rss })
	kb("PSS outside guest RAM at agent-ready", func(s l1Sample) uint64 { return s.pss })
	kb("guest RAM resident at agent-ready", func(s l1Sample) uint64 { return s.guestResKB })
	fmt.Println()
	restoreTable := func(name, kind, target string, boots, restores []l1Sample) {
		if len(restores) == 0 || len(boots) == 0 {
			if why, failed := failures[kind]; failed {
				fmt.Printf("%s restore in L1: failed: %s\n\n", name, why)
			}
			return
		}
		fmt.Printf("%s inside L1: boot to agent-ready vs start from the saved guest (engine/sandbox/snapshot; to the agent's answer to Restored) (median of %d)%s\n\n", name, len(restores), target)
		printHeader(name+" boot", "restored")
		for _, row := range []struct {
			name string
			pick func(l1Sample) time.Duration
		}{
			{"start -> guest ready", func(s l1Sample) time.Duration { return s.health }},
			{"start -> exit after agent Shutdown", func(s l1Sample) time.Duration { return s.exit }},
		} {
			p, o := medianL1(boots, row.pick), medianL1(restores, row.pick)
			printRow(row.name, fmt.Sprintf("%.1fms", ms(p)), fmt.Sprintf("%.1fms", ms(o)), float64(o)/float64(p))
		}
		res := func(s l1Sample) time.Duration { return time.Duration(s.guestResKB) }
		p, o := medianL1(boots, res), medianL1(restores, res)
		printRow("guest RAM resident (restored: incl. shared)", fmt.Sprintf("%.1fMiB", mib(uint64(p))), fmt.Sprintf("%.1fMiB", mib(uint64(o))), float64(o)/float64(p))
		fmt.Println()
	}
	restoreTable("QEMU+KVM", "qemu-restored", "", qs, rs)
	restoreTable("vmctl-vmm", "vmctl-vmm-restored", "; target <= 0.2x", vs, vrs)
	if why, failed := failures["vmctl-vmm"]; failed {
		return fmt.Errorf("vmctl-vmm did not reach agent-ready in L1 (%d of %d boots measured): %s", len(vs), n, why)
	}
	if len(qs) != n || len(vs) != n {
		return fmt.Errorf("L1 reported %d QEMU and %d vmctl-vmm boots, want %d each: %v", len(qs), len(vs), n, failures)
	}
	return nil
}

func medianL1(v []l1Sample, pick func(l1Sample) time.Duration) time.Duration {
	d := make([]time.Duration, len(v))
	for i, s := range v {
		d[i] = pick(s)
	}
	return medianDur(d)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootL1 runs L1, once more when it wedged (nested.ErrWedged: emulated
// SVM under TCG occasionally stops L1 whole), as the nested tests do.
func bootL1(cfg nested.Config) (*nested.Report, error) {
	rep, err := nested.Run(context.Background(), cfg)
	if errors.Is(err, nested.ErrWedged) {
		fmt.Printf("vmm bench: L1 wedged (%v); booting it once more\n", err)
		rep, err = nested.Run(context.Background(), cfg)
	}
	return rep, err
}
