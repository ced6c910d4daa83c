package main

// Section density: host memory per idle container. N containers
// `busybox sleep` run detached through vmctld, started from the saved guest
// (its default), then N booted ones (the io.vmctl.cold-boot label): the
// same QEMU, guest kernel, guest image and size, each VM booted on its own,
// the peer the issue calls "QEMU microvm of the same guest started bare".
// For each set the table gives the VMM processes' proportional set size
// (PSS, /proc/PID/smaps_rollup: a page mapped by k processes counts 1/k in
// each), which is what each container costs the host once the pages the
// restored VMs share with the saved guest (a sealed memfd they map
// copy-on-write) are split among them; RSS counts shared pages in full in
// every process and is shown for contrast.

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

func init() { sections = append(sections, section{"density", runDensity}) }

var densityN = flag.Int("density", 50, "idle containers per set in the density section")

func runDensity(int) error {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return skip("the docker CLI is not installed: `make deps` installs Debian's")
	}
	vmctl, _ := filepath.Abs("bin/vmctl")
	tmp, err := os.MkdirTemp("", "vmctl-bench-density-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	execRoot, err := os.MkdirTemp("", "vbn")
	if err != nil {
		return err
	}
	defer os.RemoveAll(execRoot)
	dataRoot := filepath.Join(tmp, "data")
	if out, err := exec.Command(vmctl, "--data-root", dataRoot, "load", "-i", "build/busybox.tar").CombinedOutput(); err != nil {
		return fmt.Errorf("load busybox: %v: %s", err, out)
	}
	sock := filepath.Join(execRoot, "d.sock")
	stop, err := startVmctld(sock, dataRoot, execRoot)
	if err != nil {
		return err
	}
	defer stop()
	dockerCmd := func(args ...string) *exec.Cmd {
		c := exec.Command(docker, args...)
		c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+sock, "DOCKER_CONFIG="+filepath.Join(tmp, "docker-config"))
		return c
	}
	// The saved guest, made once.
	if out, err := dockerCmd("run", "--rm", "--network", "none", "busybox", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("warm-up run: %v: %s", err, out)
	}
	n := *densityN
	type set struct {
		name     string
		label    []string
		pss, rss uint64 // KiB, summed over the set's VMMs
		took     time.Duration
	}
	sets := []*set{{name: "restored (shared saved guest)"}, {name: "booted (QEMU, same guest)", label: []string{"--label", "io.vmctl.cold-boot=true"}}}
	for _, s := range sets {
		start := time.Now()
		var ids []string
		for i := 0; i < n; i++ {
			args := append(append([]string{"run", "-d", "--network", "none"}, s.label...), "busybox", "sleep", "3600")
			out, err := dockerCmd(args...).Output()
			if err != nil {
				removeAll(dockerCmd, ids)
				return fmt.Errorf("%s: container %d: %v", s.name, i+1, err)
			}
			ids = append(ids, strings.TrimSpace(string(out)))
		}
		s.took = time.Since(start)
		// Idle: let the guests settle after their starts.
		time.Sleep(5 * time.Second)
		for _, id := range ids {
			out, err := dockerCmd("inspect", "-f", "{{.State.Pid}}", id).Output()
			if err != nil {
				removeAll(dockerCmd, ids)
				return fmt.Errorf("inspect: %v", err)
			}
			pss, rss, err := rollup(strings.TrimSpace(string(out)))
			if err != nil {
				removeAll(dockerCmd, ids)
				return err
			}
			s.pss += pss
			s.rss += rss
		}
		removeAll(dockerCmd, ids)
	}
	fmt.Printf("\n%d idle `busybox sleep` containers through vmctld, 256 MiB guests: host memory per container (the VMM process)\n\n", n)
	fmt.Printf("| %-30s | %12s | %12s | %10s | %12s |\n", "", "PSS", "RSS", "vs booted", "start all")
	fmt.Printf("|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 32), strings.Repeat("-", 14), strings.Repeat("-", 14), strings.Repeat("-", 12), strings.Repeat("-", 14))
	base := float64(sets[1].pss)
	for _, s := range sets {
		fmt.Printf("| %-30s | %8.1f MiB | %8.1f MiB | %9.2fx | %10.1fs |\n", s.name,
			float64(s.pss)/float64(n)/1024, float64(s.rss)/float64(n)/1024, float64(s.pss)/base, s.took.Seconds())
	}
	fmt.Println()
	return nil
}

// rollup reads a process's total PSS and RSS in KiB.
func rollup(pid string) (pss, rss uint64, err error) {
	f, err := os.Open("/proc/" + pid + "/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(fields[1], 10, 64)
		switch fields[0] {
		case "Pss:":
			pss = v
		case "Rss:":
			rss = v
		}
	}
	return pss, rss, sc.Err()
}

// removeAll removes the containers, a few at a time.
func removeAll(docker func(...string) *exec.Cmd, ids []string) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func(id string) {
			defer wg.Done()
			docker("rm", "-f", id).Run()
			<-sem
		}(id)
	}
	wg.Wait()
}
