// Package kvm is a thin layer over the Linux KVM ioctl interface for x86-64:
// the system fd (/dev/kvm), VM fds and vCPU fds with their shared kvm_run
// page, and the exits of KVM_RUN decoded into Go values.
//
// It only wraps ioctls and decodes what the kernel returns. It does not
// decide policy (memory layout, CPUID contents, what an exit means for the
// VM): arch/x86, vcpu and machine do. Numbers and struct layouts mirror
// include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h of Linux 6.1.
//
// File descriptors are raw ints owned by the value that opened them and
// closed by its Close method, so no finalizer can close them behind a
// running vCPU's back.
package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version there has ever been.
const APIVersion = 12

// ioctl request numbers, from include/uapi/linux/kvm.h. The encoded sizes
// are the sizes of the structs this package mirrors.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetMSRIndexList     = 0xC004AE02
	kvmCheckExtension      = 0xAE03
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmSetTSSAddr          = 0xAE47
	kvmSetIdentityMapAddr  = 0x4008AE48
	kvmCreateIRQChip       = 0xAE60
	kvmIRQLine             = 0x4008AE61
	kvmIRQFD               = 0x4020AE76
	kvmCreatePIT2          = 0x4040AE77
	kvmIOEventFD           = 0x4040AE79
	kvmSignalMSI           = 0x4020AEA5
	kvmEnableCap           = 0x4068AEA3
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmGetMSRs             = 0xC008AE88
	kvmSetMSRs             = 0x4008AE89
	kvmGetFPU              = 0x81A0AE8C
	kvmSetFPU              = 0x41A0AE8D
	kvmGetLAPIC            = 0x8400AE8E
	kvmSetLAPIC            = 0x4400AE8F
	kvmSetCPUID2           = 0x4008AE90
	kvmGetCPUID2           = 0xC008AE91
	kvmGetMPState          = 0x8004AE98
	kvmSetMPState          = 0x4004AE99
)

// Cap is a KVM capability number for CheckExtension (KVM_CAP_*).
type Cap uintptr

// Capabilities the VMM relies on.
const (
	CapIRQChip          Cap = 0
	CapHLT              Cap = 1
	CapUserMemory       Cap = 3
	CapSetTSSAddr       Cap = 4
	CapExtCPUID         Cap = 7
	CapNrVCPUs          Cap = 9
	CapNrMemSlots       Cap = 10
	CapPIT2             Cap = 33
	CapSetIdentityMap   Cap = 37
	CapIOEventFD        Cap = 36
	CapIRQFD            Cap = 32
	CapMaxVCPUs         Cap = 66
	CapTSCDeadlineTimer Cap = 72
	CapSignalMSI        Cap = 77
	CapImmediateExit    Cap = 136
)

var capNames = map[Cap]string{
	CapIRQChip: "KVM_CAP_IRQCHIP", CapHLT: "KVM_CAP_HLT", CapUserMemory: "KVM_CAP_USER_MEMORY",
	CapSetTSSAddr: "KVM_CAP_SET_TSS_ADDR", CapExtCPUID: "KVM_CAP_EXT_CPUID", CapNrVCPUs: "KVM_CAP_NR_VCPUS",
	CapNrMemSlots: "KVM_CAP_NR_MEMSLOTS", CapPIT2: "KVM_CAP_PIT2", CapSetIdentityMap: "KVM_CAP_SET_IDENTITY_MAP_ADDR",
	CapIOEventFD: "KVM_CAP_IOEVENTFD", CapIRQFD: "KVM_CAP_IRQFD", CapMaxVCPUs: "KVM_CAP_MAX_VCPUS",
	CapSignalMSI: "KVM_CAP_SIGNAL_MSI", CapTSCDeadlineTimer: "KVM_CAP_TSC_DEADLINE_TIMER", CapImmediateExit: "KVM_CAP_IMMEDIATE_EXIT",
}

func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("KVM_CAP_%d", uintptr(c))
}

// RequiredCaps are the capabilities without which the VMM cannot run a
// Linux guest the way it is built: in-kernel irqchip and PIT, irqfd and
// ioeventfd for virtio, immediate_exit for pausing vCPUs.
var RequiredCaps = []Cap{
	CapIRQChip, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapPIT2,
	CapSetIdentityMap, CapIOEventFD, CapIRQFD, CapImmediateExit,
}

// System is an open /dev/kvm.
type System struct {
	fd      int
	runSize int
	DevPath string
}

// Open opens the KVM device at path (normally /dev/kvm) and checks its API
// version.
func Open(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	s := &System{fd: fd, DevPath: path}
	v, err := ioctl(fd, kvmGetAPIVersion, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("%s speaks KVM API version %d, want %d", path, v, APIVersion)
	}
	n, err := ioctl(fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if n < runHeaderSize {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE returned %d, smaller than struct kvm_run", n)
	}
	s.runSize = int(n)
	return s, nil
}

// Close closes /dev/kvm. VMs created from it stay usable.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// CheckExtension returns the KVM_CHECK_EXTENSION value for c: 0 when the
// capability is absent, otherwise 1 or a capability-specific number.
func (s *System) CheckExtension(c Cap) (int, error) {
	v, err := ioctl(s.fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION(%s): %w", c, err)
	}
	return int(v), nil
}

// MissingCaps returns those of caps that s does not have.
func (s *System) MissingCaps(caps []Cap) ([]Cap, error) {
	var missing []Cap
	for _, c := range caps {
		v, err := s.CheckExtension(c)
		if err != nil {
			return nil, err
		}
		if v == 0 {
			missing = append(missing, c)
		}
	}
	return missing, nil
}

// ErrNotSupported wraps failures caused by a missing KVM feature.
var ErrNotSupported = errors.New("not supported by this KVM")

// Requests named outside this package: by the VMM's seccomp probes (KVM_RUN
// is allowed once a VM runs, KVM_CREATE_VM is not).
const (
	IoctlRun      = kvmRun
	IoctlCreateVM = kvmCreateVM
)

// RunningIoctls are the requests this package issues once a VM is built:
// entering the guest, reading and writing vCPU state, raising interrupts,
// unhooking eventfds when the VM ends and reading the VM's whole state for
// a snapshot. A VMM confined by seccomp
// allows these and no others (creating VMs, vCPUs or memory slots is done
// before it confines itself).
func RunningIoctls() []uint64 {
	return []uint64{
		kvmRun, kvmGetRegs, kvmSetRegs, kvmGetSregs, kvmSetSregs, kvmGetFPU, kvmSetFPU,
		kvmGetLAPIC, kvmSetLAPIC, kvmGetMSRs, kvmSetMSRs, kvmGetMPState, kvmSetMPState,
		kvmIRQLine, kvmIRQFD, kvmIOEventFD, kvmSignalMSI,
		// A snapshot of the running VM reads its state.
		kvmGetIRQChip, kvmGetPIT2, kvmGetClock, kvmGetVCPUEvents, kvmGetDebugRegs, kvmGetXSave, kvmGetXCRs,
	}
}
