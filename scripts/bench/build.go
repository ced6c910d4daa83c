package main

// Section build: image builds, vmctl build through vmctld next to Debian's
// buildah (bud --layers, its cache on; --isolation chroot, as buildah runs
// where its OCI runtime cannot: these hosts' hybrid cgroups), on the same
// five-step Dockerfile (ENV, COPY, RUN, COPY, CMD) from the same busybox,
// interleaved: a cold build (--no-cache), a rebuild with nothing changed,
// and a rebuild after a change to the file the last COPY adds. Then what
// such a change costs the next run: vmctl's first run of the rebuilt image
// (which makes its disks) next to a second one, and the disk space the
// first wrote.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func init() { sections = append(sections, section{"build", runBuild}) }

const buildBenchDockerfile = `FROM busybox
ENV APP=/app
COPY a.txt /app/a.txt
RUN echo built > /app/run.txt && rm -f /etc/group
COPY b.txt /app/b.txt
CMD ["cat", "/app/a.txt"]
`

func runBuild(n int) error {
	if os.Geteuid() != 0 {
		return skip("needs root for vmctld and buildah")
	}
	buildah, err := exec.LookPath("buildah")
	if err != nil {
		return fmt.Errorf("buildah is not installed: `make deps` installs it")
	}
	tmp, err := os.MkdirTemp("", "vmctl-bench-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	exe, err := os.MkdirTemp("", "vbb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(exe)
	ctx := filepath.Join(tmp, "ctx")
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		return err
	}
	for name, body := range map[string]string{"Dockerfile": buildBenchDockerfile, "a.txt": "a\n", "b.txt": "b\n"} {
		if err := os.WriteFile(filepath.Join(ctx, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	busybox, _ := filepath.Abs("build/busybox.tar")

	bh := func(args ...string) *exec.Cmd {
		return exec.Command(buildah, append([]string{"--root", filepath.Join(tmp, "buildah"), "--runroot", filepath.Join(exe, "br"),
			"--storage-driver", "vfs"}, args...)...)
	}
	if out, err := bh("pull", "-q", "docker-archive:"+busybox).Output(); err != nil {
		return fmt.Errorf("buildah pull: %v", err)
	} else if out, err := bh("tag", strings.TrimSpace(string(out)), "busybox").CombinedOutput(); err != nil {
		return fmt.Errorf("buildah tag: %v: %s", err, out)
	}
	defer bh("rmi", "-a", "-f").Run()

	vmctl, _ := filepath.Abs("bin/vmctl")
	sock := filepath.Join(exe, "d.sock")
	stop, err := startVmctld(sock, filepath.Join(tmp, "data"), exe)
	if err != nil {
		return err
	}
	defer stop()
	v := func(args ...string) *exec.Cmd {
		return exec.Command(vmctl, append([]string{"-H", "unix://" + sock}, args...)...)
	}
	if out, err := v("load", "-i", busybox).CombinedOutput(); err != nil {
		return fmt.Errorf("vmctl load: %v: %s", err, out)
	}

	type tool struct {
		name  string
		build func(noCache bool) *exec.Cmd
	}
	tools := []tool{
		{"buildah bud", func(noCache bool) *exec.Cmd {
			args := []string{"bud", "--isolation", "chroot", "--layers", "-q", "-t", "bench:1"}
			if noCache {
				args = append(args, "--no-cache")
			}
			return bh(append(args, ctx)...)
		}},
		{"vmctl build", func(noCache bool) *exec.Cmd {
			args := []string{"build", "-q", "-t", "bench:1"}
			if noCache {
				args = append(args, "--no-cache")
			}
			return v(append(args, ctx)...)
		}},
	}
	timed := func(c *exec.Cmd) (time.Duration, error) {
		start := time.Now()
		out, err := c.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("%v: %v: %s", c.Args, err, out)
		}
		return time.Since(start), nil
	}
	// Warm-up: each tool builds once (vmctld makes busybox's disk).
	for _, t := range tools {
		if _, err := timed(t.build(true)); err != nil {
			return err
		}
	}
	const cold, same, changed = 0, 1, 2
	times := map[string]*[3][]time.Duration{}
	for _, t := range tools {
		times[t.name] = &[3][]time.Duration{}
	}
	for i := 0; i < n; i++ {
		for j := range tools {
			t := tools[(i+j)%len(tools)]
			if err := os.WriteFile(filepath.Join(ctx, "b.txt"), []byte(fmt.Sprintf("b %d\n", i)), 0o644); err != nil {
				return err
			}
			d, err := timed(t.build(true))
			if err != nil {
				return err
			}
			times[t.name][cold] = append(times[t.name][cold], d)
			if d, err = timed(t.build(false)); err != nil {
				return err
			}
			times[t.name][same] = append(times[t.name][same], d)
			if err := os.WriteFile(filepath.Join(ctx, "b.txt"), []byte(fmt.Sprintf("b %d changed\n", i)), 0o644); err != nil {
				return err
			}
			if d, err = timed(t.build(false)); err != nil {
				return err
			}
			times[t.name][changed] = append(times[t.name][changed], d)
		}
	}
	// What a one-file change costs the next run: the first run of the
	// rebuilt image (its new layer's disk made) next to a second run of
	// it (every disk cached), and the disk space that first run wrote.
	var first, again, base []time.Duration
	var wrote, image int64
	disks := filepath.Join(tmp, "data", "disks")
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(ctx, "b.txt"), []byte(fmt.Sprintf("b %d run\n", i)), 0o644); err != nil {
			return err
		}
		if _, err := timed(tools[1].build(false)); err != nil {
			return err
		}
		before := diskUse(disks)
		d, err := timed(v("run", "--rm", "bench:1", "true"))
		if err != nil {
			return err
		}
		first = append(first, d)
		after := diskUse(disks)
		for name, size := range after {
			if _, ok := before[name]; !ok {
				wrote += size
			}
		}
		if d, err = timed(v("run", "--rm", "bench:1", "true")); err != nil {
			return err
		}
		again = append(again, d)
		if d, err = timed(v("run", "--rm", "busybox", "true")); err != nil {
			return err
		}
		base = append(base, d)
	}
	for _, size := range diskUse(disks) {
		image = max(image, size)
	}
	fmt.Printf("\nbuild: a five-step Dockerfile (ENV, COPY, RUN, COPY, CMD) on busybox; buildah bud --layers --isolation chroot (vfs) "+
		"next to vmctl build through vmctld (RUN in a microVM, %s); median of %d, interleaved\n\n", driverName(v), n)
	printHeader("buildah", "vmctl")
	for k, name := range []string{"cold build (--no-cache)", "rebuild, nothing changed", "rebuild, the last COPY's file changed"} {
		a, b := medianDur(times["buildah bud"][k]), medianDur(times["vmctl build"][k])
		printRow(name, fmt.Sprintf("%.0fms", ms(a)), fmt.Sprintf("%.0fms", ms(b)), float64(b)/float64(a))
	}
	fmt.Printf("\nthe next run after the last COPY's file changed: vmctl run --rm bench:1 true, first run (its new layer's disk made) "+
		"next to a second (all disks cached); median of %d; the first run wrote %.0f KiB of disk on average (the largest cached disk: %.0f KiB)\n\n",
		n, float64(wrote)/float64(n)/1024, float64(image)/1024)
	printHeader("second run", "first run")
	a, b := medianDur(again), medianDur(first)
	printRow("run after a one-file rebuild", fmt.Sprintf("%.0fms", ms(a)), fmt.Sprintf("%.0fms", ms(b)), float64(b)/float64(a))
	fmt.Printf("\nwhat the stack costs a run: vmctl run --rm IMAGE true of busybox (one disk) next to bench:1 (its base's disk and "+
		"one per layer above it: %d disks), both cached; median of %d\n\n", len(stackOf(v, "bench:1")), n)
	printHeader("busybox", "bench:1")
	a, b = medianDur(base), medianDur(again)
	printRow("run, disks cached", fmt.Sprintf("%.0fms", ms(a)), fmt.Sprintf("%.0fms", ms(b)), float64(b)/float64(a))
	fmt.Println()
	return nil
}

// diskUse maps each cached disk in dir to the space it takes (disks are
// sparse: allocated blocks, not length).
func diskUse(dir string) map[string]int64 {
	out := map[string]int64{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".ext4") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				out[e.Name()] = st.Blocks * 512
			}
		}
	}
	return out
}

// driverName is the hypervisor vmctld's info names.
func driverName(v func(args ...string) *exec.Cmd) string {
	out, err := v("info").Output()
	if err != nil {
		return "driver unknown"
	}
	return driverOf(string(out))
}

// stackOf is the disks a container of image gets: created, inspected,
// removed.
func stackOf(v func(args ...string) *exec.Cmd, image string) []string {
	out, err := v("create", image, "true").Output()
	if err != nil {
		return nil
	}
	id := strings.TrimSpace(string(out))
	defer v("rm", id).Run()
	out, err = v("inspect", "-f", "{{json .GraphDriver.Data}}", id).Output()
	if err != nil {
		return nil
	}
	var data map[string]string
	if json.Unmarshal(out, &data) != nil {
		return nil
	}
	return strings.Split(data["LowerDir"], ":")
}
