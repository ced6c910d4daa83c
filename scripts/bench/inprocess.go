package main

// inprocess: what serving the Docker Engine API inside vmctl's own process
// costs a run. `vmctl run --rm busybox echo hi` without a daemon (the CLI's
// one path: an API client of the engine served over in-memory connections)
// against the same run driving the engine's container service directly
// (scripts/bench/direct, the way vmctl ran before it had one path), on the
// same data root, interleaved. The target is within 2%.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

func init() {
	sections = append(sections, section{"inprocess", runInProcess})
}

func runInProcess(n int) error {
	tmp, err := os.MkdirTemp("", "vmctl-bench-inproc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	execRoot, err := os.MkdirTemp("", "vbi")
	if err != nil {
		return err
	}
	defer os.RemoveAll(execRoot)
	vmctl, _ := filepath.Abs("bin/vmctl")
	direct := filepath.Join(tmp, "direct")
	if out, err := exec.Command("go", "build", "-o", direct, "./scripts/bench/direct").CombinedOutput(); err != nil {
		return fmt.Errorf("build the direct runner: %v: %s", err, out)
	}
	// The direct runner looks for the guest files beside itself.
	if err := os.Symlink(filepath.Join(filepath.Dir(vmctl), "guest"), filepath.Join(tmp, "guest")); err != nil {
		return err
	}
	dataRoot := filepath.Join(tmp, "data")
	if out, err := exec.Command(vmctl, "--data-root", dataRoot, "--exec-root", execRoot, "load", "-i", "build/busybox.tar").CombinedOutput(); err != nil {
		return fmt.Errorf("load busybox: %v: %s", err, out)
	}
	viaAPI := func() *exec.Cmd {
		return exec.Command(vmctl, "--data-root", dataRoot, "--exec-root", execRoot, "run", "--rm", "busybox", "echo", "hi")
	}
	viaService := func() *exec.Cmd {
		return exec.Command(direct, "-data-root", dataRoot, "-exec-root", execRoot, "busybox", "echo", "hi")
	}
	return compareRuns(n, "run --rm busybox echo hi without a daemon: the engine's service called directly vs vmctl's API served in-process (target: within 2%)",
		"direct", "in-process API", "hi", viaService, viaAPI)
}
