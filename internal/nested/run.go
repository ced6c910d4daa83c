package nested

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// poweroffGrace is how long QEMU gets to exit after L1 said it is done.
const poweroffGrace = 10 * time.Second

// Run boots L1 with cfg, runs its scenarios and returns what L1 reported.
// The error is non-nil when the harness itself failed: bad configuration,
// QEMU would not start or died, L1 did not finish its plan before the
// deadline, or a scenario produced no result. Scenario failures are not
// errors: they are results with Pass false. QEMU is never left running.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	rep := &Report{}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return rep, err
	}
	qemu, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return rep, fmt.Errorf("nested: %s not found: install qemu-system-x86: %w", cfg.QEMU, err)
	}
	dir, err := os.MkdirTemp("", "vmctl-nested-")
	if err != nil {
		return rep, fmt.Errorf("nested: %w", err)
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "l1.cpio")
	if err := writeImageFile(initrd, cfg); err != nil {
		return rep, err
	}

	rep.Cmdline = append([]string{qemu}, cfg.qemuArgs(initrd, hostTSCkHz())...)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, rep.Cmdline[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 64 << 10}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return rep, fmt.Errorf("nested: %w", err)
	}
	// QEMU dies with us even if the test binary is killed (go test's own
	// timeout): Pdeathsig fires when the thread that started QEMU exits,
	// so that thread stays locked to this goroutine until QEMU is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return rep, fmt.Errorf("nested: start QEMU: %w", err)
	}
	var killedAfterDone atomic.Bool
	var grace *time.Timer
	// The silence watchdog runs from L1's /init on (its heartbeat starts
	// there) until L1 is done; every console line resets it.
	var silent atomic.Bool
	watchdog := time.AfterFunc(time.Hour, func() { silent.Store(true); cancel() })
	watchdog.Stop()
	defer watchdog.Stop()
	c := console{rep: rep, start: start, tee: cfg.Console, onDone: func() {
		watchdog.Stop()
		grace = time.AfterFunc(poweroffGrace, func() { killedAfterDone.Store(true); cancel() })
	}, onWedged: cancel, onLine: func() {
		if rep.Boot > 0 && !rep.Done {
			watchdog.Reset(cfg.SilenceLimit)
		}
	}}
	c.read(stdout)
	waitErr := cmd.Wait()
	if grace != nil {
		grace.Stop()
	}
	rep.Wall = time.Since(start)
	rep.Console = c.all.String()

	if c.wedged == "" && silent.Load() {
		c.wedged = fmt.Sprintf("L1 printed nothing for %v, not even its heartbeat", cfg.SilenceLimit)
	}
	switch {
	case c.wedged != "":
		return rep, fmt.Errorf("%w (%s): %s; QEMU killed", ErrWedged, c.where(), c.wedged)
	case rep.Done:
		if waitErr != nil && !killedAfterDone.Load() {
			return rep, fmt.Errorf("nested: QEMU failed after L1 finished: %w: %s", waitErr, firstLine(stderr.String()))
		}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return rep, fmt.Errorf("nested: L1 did not finish within %v (%s); QEMU killed", cfg.Timeout, c.where())
	case ctx.Err() != nil:
		return rep, fmt.Errorf("nested: run canceled (%s): %w", c.where(), ctx.Err())
	case c.guestTimeout:
		return rep, fmt.Errorf("nested: L1's own deadline of %v expired (%s)", cfg.guestDeadline(), c.where())
	case waitErr == nil:
		// QEMU runs L1 with -no-reboot: a clean exit before L1 finished
		// is L1 resetting itself (a triple fault of its emulated CPU
		// leaves nothing on the console).
		return rep, fmt.Errorf("%w (%s): L1 reset itself (QEMU, run with -no-reboot, exited 0 before L1 finished)", ErrWedged, c.where())
	default:
		return rep, fmt.Errorf("nested: QEMU exited before L1 finished (%s): %v: %s", c.where(), waitErr, firstLine(stderr.String()))
	}
	var missing []string
	for _, name := range append([]string{KVMCheck}, names(cfg.Scenarios)...) {
		if _, ok := rep.Result(name); !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return rep, fmt.Errorf("nested: L1 reported no result for %s", strings.Join(missing, ", "))
	}
	return rep, nil
}

// Failed returns the results that did not pass.
func (r *Report) Failed() []Result {
	var out []Result
	for _, res := range r.Results {
		if !res.Pass {
			out = append(out, res)
		}
	}
	return out
}

func writeImageFile(name string, cfg Config) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("nested: %w", err)
	}
	if err := WriteImage(f, cfg); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("nested: %w", err)
	}
	return nil
}

