// Package nested holds the nested end-to-end tests of the native VMM: they
// boot an L1 Linux under QEMU TCG (whose emulated SVM gives L1 a working
// /dev/kvm, see internal/nested) and run scenarios inside it: a KVM smoke
// guest first, then vmctl-vmm booting the project's guest kernel and agent
// as L2.
//
// All scenarios share one L1 boot (booting L1 costs seconds under TCG); each
// test checks its own scenario's result. Scenarios whose artifacts are
// missing (bin/vmctl-vmm, bin/guest/...) are left out of that boot and
// their tests skip, or fail under VMCTL_E2E=1, which `make test` sets after
// building everything and running scripts/nested/prepare.sh.
package nested

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

// scenario is a harness scenario plus what it needs from the host.
type scenario struct {
	nested.Scenario
	// needs are repository files (relative to its root) the scenario uses.
	needs []string
	// files builds the scenario's extra L1 files; it may use needs.
	files func(root, tmp string) ([]nested.File, error)
	// test is the test that checks the scenario: with `go test -run`, only
	// the selected tests' scenarios are booted.
	test string
}

var registry []scenario

func register(s scenario) { registry = append(registry, s) }

var shared struct {
	once        sync.Once
	rep         *nested.Report
	err         error
	skip        string            // why nothing could run
	wedged      []string          // L1 boots that wedged and were repeated
	unavailable map[string]string // scenario -> missing artifact
	tmp         string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.tmp != "" {
		os.RemoveAll(shared.tmp)
	}
	os.Exit(code)
}

func e2e() bool { return os.Getenv("VMCTL_E2E") != "" }

// missing skips, or fails when `make test` should have provided what is
// missing.
func missing(t *testing.T, what string) {
	t.Helper()
	if e2e() {
		t.Fatalf("%s (VMCTL_E2E=1: `make test` prepares it)", what)
	}
	t.Skip(what)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(filepath.Dir(wd))
}

// l1 boots L1 once with every registered scenario that can run.
func l1(t *testing.T) *nested.Report {
	t.Helper()
	shared.once.Do(bootL1)
	if shared.skip != "" {
		missing(t, shared.skip)
	}
	if shared.err != nil && shared.rep == nil {
		t.Fatalf("nested harness: %v", shared.err)
	}
	if shared.err != nil {
		t.Fatalf("nested harness: %v\nL1 console:\n%s", shared.err, tail(shared.rep.Console, 150))
	}
	return shared.rep
}

func bootL1() {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		shared.skip = "qemu-system-x86_64 is not installed (scripts/install-deps.sh)"
		return
	}
	k, err := nested.FindKernel("")
	if err != nil {
		shared.skip = err.Error()
		return
	}
	root := repoRoot()
	shared.tmp, err = os.MkdirTemp("", "vmctl-nested-test-")
	if err != nil {
		shared.err = err
		return
	}
	shared.unavailable = map[string]string{}
	cfg := nested.Config{Kernel: k}
	for _, s := range registry {
		if !selected(s.test) {
			continue
		}
		if why := absent(root, s.needs); why != "" {
			shared.unavailable[s.Name] = why
			continue
		}
		files, err := s.files(root, shared.tmp)
		if err != nil {
			shared.err = fmt.Errorf("prepare scenario %s: %w", s.Name, err)
			return
		}
		cfg.Files = append(cfg.Files, files...)
		cfg.Scenarios = append(cfg.Scenarios, s.Scenario)
	}
	cfg.Files = dedupe(cfg.Files)
	if testing.Verbose() {
		cfg.Console = os.Stdout
	}
	shared.rep, shared.err = nested.Run(context.Background(), cfg)
	// L1 itself wedged (see nested.ErrWedged): boot it again, up to twice
	// (two wedges in a row were seen once under TCG's emulated SVM). A
	// third wedge fails every test; either way TestL1Boot logs them.
	for range 2 {
		if !errors.Is(shared.err, nested.ErrWedged) {
			break
		}
		shared.wedged = append(shared.wedged, shared.err.Error())
		shared.rep, shared.err = nested.Run(context.Background(), cfg)
	}
}

// selected approximates go test's -run matching for top-level tests, so
// that running one test does not boot every scenario.
func selected(test string) bool {
	f := flag.Lookup("test.run")
	if f == nil || f.Value.String() == "" {
		return true
	}
	pattern, _, _ := strings.Cut(f.Value.String(), "/")
	ok, err := regexp.MatchString(pattern, test)
	return ok || err != nil
}

func absent(root string, needs []string) string {
	for _, n := range needs {
		if _, err := os.Stat(filepath.Join(root, n)); err != nil {
			return n + " is missing: run `make build kernel` (or `make test`)"
		}
	}
	return ""
}

// dedupe drops repeated files: scenarios share binaries.
func dedupe(files []nested.File) []nested.File {
	seen := map[string]bool{}
	var out []nested.File
	for _, f := range files {
		if !seen[f.Path] {
			seen[f.Path] = true
			out = append(out, f)
		}
	}
	return out
}

// result returns the named scenario's result, failing the test (with the
// scenario's output) unless it passed.
func result(t *testing.T, name string) nested.Result {
	t.Helper()
	rep := l1(t)
	if why, ok := shared.unavailable[name]; ok {
		missing(t, why)
	}
	r, ok := rep.Result(name)
	if !ok {
		t.Fatalf("L1 reported no result for %s\nL1 console:\n%s", name, tail(rep.Console, 150))
	}
	t.Logf("%v", r)
	if !r.Pass {
		t.Fatalf("scenario %s failed: %s\noutput:\n%s", name, r.Detail, tail(r.Output, 150))
	}
	return r
}

// buildStatic builds a main package of this module as a static binary.
func buildStatic(root, tmp, pkg string) (string, error) {
	out := filepath.Join(tmp, filepath.Base(pkg))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return out, nil
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[... %d lines before]", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// TestL1Boot reports how long L1 took to boot and load KVM, and that its
// /dev/kvm is the full, nested-paging one.
func TestL1Boot(t *testing.T) {
	rep := l1(t)
	r, ok := rep.Result(nested.KVMCheck)
	if !ok || !r.Pass {
		t.Fatalf("L1 has no working /dev/kvm: %v\nL1 console:\n%s", r, tail(rep.Console, 100))
	}
	if !strings.Contains(r.Detail, "npt=Y") {
		t.Errorf("kvm_amd without nested paging: %s", r.Detail)
	}
	t.Logf("QEMU start to L1 /init %v (L1's own uptime %v); /dev/kvm ready at %v; whole run %v",
		rep.Boot.Round(time.Millisecond), rep.L1Uptime, rep.KVMReady.Round(time.Millisecond), rep.Wall.Round(time.Millisecond))
	for _, w := range shared.wedged {
		t.Logf("an L1 boot wedged and L1 was booted again: %s", w)
	}
}
