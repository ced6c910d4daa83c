package machine

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Host names the files the capability check reads; tests point them at
// fake trees.
type Host struct {
	DevKVM    string // the KVM device node
	CPUInfo   string // read for the vmx/svm CPU flags
	PVMModule string // exists when the PVM flavour of KVM is loaded
}

// DefaultHost is this machine's /dev, /proc and /sys.
var DefaultHost = Host{DevKVM: "/dev/kvm", CPUInfo: "/proc/cpuinfo", PVMModule: "/sys/module/kvm_pvm"}

// ErrKVMCannotRunGuests is wrapped by CheckHost's error where /dev/kvm
// exists but cannot run a stock Linux guest.
var ErrKVMCannotRunGuests = errors.New("KVM cannot run full guests")

// CheckHost reports, in one line, why h's /dev/kvm cannot run full Linux
// guests, or nil if it can. A /dev/kvm that opens is not enough: PVM
// KVM (a host that is itself a VM) runs tiny hand-made guests but dies on
// a stock kernel's first instructions; hardware virtualization shows as
// the vmx or svm CPU flag. The wording matches the engine's own check.
func (h Host) CheckHost() error {
	f, err := os.OpenFile(h.DevKVM, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: KVM is not enabled on this host", h.DevKVM)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s is not accessible: run as root or join the kvm group", h.DevKVM)
	case err != nil:
		return fmt.Errorf("%s cannot be opened: %w", h.DevKVM, err)
	}
	f.Close()
	virt, err := hasVirtFlag(h.CPUInfo)
	if err != nil {
		return fmt.Errorf("cannot read CPU flags: %w", err)
	}
	_, err = os.Stat(h.PVMModule)
	pvm := err == nil
	switch {
	case pvm && !virt:
		return fmt.Errorf("%s is PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag): %w", h.DevKVM, ErrKVMCannotRunGuests)
	case pvm:
		return fmt.Errorf("%s is PVM-flavoured KVM (kvm_pvm loaded): %w", h.DevKVM, ErrKVMCannotRunGuests)
	case !virt:
		return fmt.Errorf("the CPU has no vmx/svm flag (no hardware virtualization): %s: %w", h.DevKVM, ErrKVMCannotRunGuests)
	}
	return nil
}

func hasVirtFlag(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20) // flags lines run to a few KiB
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, flag := range strings.Fields(value) {
			if flag == "vmx" || flag == "svm" {
				return true, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return false, nil
}
