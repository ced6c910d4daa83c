package main

// Section start: a container's whole run, from the client's start to its
// exit, on the fast path (the VM started from the saved guest) and the
// cold one (booted), against the peers users compare with:
//
//   - through the docker CLI, `docker run --rm --network none busybox true`
//     against dockerd with runc and with gVisor's runsc as its runtime, and
//     against vmctld, restored (its default) and cold-booted (the
//     io.vmctl.cold-boot label). dockerd is Debian's docker.io, downloaded
//     with apt and unpacked into a cache outside the tree, never installed
//     (installing it would start a dockerd of the machine's), and started
//     by the bench on roots and a socket of its own, with no bridge and no
//     iptables rules;
//   - in process, `vmctl run --rm busybox true` restored and cold-booted,
//     against `runsc run` of the same busybox tree as an OCI bundle.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func init() { sections = append(sections, section{"start", runStart}) }

// dockerdEnv carries the unpacked dockerd from outside the bench's network
// namespace (where apt reaches the archive) into it.
const dockerdEnv = "VMCTL_BENCH_DOCKERD"

// prepareDockerd downloads Debian's docker.io and unpacks it into the
// cache, once per version, and returns the unpacked tree's usr/sbin/dockerd.
func prepareDockerd() (string, error) {
	cache := os.Getenv("VMCTL_CACHE_DIR")
	if cache == "" {
		cache = "/var/cache/vmctl"
	}
	out, err := exec.Command("apt-cache", "policy", "docker.io").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy docker.io: %v", err)
	}
	version := ""
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "Candidate" {
			version = strings.TrimSpace(v)
		}
	}
	if version == "" || version == "(none)" {
		return "", errors.New("apt knows no docker.io package (apt-get update?)")
	}
	dir := filepath.Join(cache, "docker.io", strings.NewReplacer(":", "_", "/", "_").Replace(version))
	dockerd := filepath.Join(dir, "root", "usr", "sbin", "dockerd")
	if _, err := os.Stat(dockerd); err == nil {
		return dockerd, nil
	}
	work, err := os.MkdirTemp(filepath.Join(cache), ".docker.io-")
	if err != nil {
		if err := os.MkdirAll(cache, 0o755); err != nil {
			return "", err
		}
		if work, err = os.MkdirTemp(cache, ".docker.io-"); err != nil {
			return "", err
		}
	}
	defer os.RemoveAll(work)
	dl := exec.Command("apt-get", "download", "-q", "docker.io="+version)
	dl.Dir = work
	if b, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download docker.io: %v: %s", err, oneLine(string(b)))
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return "", errors.New("apt-get download docker.io left no package")
	}
	if b, err := exec.Command("dpkg-deb", "-x", debs[0], filepath.Join(work, "root")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x: %v: %s", err, oneLine(string(b)))
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(work, dir); err != nil {
		return "", err
	}
	return dockerd, nil
}

