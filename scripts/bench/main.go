// Command bench measures vmctl against peers run side by side in the same
// run, and prints the results as tables. Absolute times on shared machines
// are noise; the ratios are the result.
//
// Boot: `vmctl run --rm busybox echo hi`, booted (--cold-boot) and
// started from the saved guest (the default), against a bare qemu-system-x86_64
// boot of the same guest kernel and guest image with the same machine
// options, whose agent prints one line and reboots (vmctl.selftest). Both
// are timed from process start to their first output line and to process
// exit, interleaved, median of -n runs. On a shared machine the spread
// between runs is larger than most single changes: compare ratios of
// several rounds, and read the in-guest step times for where the time goes
// (`go test -v -run TestTraceTimesContainerStart ./guest-agent/vmtest`
// boots with vmctl.trace and prints them).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
	"github.com/vmctl/vmctl/internal/netnsrun"
)

// section is one benchmark table. Sections live in files of their own and
// register themselves in init.
type section struct {
	name string
	run  func(n int) error
}

var sections = []section{{"boot", runBoot}}

func main() {
	n := flag.Int("n", 7, "runs per measurement (median reported)")
	only := flag.String("only", "", "run only the named section")
	flag.Parse()
	// The bench runs in a network namespace of its own, so the bridges,
	// taps and rules of the containers it runs never touch the machine's
	// network. What needs the network (the crane peer, from the module
	// proxy) is made first, outside it.
	if os.Geteuid() == 0 && !netnsrun.Inside() {
		os.Exit(reexecInNetns(*only))
	}
	failed := false
	for _, s := range sections {
		if *only != "" && s.name != *only {
			continue
		}
		err := s.run(*n)
		var skip *skipped
		switch {
		case errors.As(err, &skip):
			// What this machine lacks is not a failure of the bench.
			fmt.Printf("\nbench %s: skipped: %s\n", s.name, skip.why)
		case err != nil:
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", s.name, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// reexecInNetns prepares what needs the machine's network, then runs the
// bench again inside a namespace of its own and returns its status.
func reexecInNetns(only string) int {
	if only == "" || only == "pull" {
		dir, err := os.MkdirTemp("", "vmctl-bench-crane-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: "+err.Error())
			return 1
		}
		defer os.RemoveAll(dir)
		crane, err := buildCrane(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench pull: "+err.Error())
			return 1
		}
		os.Setenv(craneEnv, crane)
	}
	if only == "" || only == "start" {
		// A failure is the section's one line, inside.
		if dockerd, err := prepareDockerd(); err == nil {
			os.Setenv(dockerdEnv, dockerd)
		} else {
			fmt.Fprintln(os.Stderr, "bench start: "+err.Error())
		}
	}
	code, err := netnsrun.Reexec("vmctl-bench", netnsrun.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: "+err.Error())
		return 1
	}
	return code
}

// skipped is a section's answer on a machine that lacks what it measures
// (a /dev/kvm, say): one line saying why, and the other sections go on.
type skipped struct{ why string }

func (s *skipped) Error() string { return "skipped: " + s.why }

func skip(format string, args ...any) error { return &skipped{why: fmt.Sprintf(format, args...)} }

// compareRuns times two commands that print marker, warmed up once each,
// interleaved n times, and prints the medians to the marker and to exit
// side by side under title.
func compareRuns(n int, title, peerName, oursName, marker string, peer, ours func() *exec.Cmd) error {
	for _, c := range []*exec.Cmd{peer(), ours()} {
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("warm-up %v: %v: %s", c.Args, err, out)
		}
	}
	var ps, qs []sample
	for i := 0; i < n; i++ {
		p, err := timeFirstLine(peer(), marker)
		if err != nil {
			return fmt.Errorf("%s: %w", peerName, err)
		}
		o, err := timeFirstLine(ours(), marker)
		if err != nil {
			return fmt.Errorf("%s: %w", oursName, err)
		}
		ps, qs = append(ps, p), append(qs, o)
	}
	fmt.Printf("\n%s, median of %d, interleaved\n\n", title, n)
	printHeader(peerName, oursName)
	first := func(s sample) time.Duration { return s.first }
	exit := func(s sample) time.Duration { return s.exit }
	a, b := median(ps, first), median(qs, first)
	printRow("create -> start -> first output", fmt.Sprintf("%.0fms", ms(a)), fmt.Sprintf("%.0fms", ms(b)), float64(b)/float64(a))
	a, b = median(ps, exit), median(qs, exit)
	printRow("to exit", fmt.Sprintf("%.0fms", ms(a)), fmt.Sprintf("%.0fms", ms(b)), float64(b)/float64(a))
	fmt.Println()
	return nil
}

type sample struct{ first, exit time.Duration }

func runBoot(n int) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	vmctl := filepath.Join(root, "bin/vmctl")
	kernel := filepath.Join(root, "bin/guest/vmlinuz")
	initrd := filepath.Join(root, "bin/guest/initramfs.img")
	for _, f := range []string{vmctl, kernel, initrd, "build/busybox.tar"} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s missing: run `make build kernel image`", f)
		}
	}
	dataRoot, err := os.MkdirTemp("", "vmctl-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataRoot)
	execRoot, err := os.MkdirTemp("", "vb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(execRoot)
	vm := func(args ...string) *exec.Cmd {
		return exec.Command(vmctl, append([]string{"--data-root", dataRoot, "--exec-root", execRoot}, args...)...)
	}
	if out, err := vm("load", "-i", "build/busybox.tar").CombinedOutput(); err != nil {
		return fmt.Errorf("load: %v: %s", err, out)
	}
	// Warm-up: builds the image disk once, fills the page cache.
	if out, err := vm("run", "--rm", "busybox", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("warm-up run: %v: %s", err, out)
	}
	// The same virtual hardware and kernel command line the QEMU driver
	// gives a container's VM of the default size (1 vCPU, 256 MiB).
	bareArgs := qemu.BareArgs("tcg", 1, 256, kernel, initrd, []string{contract.SelftestFlag})
	bare := func() *exec.Cmd { return exec.Command("qemu-system-x86_64", bareArgs...) }
	if _, err := timeFirstLine(bare(), contract.SelftestReadyLine); err != nil {
		return fmt.Errorf("bare QEMU boot: %w", err)
	}
	// The restore path's warm-up: the first run saves the guest.
	if out, err := vm("run", "--rm", "busybox", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("warm-up run: %v: %s", err, out)
	}
	var bares, colds, runs []sample
	for i := 0; i < n; i++ {
		b, err := timeFirstLine(bare(), contract.SelftestReadyLine)
		if err != nil {
			return fmt.Errorf("bare QEMU boot: %w", err)
		}
		c, err := timeFirstLine(vm("run", "--rm", "--cold-boot", "busybox", "echo", "hi"), "hi")
		if err != nil {
			return fmt.Errorf("vmctl run --cold-boot: %w", err)
		}
		r, err := timeFirstLine(vm("run", "--rm", "busybox", "echo", "hi"), "hi")
		if err != nil {
			return fmt.Errorf("vmctl run: %w", err)
		}
		bares, colds, runs = append(bares, b), append(colds, c), append(runs, r)
	}
	fmt.Printf("\nBoot to first output and to exit (median of %d, interleaved, QEMU TCG): vmctl run booting its VM\n", n)
	fmt.Printf("(--cold-boot) and starting it from the saved guest (the default), against a bare QEMU boot\n\n")
	fmt.Printf("| %-30s | %10s | %16s | %7s | %16s | %7s |\n", "", "bare QEMU", "vmctl cold boot", "ratio", "vmctl restored", "ratio")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 32), strings.Repeat("-", 12), strings.Repeat("-", 18), strings.Repeat("-", 9), strings.Repeat("-", 18), strings.Repeat("-", 9))
	row := func(name string, pick func(sample) time.Duration) {
		a, c, r := median(bares, pick), median(colds, pick), median(runs, pick)
		fmt.Printf("| %-30s | %8.0fms | %14.0fms | %6.2fx | %14.0fms | %6.2fx |\n", name, ms(a), ms(c), float64(c)/float64(a), ms(r), float64(r)/float64(a))
	}
	row("start -> first output line", func(s sample) time.Duration { return s.first })
	row("start -> process exit", func(s sample) time.Duration { return s.exit })
	fmt.Println()
	return nil
}

// timeFirstLine starts cmd and times the first stdout line containing
// marker, and the process exit.
func timeFirstLine(cmd *exec.Cmd, marker string) (sample, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return sample{}, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	var s sample
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if s.first == 0 && strings.Contains(sc.Text(), marker) {
			s.first = time.Since(start)
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	s.exit = time.Since(start)
	if err != nil {
		return s, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if s.first == 0 {
		return s, fmt.Errorf("never printed %q", marker)
	}
	return s, nil
}

func median(xs []sample, pick func(sample) time.Duration) time.Duration {
	v := make([]time.Duration, len(xs))
	for i, x := range xs {
		v[i] = pick(x)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[len(v)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// buildStatic builds the package pkg into out without cgo: a static
// binary, for a nested L1 or a container image without shared libraries.
func buildStatic(out, pkg string) error {
	build := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return nil
}
