package main

// Section vmm-mem: VMM memory overhead on this host, the resident memory
// of the VMM process outside guest RAM (summed from /proc/PID/smaps), for
// the same guest: kernel, initrd, 256 MiB, 1 vCPU, serial console only.
//
// This host's /dev/kvm cannot boot Linux, so the comparable point here is
// "VM built, not booted": vmctl-vmm -wait-start (guest RAM mapped, kernel
// and initrd loaded, vCPU and devices created) against QEMU -S (the same,
// paused before the first instruction). vmctl-vmm refuses to build a VM on
// a PVM host (exit 3) and has no flag to skip that check, so on such a host
// it runs in a private mount namespace whose /proc/cpuinfo shows the svm
// flag and whose /sys/module hides kvm_pvm: the unchanged binary, fooled
// only in what it reads for the check. QEMU booted under TCG is shown for
// context; the booted comparison on KVM is in section vmm-nested.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
	"github.com/vmctl/vmctl/hypervisor/machine"
)

func init() { sections = append(sections, section{"vmm-mem", runMem}) }

const memGuestMiB = 256

func runMem(n int) error {
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
	tmp, err := os.MkdirTemp("", "vmctl-bench-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	vmmArgs := []string{vmm, "-kernel", kernel, "-initrd", initrd, "-memory", fmt.Sprint(memGuestMiB),
		"-console", "", "-wait-start", "-control", filepath.Join(tmp, "vmm.sock")}
	masked := false
	if err := machine.DefaultHost.CheckHost(); errors.Is(err, machine.ErrNoKVM) {
		return skip("%v", err)
	} else if errors.Is(err, machine.ErrKVMCannotRunGuests) {
		if vmmArgs, err = maskedHostArgs(tmp, vmmArgs); err != nil {
			return err
		}
		masked = true
	} else if err != nil {
		return fmt.Errorf("vmctl-vmm cannot run here: %w", err)
	}
	qemuBase := qemu.BareArgs("tcg", 1, memGuestMiB, kernel, initrd, []string{contract.SelftestFlag})
	qemuPaused := append(append([]string{"qemu-system-x86_64"}, qemuBase...), "-S",
		"-qmp", "unix:"+filepath.Join(tmp, "qmp.sock")+",server=on,wait=off")
	qemuBooted := append([]string{"qemu-system-x86_64"}, qemuBase...)

	var vmms, paused, booted []vmmMemory
	for i := 0; i < n; i++ {
		v, err := memBuilt(vmmArgs, filepath.Join(tmp, "vmm.sock"), "")
		if err != nil {
			return fmt.Errorf("vmctl-vmm -wait-start: %w", err)
		}
		q, err := memBuilt(qemuPaused, filepath.Join(tmp, "qmp.sock"), `{"QMP"`)
		if err != nil {
			return fmt.Errorf("QEMU -S: %w", err)
		}
		b, err := memBooted(qemuBooted)
		if err != nil {
			return fmt.Errorf("QEMU TCG boot: %w", err)
		}
		vmms, paused, booted = append(vmms, v), append(paused, q), append(booted, b)
	}
	how := ""
	if masked {
		how = "; vmctl-vmm's PVM host check masked in a private mount namespace"
	}
	fmt.Printf("\nVMM memory outside guest RAM (smaps Rss, %d MiB guest, same kernel+initrd, serial only; median of %d, interleaved%s)\n\n", memGuestMiB, n, how)
	printHeader("QEMU", "vmctl-vmm")
	row := func(name string, peer, ours []vmmMemory, pick func(vmmMemory) uint64) {
		p, o := medianKB(peer, pick), medianKB(ours, pick)
		ratio := 0.0 // no ratio to nothing
		if p > 0 {
			ratio = float64(o) / float64(p)
		}
		printRow(name, fmt.Sprintf("%.1fMiB", mib(p)), fmt.Sprintf("%.1fMiB", mib(o)), ratio)
	}
	rss := func(m vmmMemory) uint64 { return m.RSS }
	row("RSS outside RAM, built not booted (<= 8 MiB)", paused, vmms, rss)
	row("PSS outside RAM, built not booted", paused, vmms, func(m vmmMemory) uint64 { return m.PSS })
	// QEMU keeps kernel and initrd in fw_cfg buffers (counted above) and
	// copies them into RAM only when the guest runs; vmctl-vmm loads them
	// into guest RAM while building.
	row("guest RAM resident, built not booted", paused, vmms, func(m vmmMemory) uint64 { return m.GuestRSS })
	printRow("RSS outside RAM, QEMU TCG at agent ready", fmt.Sprintf("%.1fMiB", mib(medianKB(booted, rss))), "n/a (PVM)", 0)
	fmt.Println()
	return nil
}

