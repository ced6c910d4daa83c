package main

// Sections for the daemon and registries (issue 4):
//   pull:   pulling a multi-layer image of ~200 MB from a local registry,
//           vmctl pull (into the image store, every blob checked against
//           its digest and size and fsynced; diff IDs are checked at the
//           first unpack) vs crane pull (go-containerregistry's CLI, to an
//           OCI layout, which checks digests too but does not fsync).
//   daemon: run --rm busybox echo hi to its first output, through vmctld
//           (vmctl -H) vs the in-process engine (vmctl without -H).

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func init() {
	sections = append(sections, section{"pull", runPull}, section{"daemon", runDaemon})
}

// startRegistry runs Debian's docker-registry on a free loopback port with
// its storage under dir, and returns its host:port and a stop function.
func startRegistry(dir string) (string, func(), error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return "", nil, fmt.Errorf("docker-registry is not installed: `make deps` installs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "storage"), addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return addr, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("registry did not start on %s", addr)
}

// craneEnv passes the crane binary main built to the bench in its
// namespace.
const craneEnv = "VMCTL_BENCH_CRANE"

// buildCrane installs go-containerregistry's crane (the version vmctl links)
// into dir through the module proxy.
func buildCrane(dir string) (string, error) {
	cmd := exec.Command("go", "install", "github.com/google/go-containerregistry/cmd/crane@v0.22.1")
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build crane: %v: %s", err, out)
	}
	return filepath.Join(dir, "crane"), nil
}

func runPull(n int) error {
	tmp, err := os.MkdirTemp("", "vmctl-bench-pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	addr, stop, err := startRegistry(tmp)
	if err != nil {
		return err
	}
	defer stop()
	// Built before the bench entered its namespace (see main), where
	// the module proxy is out of reach.
	crane := os.Getenv(craneEnv)
	if crane == "" {
		return fmt.Errorf("%s is not set: the crane peer was not built", craneEnv)
	}
	// Five random (incompressible) layers of 40 MiB.
	img, err := random.Image(40<<20, 5)
	if err != nil {
		return err
	}
	ref := addr + "/bench/big:1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img); err != nil {
		return fmt.Errorf("push the bench image: %w", err)
	}
	vmctl, err := filepath.Abs("bin/vmctl")
	if err != nil {
		return err
	}
	var craneTimes, vmctlTimes, craneCPU, vmctlCPU []time.Duration
	for i := 0; i < n; i++ {
		dest := filepath.Join(tmp, fmt.Sprintf("crane-%d", i))
		t, cpu, err := timeCmdCPU(exec.Command(crane, "pull", "--insecure", "--format", "oci", ref, dest))
		if err != nil {
			return fmt.Errorf("crane pull: %w", err)
		}
		os.RemoveAll(dest)
		craneTimes, craneCPU = append(craneTimes, t), append(craneCPU, cpu)
		root := filepath.Join(tmp, fmt.Sprintf("vmctl-%d", i))
		t, cpu, err = timeCmdCPU(exec.Command(vmctl, "--data-root", root, "pull", "-q", ref))
		if err != nil {
			return fmt.Errorf("vmctl pull: %w", err)
		}
		os.RemoveAll(root)
		vmctlTimes, vmctlCPU = append(vmctlTimes, t), append(vmctlCPU, cpu)
	}
	c, v := medianDur(craneTimes), medianDur(vmctlTimes)
	fmt.Printf("\nPull of a 200 MiB, 5-layer image from a local registry (median of %d, interleaved; both check every blob's digest, vmctl also fsyncs)\n\n", n)
	printHeader("crane pull", "vmctl pull")
	printRow("wall time", fmt.Sprintf("%.0fms", ms(c)), fmt.Sprintf("%.0fms", ms(v)), float64(v)/float64(c))
	cf, vf := minDur(craneTimes), minDur(vmctlTimes)
	printRow("fastest run", fmt.Sprintf("%.0fms", ms(cf)), fmt.Sprintf("%.0fms", ms(vf)), float64(vf)/float64(cf))
	// The pull is CPU-bound on small machines. Both hash each blob once
	// (go-containerregistry's digest check) and copy it to a file; vmctl
	// also fsyncs each blob, with early writeback, before the store
	// changes. It does not decompress layers: their diff IDs are checked
	// when rootfs first unpacks the image.
	cc, vc := medianDur(craneCPU), medianDur(vmctlCPU)
	printRow("CPU time of the client (user+sys)", fmt.Sprintf("%.0fms", ms(cc)), fmt.Sprintf("%.0fms", ms(vc)), float64(vc)/float64(cc))
	printRow("speed vs crane (crane/vmctl, target >= 1.0x)", "", "", float64(c)/float64(v))
	fmt.Println()
	return nil
}

// timeCmdCPU runs cmd and returns its wall time and the CPU time (user and
// system) it used.
func timeCmdCPU(cmd *exec.Cmd) (time.Duration, time.Duration, error) {
	wall, err := timeCmd(cmd)
	if err != nil {
		return 0, 0, err
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func timeCmd(cmd *exec.Cmd) (time.Duration, error) {
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return time.Since(start), nil
}

func runDaemon(n int) error {
	tmp, err := os.MkdirTemp("", "vmctl-bench-daemon-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	execA, err := os.MkdirTemp("", "vba")
	if err != nil {
		return err
	}
	defer os.RemoveAll(execA)
	execB, err := os.MkdirTemp("", "vbb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(execB)
	vmctl, _ := filepath.Abs("bin/vmctl")
	inproc := filepath.Join(tmp, "inproc")
	daemonRoot := filepath.Join(tmp, "daemon")
	for _, root := range []string{inproc, daemonRoot} {
		if out, err := exec.Command(vmctl, "--data-root", root, "load", "-i", "build/busybox.tar").CombinedOutput(); err != nil {
			return fmt.Errorf("load busybox: %v: %s", err, out)
		}
	}
	sock := filepath.Join(tmp, "d.sock")
	stop, err := startVmctld(sock, daemonRoot, execB)
	if err != nil {
		return err
	}
	defer stop()
	local := func() *exec.Cmd {
		return exec.Command(vmctl, "--data-root", inproc, "--exec-root", execA, "run", "--rm", "busybox", "echo", "hi")
	}
	remoteRun := func() *exec.Cmd {
		return exec.Command(vmctl, "-H", "unix://"+sock, "run", "--rm", "busybox", "echo", "hi")
	}
	return compareRuns(n, "run --rm busybox echo hi: in-process engine vs through vmctld (vmctl -H)",
		"in-process", "via vmctld", "hi", local, remoteRun)
}

// startVmctld runs bin/vmctld on dataRoot and execRoot, serving on the unix
// socket sock, with the guest files of bin/guest, and returns once it
// accepts connections. stop interrupts it and waits for it.
func startVmctld(sock, dataRoot, execRoot string, flags ...string) (stop func(), err error) {
	vmctld, _ := filepath.Abs("bin/vmctld")
	kernel, _ := filepath.Abs("bin/guest/vmlinuz")
	initrd, _ := filepath.Abs("bin/guest/initramfs.img")
	d := exec.Command(vmctld, append([]string{"--data-root", dataRoot, "--exec-root", execRoot, "-H", "unix://" + sock, "--kernel", kernel, "--initrd", initrd}, flags...)...)
	var dlog strings.Builder
	d.Stderr = &dlog
	if err := d.Start(); err != nil {
		return nil, err
	}
	stop = func() { d.Process.Signal(os.Interrupt); d.Wait() }
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return stop, nil
		}
		if i == 200 {
			stop()
			return nil, fmt.Errorf("vmctld did not listen: %s", dlog.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}
