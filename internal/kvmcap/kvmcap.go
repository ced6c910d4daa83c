// Package kvmcap tells whether this host's /dev/kvm can run full Linux
// guests. The engine (choosing a hypervisor) and the VMM (refusing to start)
// ask the same question and must give the same answer in the same words.
//
// A /dev/kvm that opens is not enough: a host that is itself a VM may expose
// PVM-flavoured KVM, which runs tiny hand-made guests but dies on the first
// instructions of a stock kernel. Hardware virtualization shows as the vmx
// (Intel) or svm (AMD) CPU flag.
package kvmcap

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Host names the files the check reads; tests point them at fake trees.
type Host struct {
	DevKVM    string // the KVM device node
	CPUInfo   string // read for the vmx/svm CPU flags
	PVMModule string // exists when the PVM flavour of KVM is loaded
}

// Default is this machine's /dev, /proc and /sys.
var Default = Host{DevKVM: "/dev/kvm", CPUInfo: "/proc/cpuinfo", PVMModule: "/sys/module/kvm_pvm"}

// ErrCannotRunGuests is wrapped by Check's error where this host cannot run
// a stock Linux guest on KVM: /dev/kvm is missing, PVM-flavoured, or without
// hardware virtualization under it. All three are the same answer to the
// caller (the VMM refuses, auto picks QEMU); only the reason differs.
var ErrCannotRunGuests = errors.New("it cannot run full guests")

// ErrNoDevice is wrapped (with ErrCannotRunGuests) by Check's error where
// there is no KVM device at all, for callers that could still use a limited
// one (tiny hand-made guests run on a PVM /dev/kvm, not on a missing one).
var ErrNoDevice = errors.New("no KVM device")

// noDeviceError is Check's answer on a host without /dev/kvm.
type noDeviceError struct{ path string }

func (e *noDeviceError) Error() string {
	return fmt.Sprintf("%s does not exist: KVM is not enabled on this host, so it cannot run full guests", e.path)
}

func (e *noDeviceError) Is(target error) bool {
	return target == ErrCannotRunGuests || target == ErrNoDevice
}

// Check returns nil if h's /dev/kvm can run full Linux guests, else one
// line saying why.
func (h Host) Check() error {
	f, err := os.OpenFile(h.DevKVM, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &noDeviceError{path: h.DevKVM}
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s is not accessible: run as root or join the kvm group", h.DevKVM)
	case err != nil:
		return fmt.Errorf("%s cannot be opened: %w", h.DevKVM, err)
	}
	f.Close()
	flag, err := h.VirtFlag()
	if err != nil {
		return fmt.Errorf("cannot read CPU flags: %w", err)
	}
	virt, pvm := flag != "", h.PVMLoaded()
	switch {
	case pvm && !virt:
		return fmt.Errorf("%s is PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag): %w", h.DevKVM, ErrCannotRunGuests)
	case pvm:
		return fmt.Errorf("%s is PVM-flavoured KVM (kvm_pvm loaded): %w", h.DevKVM, ErrCannotRunGuests)
	case !virt:
		return fmt.Errorf("the CPU has no vmx/svm flag (no hardware virtualization) for %s: %w", h.DevKVM, ErrCannotRunGuests)
	}
	return nil
}

// VirtFlag returns the hardware virtualization flag the first "flags"
// line of h's /proc/cpuinfo-format file that has one lists: "vmx" (Intel
// VT-x), "svm" (AMD-V), or "" for none.
func (h Host) VirtFlag() (string, error) {
	f, err := os.Open(h.CPUInfo)
	if err != nil {
		return "", err
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
				return flag, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", h.CPUInfo, err)
	}
	return "", nil
}

// PVMLoaded reports whether the PVM flavour of KVM is loaded: then
// /dev/kvm, where there is one, is PVM's.
func (h Host) PVMLoaded() bool {
	_, err := os.Stat(h.PVMModule)
	return err == nil
}
