package nested

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotPrepared means the L1 kernel cache is missing or incomplete.
var ErrNotPrepared = errors.New("the nested L1 kernel is not prepared: run scripts/nested/prepare.sh")

// Modules are the kernel modules init.sh loads, in dependency order:
// kvm needs irqbypass, kvm-amd needs kvm. QEMU TCG emulates AMD SVM, never
// Intel VMX, so kvm-intel is not needed.
var Modules = []string{"irqbypass", "kvm", "kvm-amd"}

// Kernel is an L1 kernel prepared by scripts/nested/prepare.sh.
type Kernel struct {
	Dir     string
	Release string // e.g. 6.1.0-56-cloud-amd64
	Vmlinuz string
	// ModuleFiles are the .ko files of Modules, in the same order.
	ModuleFiles []string
}

// CacheDir is where prepare.sh caches by default: $VMCTL_CACHE_DIR, else
// /var/cache/vmctl.
func CacheDir() string {
	if d := os.Getenv("VMCTL_CACHE_DIR"); d != "" {
		return d
	}
	return "/var/cache/vmctl"
}

// FindKernel returns the kernel that prepare.sh last prepared under
// cacheDir ("" means CacheDir()). The error wraps ErrNotPrepared when
// anything is missing.
func FindKernel(cacheDir string) (Kernel, error) {
	if cacheDir == "" {
		cacheDir = CacheDir()
	}
	dir := filepath.Join(cacheDir, "nested", "current")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return Kernel{}, fmt.Errorf("%w (no complete kernel in %s)", ErrNotPrepared, dir)
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return Kernel{}, fmt.Errorf("%w: %w", ErrNotPrepared, err)
	}
	rel, err := os.ReadFile(filepath.Join(resolved, "kernel.release"))
	if err != nil {
		return Kernel{}, fmt.Errorf("%w: %w", ErrNotPrepared, err)
	}
	k := Kernel{Dir: resolved, Release: strings.TrimSpace(string(rel)), Vmlinuz: filepath.Join(resolved, "vmlinuz")}
	for _, m := range Modules {
		k.ModuleFiles = append(k.ModuleFiles, filepath.Join(resolved, m+".ko"))
	}
	for _, f := range append([]string{k.Vmlinuz}, k.ModuleFiles...) {
		if _, err := os.Stat(f); err != nil {
			return Kernel{}, fmt.Errorf("%w: %w", ErrNotPrepared, err)
		}
	}
	return k, nil
}
