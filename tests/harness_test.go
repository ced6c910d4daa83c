// Package tests holds end-to-end tests: they drive the built bin/vmctl
// against real QEMU, the real guest kernel and the real guest image, one
// behaviour per file. `make test` builds everything first and sets
// VMCTL_E2E=1, which turns missing artifacts into failures instead of skips.
package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/netnsrun"
)

// env is the shared end-to-end environment: one data root with the busybox
// image loaded, and a short exec root (unix socket paths are limited).
type env struct {
	root     string // repository root
	vmctl    string
	dataRoot string
	execRoot string
	release  string // the guest kernel's release
}

var shared *env

func TestMain(m *testing.M) {
	// The tests run in a network namespace of their own: every vmctl,
	// vmctld, QEMU and registry they start inherits it, so bridges, taps
	// and rules the engine makes stay there and go with it.
	if os.Geteuid() == 0 && !netnsrun.Inside() {
		// What needs the module proxy is fetched first, outside the
		// namespace (TestGeneratedContractsAreCurrent's generators); a
		// failure here shows again, with its reason, in that test.
		if _, err := exec.LookPath("protoc"); err == nil {
			if out, err := exec.Command("bash", "../scripts/proto.sh", "--tools").CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "tests: installing the protoc generators: %v: %s", err, out)
			}
		}
		code, err := netnsrun.Reexec("vmctl-e2e", netnsrun.Options{ResolvConf: "nameserver " + outsideDNS + "\n"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests: "+err.Error())
			os.Exit(1)
		}
		os.Exit(code)
	}
	if out, err := exec.Command("ip", "-o", "link").Output(); err == nil {
		linksAtStart = string(out)
	}
	code := m.Run()
	for _, f := range atExit {
		f()
	}
	for _, d := range tempDirs {
		os.RemoveAll(d)
	}
	if shared != nil {
		os.RemoveAll(shared.dataRoot)
		os.RemoveAll(shared.execRoot)
	}
	os.Exit(code)
}

// tempDirs are removed once every test has run (what several tests share,
// such as the images they build).
var tempDirs []string

// atExit runs once every test has run, before tempDirs go: it stops what
// several tests share (the shim tests' containerd).
var atExit []func()

// linksAtStart is what `ip -o link` showed in the tests' namespace before
// any test ran (in-process engines make the default bridge in it later).
var linksAtStart string

// outsideDNS is the tests' resolver: the host the network tests run
// beyond the engine's bridges, in a namespace of theirs (see outside).
const outsideDNS = "198.51.100.2"

// e2e returns the shared environment, loading the busybox image on first use.
func e2e(t *testing.T) *env {
	t.Helper()
	if shared != nil {
		return shared
	}
	root := repoRoot(t)
	need := []string{"bin/vmctl", "bin/guest/vmlinuz", "bin/guest/initramfs.img", "bin/guest/kernel.release", "build/busybox.tar"}
	for _, n := range need {
		if _, err := os.Stat(filepath.Join(root, n)); err != nil {
			if os.Getenv("VMCTL_E2E") != "" {
				t.Fatalf("%s is missing: `make test` builds it", n)
			}
			t.Skipf("%s is missing: run `make build kernel image` (or `make test`)", n)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (disk images, namespaces)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 is not installed: `make deps` installs it")
	}
	rel, err := os.ReadFile(filepath.Join(root, "bin/guest/kernel.release"))
	if err != nil {
		t.Fatal(err)
	}
	dataRoot, err := os.MkdirTemp("", "vmctl-e2e-data-")
	if err != nil {
		t.Fatal(err)
	}
	execRoot, err := os.MkdirTemp("", "vx")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{root: root, vmctl: filepath.Join(root, "bin/vmctl"), dataRoot: dataRoot, execRoot: execRoot,
		release: strings.TrimSpace(string(rel))}
	shared = e
	if r := e.run(t, "load", "-i", filepath.Join(root, "build/busybox.tar")); r.code != 0 {
		t.Fatalf("load busybox: exit %d: %s", r.code, r.stderr)
	}
	return e
}

type result struct {
	stdout, stderr string
	code           int
}

// cmd builds a vmctl command against the shared state.
func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--data-root", e.dataRoot, "--exec-root", e.execRoot}, args...)
	c := exec.CommandContext(ctx, e.vmctl, full...)
	c.Env = append(os.Environ(), "VMCTL_KERNEL=", "VMCTL_INITRD=", "VMCTL_HOST=", e.noDefaultDaemon())
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

// noDefaultDaemon is the environment entry that points vmctl's default
// daemon socket at a path where none listens, so that a vmctld this machine
// runs on the real default socket never serves a test meant for the
// in-process engine.
func (e *env) noDefaultDaemon() string {
	return "VMCTL_DEFAULT_HOST=unix://" + filepath.Join(e.execRoot, "no-daemon.sock")
}

// run runs vmctl with no stdin and returns what it printed and its exit status.
func (e *env) run(t *testing.T, args ...string) result {
	t.Helper()
	return e.runWith(t, nil, nil, args...)
}

func (e *env) runWith(t *testing.T, stdin []byte, extraEnv []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	c.Env = append(c.Env, extraEnv...)
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	return capture(ctx, t, c, in)
}

// capture runs c (made with ctx) with stdin if not nil, and returns what it
// printed and its exit status. It fails the test if c cannot run or ctx
// ended first.
func capture(ctx context.Context, t *testing.T, c *exec.Cmd, stdin io.Reader) result {
	t.Helper()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if stdin != nil {
		c.Stdin = stdin
	}
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	name := filepath.Base(c.Path) + " " + strings.Join(c.Args[1:], " ")
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s: timed out; stderr: %s", name, r.stderr)
	}
	return r
}

