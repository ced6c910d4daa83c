package kernelconfig

import (
	"bytes"
	"context"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// guestInit is PID 1 of the test guest: a busybox shell script that runs the
// checks named by vmctl.mode= and prints one VMCTL-OK/VMCTL-FAIL line each.
//
//go:embed testdata/guest-init.sh
var guestInit []byte

// fullChecks are the checks guest-init.sh runs in mode "full"; each must print VMCTL-OK.
var fullChecks = []string{
	"init", "uart16550a", "smp", "virtio-blk-serial", "ext4", "virtio-serial-port",
	"virtio-console", "virtio-net", "ipv4-config", "ipv6", "af-packet", "virtio-rng", "vsock-core", "devpts", "overlay-tmpfs",
	"overlay-ext4-upper", "cgroup2-controllers", "cgroup-oom-kill", "cgroup-pids",
	"namespaces", "user-namespace", "sysvipc",
}

const (
	guestDir     = "../bin/guest"
	busyboxPath  = "/bin/busybox"
	bootTimeout  = 3 * time.Minute // TCG on a loaded 2-core CI machine; a normal boot takes ~2 s
	panicMessage = "Kernel panic - not syncing"
)

// requireFile skips when an artifact is missing, or fails under VMCTL_E2E=1
// (set by `make test`), where every prerequisite must be present.
func requireFile(t *testing.T, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("VMCTL_E2E") != "" {
			t.Fatalf("%s is missing (%v): %s", path, err, hint)
		}
		t.Skipf("%s is missing: %s", path, hint)
	}
}

func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("VMCTL_E2E") != "" {
			t.Fatalf("%s not found: install %s (scripts/install-deps.sh)", name, pkg)
		}
		t.Skipf("%s not found: install %s (scripts/install-deps.sh)", name, pkg)
	}
	return p
}

