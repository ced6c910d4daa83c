// Package appliance boots the demo appliance (make appliance) under QEMU's
// software emulation and drives it over its serial console, as a user at
// the console would: log in, type commands, read what they print. The
// appliance tests and make bench use it.
//
// Two CPUs stand in for what a desktop hypervisor gives its VM: NoVirt, a
// CPU without VT-x/AMD-V (VirtualBox or VMware without nested
// virtualization: vmctl falls back to QEMU), and EmulatedSVM, TCG's AMD-V
// with nested paging (nested virtualization on: vmctl-vmm on /dev/kvm).
package appliance

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CPU is the processor the appliance boots on.
type CPU string

const (
	// NoVirt is a CPU without virtualization extensions (qemu64 has SVM
	// unless told not to). Not "max,svm=off": on that CPU under QEMU 7.2's
	// TCG, Debian's 6.1 kernel misreads mount points and systemd's mounts
	// and sandboxes fail.
	NoVirt CPU = "qemu64,svm=off"
	// EmulatedSVM is TCG's CPU with AMD-V and nested paging.
	EmulatedSVM CPU = "max"
)

// The demo login (README).
const (
	User     = "demo"
	Password = "demo"
)

// Config says what to boot and how.
type Config struct {
	Image     string // the appliance's qcow2; never written (an overlay takes the changes)
	CPU       CPU
	CPUs      int       // default 2
	MemoryMiB int       // default 4096
	Console   io.Writer // a copy of everything the console prints (optional)
}

// VM is a booted appliance.
type VM struct {
	cmd         *exec.Cmd
	dir         string
	stdin       io.WriteCloser
	Started     time.Time // QEMU started
	LoginPrompt time.Time // the console showed the login prompt

	mu     sync.Mutex
	out    bytes.Buffer // the console since the last match
	seen   *sync.Cond
	exited bool
	err    error
	seq    int
}

// Boot starts QEMU on an overlay of cfg.Image. The caller must Close the VM.
// The appliance's NIC is an E1000 (as the OVA's) on QEMU's user network
// with restrict=on: DHCP works, no packet leaves the machine.
func Boot(cfg Config) (*VM, error) {
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 4096
	}
	img, err := filepath.Abs(cfg.Image)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(img); err != nil {
		return nil, fmt.Errorf("appliance: %w (make appliance builds it)", err)
	}
	dir, err := os.MkdirTemp("", "vmctl-appliance-")
	if err != nil {
		return nil, err
	}
	overlay := filepath.Join(dir, "overlay.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img, overlay).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("appliance: overlay: %v: %s", err, out)
	}
	args := []string{
		"-accel", "tcg", "-cpu", string(cfg.CPU), "-M", "pc",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMiB),
		"-drive", "file=" + overlay + ",if=ide,format=qcow2",
		"-netdev", "user,id=n0,restrict=on", "-device", "e1000,netdev=n0",
		"-display", "none", "-monitor", "none", "-serial", "stdio",
	}
	vm := &VM{dir: dir}
	vm.seen = sync.NewCond(&vm.mu)
	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	vm.cmd.WaitDelay = 5 * time.Second
	stdout, err := vm.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var stderr bytes.Buffer
	vm.cmd.Stderr = &stderr
	if vm.stdin, err = vm.cmd.StdinPipe(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Pdeathsig fires when the starting thread exits: start QEMU from a
	// thread that lives as long as the VM (locked, it ends with the
	// goroutine only once QEMU is gone).
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		vm.Started = time.Now()
		if err := vm.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		go vm.read(stdout, cfg.Console)
		err := vm.cmd.Wait()
		vm.mu.Lock()
		vm.exited = true
		vm.err = fmt.Errorf("appliance: QEMU exited (%v): %s", err, strings.TrimSpace(stderr.String()))
		vm.seen.Broadcast()
		vm.mu.Unlock()
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("appliance: start QEMU: %w", err)
	}
	return vm, nil
}

func (vm *VM) read(r io.Reader, tee io.Writer) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if tee != nil {
				tee.Write(buf[:n])
			}
			vm.mu.Lock()
			vm.out.Write(buf[:n])
			vm.seen.Broadcast()
			vm.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// Expect waits until the console prints a match of re, and returns the