// mustRun runs vmctl and fails the test unless it exits with want.
func (e *env) mustRun(t *testing.T, want int, args ...string) result {
	t.Helper()
	r := e.run(t, args...)
	if r.code != want {
		t.Fatalf("vmctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

// leftovers lists what a finished vmctl must not leave behind: VMM
// processes, runtime state, temp files.
func (e *env) leftovers(t *testing.T) []string {
	t.Helper()
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, e.execRoot+"/") || strings.Contains(cmdline, e.dataRoot+"/") {
			found = append(found, "process: "+cmdline)
		}
	}
	entries, _ := os.ReadDir(e.execRoot)
	for _, en := range entries {
		found = append(found, "exec root: "+en.Name())
	}
	filepath.Walk(e.dataRoot, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		base := filepath.Base(p)
		if strings.Contains(base, "tmp") || strings.HasPrefix(base, ".") && base != ".lock" && !strings.HasSuffix(base, ".lock") {
			if info.IsDir() && base == "tmp" {
				if sub, _ := os.ReadDir(p); len(sub) == 0 {
					return nil
				}
			}
			found = append(found, "temp file: "+strings.TrimPrefix(p, e.dataRoot))
		}
		return nil
	})
	return found
}

// containerCount is how many container records exist.
func (e *env) containerCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.dataRoot, "containers"))
	if err != nil {
		return 0
	}
	n := 0
	for _, en := range entries {
		if en.IsDir() {
			n++
		}
	}
	return n
}

// checkClean fails the test if anything was left behind.
func (e *env) checkClean(t *testing.T, containersBefore int) {
	t.Helper()
	// The VMM is reaped before vmctl exits; allow the kernel a moment to
	// tear the process down.
	deadline := time.Now().Add(5 * time.Second)
	var left []string
	for {
		left = e.leftovers(t)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(left, "\n  "))
	}
	if n := e.containerCount(t); n != containersBefore {
		t.Errorf("container records: %d, want %d", n, containersBefore)
	}
}

// oneLine checks that an error was reported as exactly one line on stderr.
func oneLine(t *testing.T, r result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("stderr = %q, want one line containing %q", r.stderr, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = fmt.Sprintf

// The end-to-end tests run in a network namespace of their own (see
// TestMain): whatever networking the engine sets up never reaches the
// machine's own.
func TestRunsInOwnNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the tests run in the machine's namespace")
	}
	if !netnsrun.Inside() {
		t.Fatalf("%s is not set: the tests run in the machine's network namespace", netnsrun.Env)
	}
	own, err := os.Readlink("/proc/self/ns/net")
	must(t, err)
	if outer := os.Getenv(netnsrun.OuterEnv); outer == "" || own == outer {
		t.Errorf("the tests' network namespace %s is the one go test started them in (%q)", own, outer)
	}
	if links := strings.Split(strings.TrimSpace(linksAtStart), "\n"); len(links) != 1 || !strings.Contains(links[0], " lo:") {
		t.Errorf("links in the tests' namespace at start: %q, want lo alone", linksAtStart)
	}
}