// TestGuestKernelBoots boots the installed guest kernel (bin/guest, from
// `make kernel`) under QEMU's microvm with TCG, the way the QEMU sandbox driver
// does, and checks every feature the agent and containers rely on.
func TestGuestKernelBoots(t *testing.T) {
	requireFile(t, filepath.Join(guestDir, "vmlinuz"), "run `make kernel`")
	requireFile(t, filepath.Join(guestDir, "vmlinux"), "run `make kernel`")
	requireFile(t, filepath.Join(guestDir, "kernel.release"), "run `make kernel`")
	requireFile(t, busyboxPath, "install busybox-static")
	qemu := requireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	mkfs := requireTool(t, "mkfs.ext4", "e2fsprogs")
	if err := checkStatic(busyboxPath); err != nil {
		t.Fatalf("%s cannot run as the guest's init: %v (install busybox-static)", busyboxPath, err)
	}
	release, err := os.ReadFile(filepath.Join(guestDir, "kernel.release"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		kernel    string // file in bin/guest
		gzip      bool   // initramfs compression
		mode      string // vmctl.mode= for guest-init.sh
		cmdline   string // extra kernel parameters
		smp       int
		devices   bool
		wantOK    []string
		wantPanic bool
	}{
		// bzImage, gzip initramfs, every device the engine attaches.
		{name: "bzImage/full", kernel: "vmlinuz", gzip: true, mode: "full", smp: 2, devices: true, wantOK: fullChecks},
		// PVH entry of the ELF vmlinux, uncompressed initramfs; init exits, panic=-1 must end the VM.
		// quiet, as the QEMU driver boots: the panic and the agent's /dev/kmsg lines must still show.
		{name: "vmlinux-pvh/panic", kernel: "vmlinux", mode: "panic", cmdline: "quiet", smp: 1, wantOK: []string{"init"}, wantPanic: true},
	}
	// Give the guest the host's TSC rate (TCG's guest TSC runs at it), as the
	// README recommends for TCG, and check that the guest then uses the TSC.
	if khz := hostTSCkHz(); khz != 0 {
		tests[0].cmdline += fmt.Sprintf(" tsc_early_khz=%d", khz)
		tests[0].wantOK = append(tests[0].wantOK, "clocksource-tsc")
	} else {
		t.Logf("host TSC rate unknown (no tsc_known_freq in /proc/cpuinfo): not checking the guest clocksource")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			initrd := filepath.Join(dir, "initramfs.cpio")
			if err := writeInitramfs(initrd, tt.gzip); err != nil {
				t.Fatal(err)
			}
			args := []string{
				"-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max",
				"-smp", fmt.Sprint(tt.smp), "-m", "256",
				"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
				"-kernel", filepath.Join(guestDir, tt.kernel), "-initrd", initrd,
				"-append", "console=ttyS0 reboot=t panic=-1 tsc=reliable no_timer_check vmctl.mode=" + tt.mode + " " + tt.cmdline,
			}
			hvcOut := filepath.Join(dir, "hvc0.out")
			if tt.devices {
				disk, err := makeDisk(mkfs, dir)
				if err != nil {
					t.Fatal(err)
				}
				args = append(args,
					"-drive", "id=disk,file="+disk+",format=raw,if=none",
					"-device", "virtio-blk-device,drive=disk,serial=imagedisk",
					"-device", "virtio-serial-device",
					"-chardev", "null,id=agent",
					"-device", "virtserialport,chardev=agent,name=vmctl.agent",
					"-chardev", "file,id=hvc,path="+hvcOut,
					"-device", "virtconsole,chardev=hvc",
					// A hub with no other port: the NIC exists, no packet leaves QEMU.
					"-netdev", "hubport,id=net0,hubid=0",
					"-device", "virtio-net-device,netdev=net0",
					"-device", "virtio-rng-device",
				)
			}

			console, err := runQEMU(qemu, args)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("guest console:\n%s", console)
				}
			})
			if err != nil {
				t.Fatalf("QEMU did not exit cleanly after the guest rebooted: %v", err)
			}
			for _, name := range tt.wantOK {
				if !bytes.Contains(console, []byte("VMCTL-OK "+name+"\n")) && !bytes.Contains(console, []byte("VMCTL-OK "+name+"\r\n")) {
					t.Errorf("check %q did not pass", name)
				}
			}
			for _, m := range regexp.MustCompile(`VMCTL-FAIL [^\r\n]*`).FindAll(console, -1) {
				t.Errorf("%s", m)
			}
			if got := guestValue(console, "VMCTL-RELEASE"); got != strings.TrimSpace(string(release)) {
				t.Errorf("guest uname -r = %q, want kernel.release %q", got, strings.TrimSpace(string(release)))
			}
			if tt.wantPanic != bytes.Contains(console, []byte(panicMessage)) {
				t.Errorf("console contains %q = %v, want %v", panicMessage, !tt.wantPanic, tt.wantPanic)
			}
			if !bytes.Contains(console, []byte("] VMCTL-KMSG from pid 1")) {
				t.Errorf("an unprefixed /dev/kmsg line did not reach the console")
			}
			if !tt.wantPanic && !bytes.Contains(console, []byte("VMCTL-DONE")) {
				t.Errorf("guest init did not finish")
			}
			if tt.devices {
				if out, _ := os.ReadFile(hvcOut); !bytes.Contains(out, []byte("console-ok")) {
					t.Errorf("hvc0 output = %q, want console-ok", out)
				}
			}
			t.Logf("guest uptime at init: %ss", guestValue(console, "VMCTL-UPTIME"))
		})
	}
}

// hostTSCkHz returns the host's TSC rate in kHz from /proc/cpuinfo, or 0 when
// "cpu MHz" is not known to be the TSC rate (tsc_known_freq: no frequency scaling
// of the TSC, as on a KVM guest host).
func hostTSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !bytes.Contains(b, []byte(" tsc_known_freq")) {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || mhz <= 0 {
			return 0
		}
		return int(math.Round(mhz * 1000))
	}
	return 0
}

// runQEMU runs QEMU to completion and returns the serial console output.
func runQEMU(qemu string, args []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.Bytes(), fmt.Errorf("guest still running after %v: %w", bootTimeout, ctx.Err())
	}
	return out.Bytes(), err
}

// guestValue returns the rest of the console line that starts with key.
func guestValue(console []byte, key string) string {
	for _, line := range strings.Split(string(console), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), key+" "); ok {
			return v
		}
	}
	return ""
}

// makeDisk creates an ext4 image holding hello.txt, as the engine's image disks do.
func makeDisk(mkfs, dir string) (string, error) {
	content := filepath.Join(dir, "disk-content")
	if err := os.MkdirAll(content, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(content, "hello.txt"), []byte("hello from ext4\n"), 0o644); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		return "", err
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", content, img).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4: %w: %s", err, out)
	}
	return img, nil
}

// checkStatic fails for a dynamically linked binary, which cannot run in an
// initramfs that holds no libraries.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}
