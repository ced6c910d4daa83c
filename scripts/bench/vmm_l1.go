package main

// The L1 side of section vmm-nested. The bench binary itself is copied into
// the nested L1 and started there with VMCTL_BENCH_L1=1 in its environment;
// init then runs the boot loop below instead of main (a re-exec of the same
// program, so the smaps accounting is the very code the host side uses).
// It boots the guest n times under each VMM, alternating, and prints one
// line per boot:
//
//	VMMBOOT vmm=<qemu|vmctl-vmm> health_ms=<ms> exit_ms=<ms> rss_kb=<kB> pss_kb=<kB> guest_kb=<kB>
//
// health_ms: process start to the agent's answer to Health over its
// channel (hybrid vsock under vmctl-vmm, virtio-serial under QEMU);
// rss_kb/pss_kb: the VMM's memory outside guest RAM right then;
// exit_ms: process start to its exit after the agent's Shutdown.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/engine/sandbox/vmm"
	"github.com/vmctl/vmctl/internal/hybridvsock"
)

// l1RetryInterval is the pause between attempts to reach the agent; it
// bounds the resolution of health_ms.
var l1RetryInterval = 50 * time.Millisecond

// l1Env selects the L1 mode.
const l1Env = "VMCTL_BENCH_L1"

func init() {
	if os.Getenv(l1Env) == "" {
		return
	}
	if err := runL1(os.Args[1:]); err != nil {
		fmt.Printf("vmm-nested: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type l1Opts struct {
	n              int
	kernel, initrd string
	vmm, qemu      string
	memMiB         int
	timeout        time.Duration
}

func runL1(args []string) error {
	var o l1Opts
	fs := flag.NewFlagSet("vmm-nested-l1", flag.ContinueOnError)
	fs.IntVar(&o.n, "n", 5, "boots per VMM")
	fs.StringVar(&o.kernel, "kernel", "", "guest kernel")
	fs.StringVar(&o.initrd, "initrd", "", "guest initramfs (the project's agent image)")
	fs.StringVar(&o.vmm, "vmm", "vmctl-vmm", "vmctl-vmm binary")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "QEMU binary")
	fs.IntVar(&o.memMiB, "memory", memGuestMiB, "guest RAM in MiB")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "time allowed per boot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "vmmboot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// A VMM that fails once is not retried (each failure costs the whole
	// timeout); the other one is still measured, so the table shows both.
	failed := map[string]bool{}
	// The drivers' restore paths: each template saved once, first.
	restorers := map[string]*l1Restorer{}
	for _, kind := range []string{"qemu-restored", "vmctl-vmm-restored"} {
		r, err := newL1Restorer(o, tmp, kind)
		if err == nil {
			err = r.save()
		}
		if err != nil {
			failed[kind] = true
			fmt.Printf("VMMBOOT-FAIL vmm=%s boot=0 %s\n", kind, strings.Join(strings.Fields(err.Error()), " "))
			continue
		}
		restorers[kind] = r
	}
	for i := 0; i < o.n; i++ {
		for _, kind := range []string{"qemu", "vmctl-vmm", "qemu-restored", "vmctl-vmm-restored"} {
			if failed[kind] {
				continue
			}
			var line string
			var err error
			if r := restorers[kind]; r != nil {
				line, err = r.boot(i)
			} else {
				line, err = l1Boot(o, kind, tmp)
			}
			if err != nil {
				failed[kind] = true
				// One line: the host side reads it back as the reason.
				fmt.Printf("VMMBOOT-FAIL vmm=%s boot=%d %s\n", kind, i+1, strings.Join(strings.Fields(err.Error()), " "))
				continue
			}
			fmt.Println(line)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d VMM(s) failed", len(failed))
	}
	return nil
}

// l1Boot boots the guest once under kind and returns its VMMBOOT line.
func l1Boot(o l1Opts, kind, tmp string) (string, error) {
	sock := filepath.Join(tmp, kind+".sock")
	os.Remove(sock)
	var cmd *exec.Cmd
	var dial func(context.Context) (net.Conn, error)
	switch kind {
	case "qemu":
		// The QEMU driver's machine (engine/sandbox/qemu) on L1's KVM, with
		// its agent channel, as in the harness's reference scenario.
		cmd = exec.Command(o.qemu, "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host",
			"-m", fmt.Sprint(o.memMiB), "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
			"-serial", "stdio", "-kernel", o.kernel, "-initrd", o.initrd,
			"-append", "console=ttyS0 reboot=t panic=-1 quiet",
			"-global", "virtio-mmio.force-legacy=false", "-device", "virtio-serial-device,max_ports=2",
			"-chardev", "socket,id=agent,path="+sock+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+contract.SerialPortName)
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
	default:
		cmd = exec.Command(o.vmm, "-kernel", o.kernel, "-initrd", o.initrd,
			"-memory", fmt.Sprint(o.memMiB), "-vsock-uds", sock, "-console", sock+".console")
		cmd.Env = vmm.Env(os.Environ()) // as the engine starts it
		dial = func(ctx context.Context) (net.Conn, error) { return hybridvsock.Dial(ctx, sock, contract.VsockPort) }
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	start := time.Now()
	p, err := startProc(cmd)
	if err != nil {
		return "", err
	}
	defer p.stop()
	var conn net.Conn
	for conn == nil {
		if conn, err = dial(ctx); err == nil {
			break
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("exited before the agent answered: %s", strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			return "", fmt.Errorf("agent unreachable: %w", err)
		case <-time.After(l1RetryInterval):
		}
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	api := agentapi.NewTTRPCAgentClient(tc)
	if _, err := api.Health(ctx, &agentapi.HealthRequest{}); err != nil {
		con, _ := os.ReadFile(sock + ".console")
		return "", fmt.Errorf("Health: %w; stderr: %s; console: %s", err, strings.TrimSpace(stderr.String()), tailLines(string(con), 15))
	}
	health := time.Since(start)
	mem, err := readSmaps(cmd.Process.Pid, uint64(o.memMiB)<<20)
	if err != nil {
		return "", err
	}
	if _, err := api.Shutdown(ctx, &agentapi.ShutdownRequest{}); err != nil {
		return "", fmt.Errorf("Shutdown: %w", err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return "", errors.New("did not exit after the agent's Shutdown")
	}
	if !cmd.ProcessState.Success() {
		return "", fmt.Errorf("exited with %v: %s", cmd.ProcessState, strings.TrimSpace(stderr.String()))
	}
	return fmt.Sprintf("VMMBOOT vmm=%s health_ms=%d exit_ms=%d rss_kb=%d pss_kb=%d guest_kb=%d", kind,
		health.Milliseconds(), time.Since(start).Milliseconds(), mem.RSS, mem.PSS, mem.GuestRSS), nil
}

// l1Sample is one parsed VMMBOOT line.
type l1Sample struct {
	vmm                  string
	health, exit         time.Duration
	rss, pss, guestResKB uint64
}

// parseL1Output collects the VMMBOOT lines of the scenario's output, and
// the VMMBOOT-FAIL lines by VMM.
func parseL1Output(out string) ([]l1Sample, map[string]string, error) {
	var samples []l1Sample
	failures := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "VMMBOOT-FAIL vmm="); ok {
			vmm, why, _ := strings.Cut(rest, " ")
			failures[vmm] = why
			continue
		}
		_, rest, ok := strings.Cut(sc.Text(), "VMMBOOT ")
		if !ok {
			continue
		}
		var s l1Sample
		var health, exit int64
		if _, err := fmt.Sscanf(strings.TrimSpace(rest), "vmm=%s health_ms=%d exit_ms=%d rss_kb=%d pss_kb=%d guest_kb=%d",
			&s.vmm, &health, &exit, &s.rss, &s.pss, &s.guestResKB); err != nil {
			return nil, nil, fmt.Errorf("bad result line %q: %w", sc.Text(), err)
		}
		s.health, s.exit = time.Duration(health)*time.Millisecond, time.Duration(exit)*time.Millisecond
		samples = append(samples, s)
	}
	return samples, failures, sc.Err()
}