// startDockerd runs dockerd on roots of its own under dir, with runsc as a
// runtime, and returns its socket and how to stop it.
func startDockerd(dockerd, dir, runsc string) (sock string, stop func(), err error) {
	sock = filepath.Join(dir, "docker.sock")
	bin := filepath.Dir(dockerd)
	args := []string{"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"-H", "unix://" + sock, "--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false"}
	if runsc != "" {
		args = append(args, "--add-runtime", "runsc="+runsc)
	}
	d := exec.Command(dockerd, args...)
	// Its docker-init and docker-proxy beside it; containerd and runc
	// from Debian's packages.
	d.Env = append(os.Environ(), "PATH="+bin+":"+filepath.Join(filepath.Dir(filepath.Dir(bin)), "usr", "bin")+":"+os.Getenv("PATH"))
	var log strings.Builder
	d.Stdout, d.Stderr = &log, &log
	if err := d.Start(); err != nil {
		return "", nil, err
	}
	stop = func() { d.Process.Signal(os.Interrupt); d.Wait() }
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, stop, nil
		}
		if i == 400 {
			stop()
			return "", nil, fmt.Errorf("dockerd did not listen: %s", oneLine(log.String()))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func runStart(n int) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	vmctl := filepath.Join(root, "bin/vmctl")
	docker, err := exec.LookPath("docker")
	if err != nil {
		return skip("the docker CLI is not installed: `make deps` installs Debian's")
	}
	dockerd := os.Getenv(dockerdEnv)
	if dockerd == "" {
		return skip("no dockerd to compare with: Debian's docker.io could not be downloaded")
	}
	if err := mountCgroups(); err != nil {
		return skip("dockerd needs the cgroup hierarchy: %v", err)
	}
	runsc, _ := exec.LookPath("runsc")
	tmp, err := os.MkdirTemp("", "vmctl-bench-start-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Deferred before dockerd's stop, so it runs after it.
	defer killLeftovers(tmp)
	runscRuntime := ""
	if runsc != "" {
		// dockerd's --add-runtime takes a path only: runsc with its own
		// network stack off, as --network none asks (it would otherwise
		// look for interfaces to take over in the container's namespace).
		runscRuntime = filepath.Join(tmp, "runsc-none")
		script := fmt.Sprintf("#!/bin/sh\nexec %s --network=none \"$@\"\n", runsc)
		if err := os.WriteFile(runscRuntime, []byte(script), 0o755); err != nil {
			return err
		}
	}
	dsock, stopDockerd, err := startDockerd(dockerd, filepath.Join(tmp, "dockerd"), runscRuntime)
	if err != nil {
		return err
	}
	defer stopDockerd()
	dataRoot := filepath.Join(tmp, "vmctl")
	execRoot, err := os.MkdirTemp("", "vbs")
	if err != nil {
		return err
	}
	defer os.RemoveAll(execRoot)
	if out, err := exec.Command(vmctl, "--data-root", dataRoot, "load", "-i", "build/busybox.tar").CombinedOutput(); err != nil {
		return fmt.Errorf("load busybox for vmctld: %v: %s", err, out)
	}
	vsock := filepath.Join(execRoot, "d.sock")
	stopVmctld, err := startVmctld(vsock, dataRoot, execRoot)
	if err != nil {
		return err
	}
	defer stopVmctld()
	dockerCmd := func(sock string, args ...string) func(int) *exec.Cmd {
		return func(int) *exec.Cmd {
			c := exec.Command(docker, args...)
			c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+sock, "DOCKER_CONFIG="+filepath.Join(tmp, "docker-config"))
			return c
		}
	}
	if out, err := dockerCmd(dsock, "load", "-i", "build/busybox.tar")(0).CombinedOutput(); err != nil {
		return fmt.Errorf("docker load into dockerd: %v: %s", err, out)
	}
	run := []string{"run", "--rm", "--network", "none"}
	noop := func(int) {}
	runcPeer := &shimPeer{name: "dockerd + runc", cmd: dockerCmd(dsock, append(run, "busybox", "true")...), cleanup: noop}
	gvisor := &shimPeer{name: "dockerd + runsc (gVisor)", cleanup: noop}
	if runsc == "" {
		gvisor.why = "runsc is not installed: `make deps` installs Debian's"
	} else {
		gvisor.cmd = dockerCmd(dsock, append(run, "--runtime", "runsc", "busybox", "true")...)
	}
	restored := &shimPeer{name: "vmctld, restored", cmd: dockerCmd(vsock, append(run, "busybox", "true")...), cleanup: noop}
	cold := &shimPeer{name: "vmctld, cold boot", cmd: dockerCmd(vsock, append(run, "--label", "io.vmctl.cold-boot=true", "busybox", "true")...), cleanup: noop}
	viaDocker := []*shimPeer{runcPeer, gvisor, restored, cold}

	// In process: the same busybox tree as an OCI bundle under runsc.
	inRestored := &shimPeer{name: "vmctl run, restored", cleanup: noop, cmd: func(int) *exec.Cmd {
		return exec.Command(vmctl, "--data-root", dataRoot, "--exec-root", execRoot, "run", "--rm", "busybox", "true")
	}}
	inCold := &shimPeer{name: "vmctl run --cold-boot", cleanup: noop, cmd: func(int) *exec.Cmd {
		return exec.Command(vmctl, "--data-root", dataRoot, "--exec-root", execRoot, "run", "--rm", "--cold-boot", "busybox", "true")
	}}
	runscRun := &shimPeer{name: "runsc run (OCI bundle)", cleanup: noop}
	if runsc == "" {
		runscRun.why = gvisor.why
	} else if err := busyboxBundle(func(args ...string) func(int) *exec.Cmd { return dockerCmd(dsock, args...) }, filepath.Join(tmp, "bundle")); err != nil {
		runscRun.why = oneLine(err.Error())
	} else {
		runscRoot := filepath.Join(tmp, "runsc-root")
		runscRun.cmd = func(i int) *exec.Cmd {
			return exec.Command(runsc, "--root", runscRoot, "--network=none", "run", "--bundle", filepath.Join(tmp, "bundle"), fmt.Sprintf("bench-%d", i+1))
		}
		runscRun.cleanup = func(i int) {
			exec.Command(runsc, "--root", runscRoot, "delete", "--force", fmt.Sprintf("bench-%d", i+1)).Run()
		}
	}
	inProcess := []*shimPeer{runscRun, inRestored, inCold}

	all := append(append([]*shimPeer{}, viaDocker...), inProcess...)
	for _, p := range all {
		if p.why == "" {
			p.run(-1, false) // warm-up: the saved guest, page cache
		}
	}
	for i := 0; i < n; i++ {
		for _, p := range all {
			if p.why == "" {
				p.run(i, true)
			}
		}
	}
	// dockerd removes --rm containers after the client's exit: let it
	// finish before it is stopped, or their shims outlive it.
	for i := 0; i < 100; i++ {
		out, err := dockerCmd(dsock, "ps", "-aq")(0).Output()
		if err != nil || strings.TrimSpace(string(out)) == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	printRatioTable(fmt.Sprintf("docker run --rm --network none busybox true, client start to exit (median of %d, interleaved; vmctl on QEMU TCG)", n), viaDocker, runcPeer)
	printRatioTable(fmt.Sprintf("run --rm busybox true in process (median of %d, interleaved)", n), inProcess, runscRun)
	for _, p := range []*shimPeer{runcPeer, restored, cold, inRestored, inCold} {
		if p.why != "" {
			return fmt.Errorf("%s: %s", p.name, p.why)
		}
	}
	return nil
}

// busyboxBundle makes an OCI bundle of the busybox image (exported from
// dockerd) whose process is `true`.
func busyboxBundle(docker func(...string) func(int) *exec.Cmd, dir string) error {
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	out, err := docker("create", "busybox", "true")(0).Output()
	if err != nil {
		return fmt.Errorf("docker create: %v", err)
	}
	id := strings.TrimSpace(string(out))
	defer docker("rm", id)(0).Run()
	export := docker("export", id)(0)
	untar := exec.Command("tar", "-x", "-C", rootfs)
	pipe, err := export.StdoutPipe()
	if err != nil {
		return err
	}
	untar.Stdin = pipe
	if err := export.Start(); err != nil {
		return err
	}
	if b, err := untar.CombinedOutput(); err != nil {
		export.Wait()
		return fmt.Errorf("untar the busybox export: %v: %s", err, b)
	}
	if err := export.Wait(); err != nil {
		return fmt.Errorf("docker export: %v", err)
	}
	if b, err := exec.Command("runsc", "spec", "--bundle", dir, "--", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("runsc spec: %v: %s", err, b)
	}
	return nil
}

// printRatioTable prints each peer's median and fastest run and its ratio
// to base.
func printRatioTable(title string, peers []*shimPeer, base *shimPeer) {
	fmt.Printf("\n%s\n\n", title)
	fmt.Printf("| %-28s | %10s | %10s | %10s |\n", "", "median", "fastest", "vs "+strings.SplitN(base.name, " (", 2)[0])
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 30), strings.Repeat("-", 12), strings.Repeat("-", 12), strings.Repeat("-", 12))
	for _, p := range peers {
		if len(p.times) == 0 {
			fmt.Printf("| %-28s | cannot run here: %s\n", p.name, p.why)
			continue
		}
		ratio := "-"
		if len(base.times) > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(medianDur(p.times))/float64(medianDur(base.times)))
		}
		fmt.Printf("| %-28s | %8.0fms | %8.0fms | %10s |\n", p.name, ms(medianDur(p.times)), ms(minDur(p.times)), ratio)
	}
	fmt.Println()
}

// killLeftovers ends any process still running from dir (a container shim
// or runtime dockerd left behind), so that nothing outlives the section.
func killLeftovers(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
			fmt.Fprintf(os.Stderr, "bench start: ending a leftover process: %s\n", strings.ReplaceAll(string(b), "\x00", " "))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
