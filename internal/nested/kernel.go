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

// RequiredModules must be among a prepared kernel's modules: the ones that
// give L1 a /dev/kvm (QEMU TCG emulates AMD SVM, never Intel VMX, so
// kvm-intel is not needed), and what vmctld's networking needs from a host
// (bridge, tun, nftables with NAT, conntrack and fib). prepare.sh adds their
// dependencies and writes the load order to modules.order; L1's init loads
// them all before any scenario, as a host's modprobe would on demand.
var RequiredModules = []string{
	"irqbypass", "kvm", "kvm-amd",
	"bridge", "tun", "veth", "vhost_net",
	"nf_tables", "nft_ct", "nft_masq", "nft_nat", "nft_chain_nat", "nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6",
}

// Kernel is an L1 kernel prepared by scripts/nested/prepare.sh.
type Kernel struct {
	Dir     string
	Release string // e.g. 6.1.0-56-cloud-amd64
	Vmlinuz string
	// Modules are the modules L1 loads, in dependency order (modules.order).
	Modules []string
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
	order, err := os.ReadFile(filepath.Join(resolved, "modules.order"))
	if err != nil {
		return Kernel{}, fmt.Errorf("%w: %w", ErrNotPrepared, err)
	}
	k.Modules = strings.Fields(string(order))
	have := map[string]bool{}
	for _, m := range k.Modules {
		have[m] = true
		k.ModuleFiles = append(k.ModuleFiles, filepath.Join(resolved, m+".ko"))
	}
	for _, m := range RequiredModules {
		if !have[m] {
			return Kernel{}, fmt.Errorf("%w: modules.order in %s lacks %s", ErrNotPrepared, resolved, m)
		}
	}
	for _, f := range append([]string{k.Vmlinuz}, k.ModuleFiles...) {
		if _, err := os.Stat(f); err != nil {
			return Kernel{}, fmt.Errorf("%w: %w", ErrNotPrepared, err)
		}
	}
	return k, nil
}
