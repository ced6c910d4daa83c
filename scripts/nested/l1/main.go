// Command l1 boots the nested harness's L1 machine by hand: it runs one or
// more shell scripts in L1 (with /dev/kvm loaded) and streams L1's console.
// It is the interactive twin of tests/nested, for reproducing a failure or
// trying a VMM flag:
//
//	go run ./scripts/nested/l1 -f bin/vmctl-vmm=nested/bin/vmctl-vmm \
//	    -f bin/guest/vmlinuz=nested/guest/vmlinuz -e 'vmctl-vmm -kernel guest/vmlinuz ...'
//
// Scripts run in /nested with /nested/bin on PATH. The exit status is 0 when
// every script passed, 1 when one failed, 2 when the harness failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

type fileFlags []nested.File

func (f *fileFlags) String() string { return fmt.Sprint(*f) }

func (f *fileFlags) Set(v string) error {
	src, dst, ok := strings.Cut(v, "=")
	if !ok {
		dst = "nested/bin/" + filepath.Base(src)
	}
	if src == "" || dst == "" {
		return fmt.Errorf("want HOSTPATH[=L1PATH], got %q", v)
	}
	*f = append(*f, nested.File{Source: src, Path: dst})
	return nil
}

func main() {
	var (
		files   fileFlags
		exprs   []string
		cpus    = flag.Int("cpus", nested.DefaultCPUs, "L1 vCPUs")
		mem     = flag.Int("memory", nested.DefaultMemoryMiB, "L1 RAM in MiB")
		timeout = flag.Duration("timeout", nested.DefaultScenarioTimeout, "time limit of each script")
		qemu    = flag.Bool("qemu", false, "also copy the host's qemu-system-x86_64, its libraries and microvm firmware into L1")
		cache   = flag.String("cache", "", "cache directory of scripts/nested/prepare.sh (default $VMCTL_CACHE_DIR or /var/cache/vmctl)")
		kargs   = flag.String("append", "", "extra L1 kernel command line arguments, space separated (e.g. tsc=reliable)")
	)
	flag.Var(&files, "f", "copy `HOSTPATH[=L1PATH]` into L1 (default L1PATH: nested/bin/BASENAME); repeatable")
	flag.Func("e", "run this shell `script` in L1; repeatable", func(s string) error { exprs = append(exprs, s); return nil })
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: l1 [flags] [SCRIPT-FILE...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	k, err := nested.FindKernel(*cache)
	if err != nil {
		fmt.Fprintf(os.Stderr, "l1: %v\n", err)
		os.Exit(2)
	}
	if *qemu {
		q, err := exec.LookPath("qemu-system-x86_64")
		if err == nil {
			var qf []nested.File
			qf, err = nested.HostExecutable(q, "usr/bin/qemu-system-x86_64")
			files = append(append(files, qf...), nested.QEMUFirmware()...)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "l1: -qemu: %v\n", err)
			os.Exit(2)
		}
	}
	cfg := nested.Config{Kernel: k, Files: files, CPUs: *cpus, MemoryMiB: *mem, Console: os.Stdout, KernelArgs: strings.Fields(*kargs)}
	for i, e := range exprs {
		cfg.Scenarios = append(cfg.Scenarios, nested.Scenario{Name: fmt.Sprintf("e%d", i+1), Script: e, Timeout: *timeout})
	}
	for _, name := range flag.Args() {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "l1: %v\n", err)
			os.Exit(2)
		}
		base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
		cfg.Scenarios = append(cfg.Scenarios, nested.Scenario{Name: base, Script: string(b), Timeout: *timeout})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := nested.Run(ctx, cfg)
	fmt.Fprintf(os.Stderr, "\nl1: QEMU start to /init %v (L1 uptime %v), to /dev/kvm %v, total %v\n",
		rep.Boot.Round(time.Millisecond), rep.L1Uptime, rep.KVMReady.Round(time.Millisecond), rep.Wall.Round(time.Millisecond))
	for _, r := range rep.Results {
		fmt.Fprintf(os.Stderr, "l1: %v\n", r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "l1: %v\n", err)
		os.Exit(2)
	}
	if len(rep.Failed()) > 0 {
		os.Exit(1)
	}
}