// maskedHostArgs wraps args so that they run in a private mount namespace
// where /proc/cpuinfo has the svm flag and /sys/module is empty (no
// kvm_pvm). Only the files CheckHost reads change; /dev/kvm is the real one.
func maskedHostArgs(tmp string, args []string) ([]string, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not root: masking vmctl-vmm's host check needs a mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return nil, errors.New("unshare (util-linux) is not installed")
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil, err
	}
	flags := regexp.MustCompile(`(?m)^(flags\s*:)`)
	fake := filepath.Join(tmp, "cpuinfo")
	if err := os.WriteFile(fake, flags.ReplaceAll(info, []byte("$1 svm")), 0o644); err != nil {
		return nil, err
	}
	// unshare without --fork execs sh, which execs the VMM: one PID.
	script := `c=$1; shift; mount --bind "$c" /proc/cpuinfo && mount -t tmpfs none /sys/module && exec "$@"`
	return append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", fake}, args...), nil
}

// memBuilt starts args, waits until its control socket answers (for QEMU:
// sends a line containing greeting, which QMP does once the machine is
// built), reads its smaps and ends it.
func memBuilt(args []string, sock, greeting string) (vmmMemory, error) {
	os.Remove(sock)
	cmd := exec.Command(args[0], args[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	p, err := startProc(cmd)
	if err != nil {
		return vmmMemory{}, err
	}
	defer p.stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ready(sock, greeting) {
			break
		}
		select {
		case <-p.done:
			return vmmMemory{}, fmt.Errorf("exited before it was ready: %s", strings.TrimSpace(stderr.String()))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return vmmMemory{}, errors.New("not ready within 30s")
		}
	}
	return readSmaps(cmd.Process.Pid, memGuestMiB<<20)
}

func ready(sock, greeting string) bool {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return false
	}
	defer c.Close()
	if greeting == "" {
		return true
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.Contains(line, greeting)
}

// memBooted boots QEMU with the agent's selftest, freezes it (SIGSTOP)
// when the agent prints its ready line, before the selftest reboots the
// guest, and reads its smaps.
func memBooted(args []string) (vmmMemory, error) {
	cmd := exec.Command(args[0], args[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return vmmMemory{}, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	p, err := startProc(cmd)
	if err != nil {
		return vmmMemory{}, err
	}
	defer p.stop()
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if !firstLineWith(bufio.NewScanner(out), contract.SelftestReadyLine) {
		return vmmMemory{}, fmt.Errorf("agent never printed its ready line: %s", strings.TrimSpace(stderr.String()))
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return vmmMemory{}, err
	}
	m, err := readSmaps(cmd.Process.Pid, memGuestMiB<<20)
	cmd.Process.Signal(syscall.SIGCONT)
	go func() { _, _ = bufio.NewReader(out).WriteTo(discard{}) }()
	return m, err
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// proc is a started process reaped by its own goroutine.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once reaped
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // how it ended does not matter once measured
		close(p.done)
	}()
	return p, nil
}

// stop ends the process (SIGTERM, then SIGKILL after 5 s) and waits until
// it is reaped.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func medianKB(v []vmmMemory, pick func(vmmMemory) uint64) uint64 {
	s := make([]sample, len(v))
	for i, m := range v {
		s[i] = sample{first: time.Duration(pick(m))}
	}
	return uint64(median(s, func(x sample) time.Duration { return x.first }))
}
