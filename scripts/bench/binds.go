package main

// Section binds: a bind mount of a host directory next to a named volume
// in the same run, through vmctl on QEMU: a metadata-heavy walk (find over
// 10,000 files in 100 directories, in a VM that has not seen them), making
// those files, and sequential write (64 MiB, fsync) and read (in a fresh
// VM) throughput. Timed inside the guest (/proc/uptime, 10 ms steps), so
// VM boots are not counted. Bind mounts go over virtio-fs (virtiofsd); the
// second table measures QEMU's own virtio-9p on the same work, the
// alternative design.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
)

func init() { sections = append(sections, section{"binds", runBinds}) }

// bindsScript runs one phase on /t and prints "name seconds" lines.
const bindsScript = `t() { awk '{print $1}' /proc/uptime; }
d=/t/r$1
case $2 in
make)
	mkdir $d; t0=$(t)
	for i in $(seq 100); do mkdir $d/d$i; for j in $(seq 100); do : > $d/d$i/f$j; done; done
	t1=$(t); echo "make $t0 $t1"
	t0=$(t); dd if=/dev/zero of=$d/big bs=1M count=64 conv=fsync 2>/dev/null || exit 1; t1=$(t); echo "write $t0 $t1"
	;;
walk)
	t0=$(t); n=$(find $d | wc -l); t1=$(t); [ "$n" = 10102 ] || { echo "walk found $n"; exit 1; }; echo "walk $t0 $t1"
	t0=$(t); cat $d/big >/dev/null || exit 1; t1=$(t); echo "read $t0 $t1"
	;;
esac`

func runBinds(n int) error {
	if os.Geteuid() != 0 {
		return skip("needs root (virtiofsd, the bind mounts' host side)")
	}
	if _, err := exec.LookPath(qemu.Binary); err != nil {
		return skip("QEMU is not installed")
	}
	tmp, err := os.MkdirTemp("", "vmctl-bench-binds-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	exe, err := os.MkdirTemp("", "vbm")
	if err != nil {
		return err
	}
	defer os.RemoveAll(exe)
	vmctl, _ := filepath.Abs("bin/vmctl")
	busybox, _ := filepath.Abs("build/busybox.tar")
	v := func(env []string, args ...string) *exec.Cmd {
		c := exec.Command(vmctl, append([]string{"--data-root", filepath.Join(tmp, "data"), "--exec-root", exe}, args...)...)
		c.Env = append(os.Environ(), env...)
		return c
	}
	if out, err := v(nil, "load", "-i", busybox).CombinedOutput(); err != nil {
		return fmt.Errorf("vmctl load: %v: %s", err, out)
	}
	if out, err := v(nil, "volume", "create", "benchvol").CombinedOutput(); err != nil {
		return fmt.Errorf("vmctl volume create: %v: %s", err, out)
	}
	type target struct {
		name, mount string
		env         []string
	}
	var targets []target
	targets = append(targets, target{"volume", "benchvol:/t", nil})
	for _, fs := range []string{sandbox.ShareVirtioFS, sandbox.Share9P} {
		dir := filepath.Join(tmp, "host-"+fs)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		targets = append(targets, target{"bind " + fs, dir + ":/t", []string{qemu.ShareFSEnv + "=" + fs}})
	}
	phase := func(tg target, rep int, what string) (map[string]time.Duration, error) {
		c := v(tg.env, "run", "--rm", "--hypervisor", "qemu", "--network", "none", "-v", tg.mount,
			"busybox", "sh", "-c", bindsScript, "sh", strconv.Itoa(rep), what)
		out, err := c.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v: %s", tg.name, what, err, out)
		}
		got := map[string]time.Duration{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue
			}
			a, err1 := strconv.ParseFloat(f[1], 64)
			b, err2 := strconv.ParseFloat(f[2], 64)
			if err1 == nil && err2 == nil {
				got[f[0]] = time.Duration((b - a) * float64(time.Second))
			}
		}
		return got, nil
	}
	reps := min(n, 3)
	times := map[string]map[string][]time.Duration{} // target -> measure -> samples
	for _, tg := range targets {
		times[tg.name] = map[string][]time.Duration{}
	}
	for rep := 0; rep < reps; rep++ {
		for _, what := range []string{"make", "walk"} {
			for _, tg := range targets {
				got, err := phase(tg, rep, what)
				if err != nil {
					return err
				}
				for k, d := range got {
					times[tg.name][k] = append(times[tg.name][k], d)
				}
			}
		}
	}
	med := func(tg, k string) time.Duration {
		s := append([]time.Duration(nil), times[tg][k]...)
		if len(s) == 0 {
			return 0
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	rows := []struct{ key, name string }{
		{"walk", "find over 10,000 files, cold (metadata)"},
		{"make", "make 10,000 files in 100 directories"},
		{"write", "write 64 MiB, fsync"},
		{"read", "read 64 MiB, cold"},
	}
	table := func(peer, ours string) {
		printHeader(peer, ours)
		for _, r := range rows {
			a, b := med(peer, r.key), med(ours, r.key)
			ratio := 0.0
			if a > 0 {
				ratio = float64(b) / float64(a)
			}
			printRow(r.name, fmt.Sprintf("%.0fms", ms(a)), fmt.Sprintf("%.0fms", ms(b)), ratio)
		}
	}
	fmt.Printf("\nbinds: a bind mount of a host directory (virtio-fs, virtiofsd) next to a named volume (ext4 on virtio-blk), "+
		"vmctl run on QEMU, timed in the guest; median of %d, interleaved (targets: metadata within 3x, throughput within 1.5x)\n\n", reps)
	table("volume", "bind virtiofs")
	fmt.Printf("\nthe alternative: the same bind mount over QEMU's virtio-9p (9p2000.L, cache=mmap, msize 500 KB) next to virtio-fs; " +
		"same runs\n\n")
	table("bind virtiofs", "bind 9p")
	fmt.Println()
	return nil
}