// qemuArgs is QEMU's command line for L1. Choices, each measured:
//   - microvm boots in about half the time of q35 (no firmware tables to
//     build, no PCI scan); its ACPI (on by default) lets `poweroff -f` end
//     QEMU. The legacy PIT, PIC and RTC are asked for explicitly: the cloud
//     kernel calibrates and ticks with them.
//   - -cpu max is what exposes SVM with nested paging under TCG. XSAVE is
//     taken away: with it, L2 kernels intermittently saw an XSAVE size
//     mismatch ("XSAVE consistency problem") and then triple-faulted early
//     in boot, under our VMM and QEMU+KVM alike (TCG's emulated SVM does not
//     keep L2's XCR0 consistent). Without it, L1's KVM offers no XSAVE to L2,
//     which saves its FPU state with FXSAVE.
//   - tsc_early_khz: see hostTSCkHz.
//   - quiet keeps kernel messages from interleaving with protocol lines
//     while warnings and errors still show.
func (cfg Config) qemuArgs(initrd string, tscKHz uint64) []string {
	cmdline := []string{"console=ttyS0", "panic=-1", "quiet"}
	if tscKHz != 0 {
		cmdline = append(cmdline, "tsc_early_khz="+strconv.FormatUint(tscKHz, 10))
	}
	cmdline = append(cmdline, cfg.KernelArgs...)
	return []string{
		"-M", "microvm,pit=on,pic=on,rtc=on",
		"-accel", "tcg", "-cpu", "max,-xsave",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-kernel", cfg.Kernel.Vmlinuz, "-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
	}
}

// console follows L1's console and fills the report.
type console struct {
	rep          *Report
	start        time.Time
	tee          io.Writer
	onDone       func()
	onWedged     func()
	onLine       func() // after each line is handled
	wedged       string // the kernel's report of a wedged L1 CPU
	all          strings.Builder
	current      string // scenario between its begin and result markers
	output       strings.Builder
	guestTimeout bool
}

func (c *console) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	// The heartbeat is echoed while a scenario's output may be half
	// written (tee passes on what it reads, a VMM's serial console byte
	// by byte): a heartbeat inside a line is handled on its own, and the
	// line's start joins its rest on the next line.
	var partial string
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if c.tee != nil {
				c.tee.Write([]byte(line)) // a failing tee must not stop the run
			}
			c.all.WriteString(line)
			line = partial + line
			partial = ""
			if i := strings.Index(line, markAlive); i > 0 && strings.HasSuffix(line, "\n") {
				partial = line[:i]
				line = line[i:]
			}
			c.handle(strings.TrimRight(line, "\r\n"))
			if c.onLine != nil {
				c.onLine()
			}
		}
		if err != nil {
			if partial != "" {
				c.handle(strings.TrimRight(partial, "\r\n"))
			}
			return
		}
	}
}

func (c *console) handle(line string) {
	if c.wedged == "" && isWedgeReport(line) {
		c.wedged = strings.TrimSpace(line)
		if c.onWedged != nil {
			c.onWedged()
		}
	}
	ev, ok := parseLine(line)
	if !ok {
		if c.current != "" {
			c.output.WriteString(line)
			c.output.WriteByte('\n')
		}
		return
	}
	switch ev.kind {
	case "NESTED-BOOT":
		c.rep.Boot = time.Since(c.start)
		c.rep.L1Uptime = uptime(ev.start)
	case "NESTED-BEGIN":
		c.current = ev.name
		c.output.Reset()
	case "NESTED-RESULT":
		res := Result{Name: ev.name, Pass: ev.pass, Detail: ev.detail, Duration: uptime(ev.end - ev.start)}
		if ev.name == c.current {
			res.Output = c.output.String()
			c.current = ""
			c.output.Reset()
		}
		if ev.name == KVMCheck {
			c.rep.KVMReady = time.Since(c.start)
		}
		c.rep.Results = append(c.rep.Results, res)
	case "NESTED-DONE":
		if !c.rep.Done {
			c.rep.Done = true
			c.onDone()
		}
	case "NESTED-TIMEOUT":
		c.guestTimeout = true
	}
}

// ErrWedged means L1's kernel reported a CPU stuck for many seconds (a
// soft lockup or an RCU stall) or panicked, L1 went silent, its heartbeat
// included (Config.SilenceLimit), or L1 reset itself before it finished.
// Seen under TCG's emulated SVM with L2 guests of any VMM, QEMU+KVM
// included: the emulated CPU stays in guest mode and L1 never runs again,
// or L1's kernel overflows its stack in the page-fault path of the process
// that runs an L2 (QEMU's as well as vmctl-vmm's), so the run is ended
// then rather than at its timeout. A caller may boot L1 again.
var ErrWedged = errors.New("nested: L1 wedged")

// isWedgeReport recognises the kernel's lockup, stall and panic reports.
func isWedgeReport(line string) bool {
	return strings.Contains(line, "BUG: soft lockup") || strings.Contains(line, "self-detected stall on CPU") ||
		strings.Contains(line, "detected stalls on CPUs") || strings.Contains(line, "Kernel panic - not syncing")
}

// where says how far L1 got, for error messages.
func (c *console) where() string {
	switch {
	case c.current != "":
		return "during scenario " + c.current
	case len(c.rep.Results) > 0:
		return "after " + c.rep.Results[len(c.rep.Results)-1].Name
	case c.rep.Boot > 0:
		return "after /init started, while loading KVM"
	default:
		return "before L1's /init started"
	}
}

func names(ss []Scenario) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Name
	}
	return out
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "no message on stderr"
	}
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// limitedWriter keeps the first n bytes and drops the rest, so a chatty
// QEMU cannot grow memory without bound.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
