// Package nested is the nested-virtualization test harness: it proves that
// vmctl's own VMM boots Linux on machines whose /dev/kvm cannot.
//
// It boots an L1 Linux (Debian's cloud kernel, prepared by
// scripts/nested/prepare.sh) under QEMU with TCG and `-cpu max`, whose
// emulated AMD SVM with nested paging gives L1 a working /dev/kvm. L1 runs
// from an initramfs built here: static busybox, the kvm modules, an /init
// shell script (init.sh), the caller's scenarios (shell scripts) and any
// files they need, such as vmctl-vmm, the L2 guest kernel and image, or test
// programs. /init loads KVM, runs each scenario under a time limit, prints
// one result line per scenario on the serial console and powers off. Run
// streams that console, parses the results, enforces a deadline and always
// kills QEMU before returning.
//
// The package does not build the VMM or the guest, does not talk to L2 other
// than through what scenarios print, and does not decide what a scenario
// checks: scenarios pass by exiting 0.
package nested

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Scenario is one check run inside L1 with busybox sh, in /nested, with
// /nested/bin on PATH. It passes when it exits 0; its last line of output
// becomes the result's detail.
type Scenario struct {
	// Name: letters, digits, '-', '_', '.'; unique; not KVMCheck.
	Name   string
	Script string
	// Timeout bounds the scenario inside L1; everything it started is
	// killed when it expires. Default DefaultScenarioTimeout.
	Timeout time.Duration
}

// File is an extra file placed in L1.
type File struct {
	// Path inside L1, e.g. "nested/bin/vmctl-vmm" (relative to /; parents
	// are created).
	Path string
	// Source is a host file to copy; if empty, Data is the content.
	Source string
	Data   []byte
	// Mode defaults to the source's executable bit (0755 or 0644).
	Mode os.FileMode
	// Dynamic allows a dynamically linked executable (the caller brings its
	// libraries); otherwise executables must be static.
	Dynamic bool
}

// Defaults, chosen by measurement (see scripts/nested/README.md).
const (
	DefaultCPUs            = 2
	DefaultMemoryMiB       = 2048
	DefaultScenarioTimeout = 60 * time.Second
	// bootAllowance covers L1's boot and module loading on a loaded host.
	bootAllowance = 60 * time.Second
)

// Config describes one L1 run.
type Config struct {
	Kernel    Kernel
	Scenarios []Scenario
	Files     []File
	// Busybox is a static busybox binary; default /bin/busybox.
	Busybox string
	// QEMU is the qemu-system-x86_64 binary; default from PATH.
	QEMU      string
	CPUs      int
	MemoryMiB int
	// Timeout bounds the whole run on the host; default: L1's boot
	// allowance plus every scenario's timeout plus a margin.
	Timeout time.Duration
	// Console, if set, receives L1's console as it arrives.
	Console io.Writer
	// KernelArgs are appended to L1's kernel command line.
	KernelArgs []string
	// SilenceLimit is how long L1 may print nothing, not even its 5 s
	// heartbeat, once /init runs, before it counts as wedged
	// (ErrWedged); default DefaultSilenceLimit.
	SilenceLimit time.Duration
}

// DefaultSilenceLimit is twelve missed heartbeats: far beyond any stall of
// a busy host, well below the scenarios' time limits.
const DefaultSilenceLimit = 60 * time.Second

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Kernel.Vmlinuz == "" || len(cfg.Kernel.Modules) == 0 || len(cfg.Kernel.ModuleFiles) != len(cfg.Kernel.Modules) {
		return cfg, fmt.Errorf("nested: no L1 kernel given (use FindKernel)")
	}
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPUs < 1 || cfg.MemoryMiB < 256 {
		return cfg, fmt.Errorf("nested: %d CPUs and %d MiB is too small for L1", cfg.CPUs, cfg.MemoryMiB)
	}
	seen := map[string]bool{KVMCheck: true}
	scenarios := make([]Scenario, len(cfg.Scenarios))
	for i, s := range cfg.Scenarios {
		if !validName(s.Name) {
			return cfg, fmt.Errorf("nested: invalid scenario name %q (letters, digits, '-', '_', '.')", s.Name)
		}
		if seen[s.Name] {
			return cfg, fmt.Errorf("nested: scenario name %q is used twice or reserved", s.Name)
		}
		seen[s.Name] = true
		if s.Timeout == 0 {
			s.Timeout = DefaultScenarioTimeout
		}
		if s.Timeout < time.Second {
			return cfg, fmt.Errorf("nested: scenario %s: timeout %v is under a second", s.Name, s.Timeout)
		}
		scenarios[i] = s
	}
	cfg.Scenarios = scenarios
	if cfg.Timeout == 0 {
		cfg.Timeout = cfg.guestDeadline() + 30*time.Second
	}
	if cfg.SilenceLimit == 0 {
		cfg.SilenceLimit = DefaultSilenceLimit
	}
	return cfg, nil
}

// guestDeadline is when L1 powers itself off, counted from its boot.
func (cfg Config) guestDeadline() time.Duration {
	d := bootAllowance
	for _, s := range cfg.Scenarios {
		d += s.Timeout + 5*time.Second // per-scenario bookkeeping
	}
	return d
}

func seconds1(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// Result is what L1 reported for one scenario (or for KVMCheck).
type Result struct {
	Name   string
	Pass   bool
	Detail string
	// Duration is measured by L1's clock.
	Duration time.Duration
	// Output is what the scenario printed (console lines between its
	// begin and result markers, kernel messages included).
	Output string
}

func (r Result) String() string {
	status := "FAIL"
	if r.Pass {
		status = "pass"
	}
	return fmt.Sprintf("%s: %s in %.2fs: %s", r.Name, status, r.Duration.Seconds(), r.Detail)
}

// Report is everything one run observed. Run returns it even on error.
type Report struct {
	// Results in the order L1 reported them; KVMCheck first.
	Results []Result
	// Host-clock times from QEMU's start: to L1's /init (NESTED-BOOT), to
	// a usable /dev/kvm (the KVMCheck result), to QEMU's exit.
	Boot, KVMReady, Wall time.Duration
	// L1Uptime is L1's uptime when /init started: kernel boot as L1 saw it.
	L1Uptime time.Duration
	// Done is true when L1 finished its plan and powered off.
	Done bool
	// Console is the whole L1 console.
	Console string
	// Cmdline is the QEMU command line used.
	Cmdline []string
}

// Result returns the named result.
func (r *Report) Result(name string) (Result, bool) {
	for _, res := range r.Results {
		if res.Name == name {
			return res, true
		}
	}
	return Result{}, false
}