// submatches; the console up to the match's end is consumed.
func (vm *VM) Expect(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	stop := context.AfterFunc(ctx, func() {
		vm.mu.Lock()
		vm.seen.Broadcast()
		vm.mu.Unlock()
	})
	defer stop()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for {
		b := vm.out.Bytes()
		if loc := re.FindSubmatchIndex(b); loc != nil {
			var groups []string
			for i := 0; i < len(loc); i += 2 {
				if loc[i] < 0 {
					groups = append(groups, "")
					continue
				}
				groups = append(groups, string(b[loc[i]:loc[i+1]]))
			}
			vm.out.Next(loc[1])
			return groups, nil
		}
		if vm.exited {
			return nil, vm.err
		}
		if ctx.Err() != nil {
			tail := b[max(0, len(b)-2000):]
			return nil, fmt.Errorf("appliance: no %q on the console (%w); it last printed:\n%s", re, ctx.Err(), tail)
		}
		vm.seen.Wait()
	}
}

// Type sends s to the console as keystrokes.
func (vm *VM) Type(s string) error {
	_, err := io.WriteString(vm.stdin, s)
	return err
}

var (
	loginPrompt    = regexp.MustCompile(`(?m)login: *$`)
	passwordPrompt = regexp.MustCompile(`Password: *$`)
	shellPrompt    = regexp.MustCompile(`\$ *$`)
)

// Login waits for the console's login prompt and logs in as the demo user.
func (vm *VM) Login(ctx context.Context) error {
	if _, err := vm.Expect(ctx, loginPrompt); err != nil {
		return err
	}
	vm.LoginPrompt = time.Now()
	if err := vm.Type(User + "\n"); err != nil {
		return err
	}
	if _, err := vm.Expect(ctx, passwordPrompt); err != nil {
		return err
	}
	if err := vm.Type(Password + "\n"); err != nil {
		return err
	}
	if _, err := vm.Expect(ctx, shellPrompt); err != nil {
		return err
	}
	// A quiet shell: no echo of typed commands, no prompt, no bracketed
	// paste, so that the console carries only what the commands print.
	_, _, err := vm.Run(ctx, "stty -echo; PS1=; PS2=; bind 'set enable-bracketed-paste off' 2>/dev/null")
	return err
}

// Run types cmd at the logged-in shell and returns what it printed
// (stdout and stderr, carriage returns removed) and its exit status.
func (vm *VM) Run(ctx context.Context, cmd string) (string, int, error) {
	vm.mu.Lock()
	vm.seq++
	n := vm.seq
	vm.mu.Unlock()
	begin, end := fmt.Sprintf("@@begin-%d@@", n), fmt.Sprintf("@@end-%d@@", n)
	// The markers are printed from pieces, so that the echo of the typed
	// line (before stty -echo) never matches them.
	line := fmt.Sprintf("printf '%%s\\n' '@@begin-''%d@@'; { %s ; } 2>&1; printf '%%s %%d\\n' '@@end-''%d@@' $?\n", n, cmd, n)
	if err := vm.Type(line); err != nil {
		return "", -1, err
	}
	if _, err := vm.Expect(ctx, regexp.MustCompile(regexp.QuoteMeta(begin)+`\r?\n`)); err != nil {
		return "", -1, err
	}
	g, err := vm.Expect(ctx, regexp.MustCompile(`(?s)(.*?)`+regexp.QuoteMeta(end)+` (\d+)\r?\n`))
	if err != nil {
		return "", -1, err
	}
	rc, _ := strconv.Atoi(g[2])
	return strings.ReplaceAll(g[1], "\r", ""), rc, nil
}

// Close stops QEMU and removes the overlay.
func (vm *VM) Close() error {
	if vm.cmd.Process != nil {
		vm.cmd.Process.Kill()
	}
	vm.mu.Lock()
	for !vm.exited {
		vm.seen.Wait()
	}
	vm.mu.Unlock()
	return os.RemoveAll(vm.dir)
}
