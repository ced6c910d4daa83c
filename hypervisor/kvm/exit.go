package kvm

import (
	"encoding/binary"
	"fmt"
)

// ExitReason is kvm_run.exit_reason (KVM_EXIT_*, include/uapi/linux/kvm.h).
type ExitReason uint32

// Exit reasons. Those an x86 VMM without Hyper-V, Xen or userspace MSR
// handling can see are named; the rest decode as their number.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitWatchdog      ExitReason = 21
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitHyperV        ExitReason = 27
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitDirtyRingFull ExitReason = 31
	ExitAPResetHold   ExitReason = 32
	ExitX86BusLock    ExitReason = 33
	ExitXen           ExitReason = 34
	ExitNotify        ExitReason = 37
	ExitMemoryFault   ExitReason = 39
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "UNKNOWN", ExitException: "EXCEPTION", ExitIO: "IO", ExitHypercall: "HYPERCALL",
	ExitDebug: "DEBUG", ExitHLT: "HLT", ExitMMIO: "MMIO", ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown: "SHUTDOWN", ExitFailEntry: "FAIL_ENTRY", ExitIntr: "INTR", ExitSetTPR: "SET_TPR",
	ExitTPRAccess: "TPR_ACCESS", ExitNMI: "NMI", ExitInternalError: "INTERNAL_ERROR",
	ExitWatchdog: "WATCHDOG", ExitSystemEvent: "SYSTEM_EVENT", ExitIOAPICEOI: "IOAPIC_EOI",
	ExitHyperV: "HYPERV", ExitX86RDMSR: "X86_RDMSR", ExitX86WRMSR: "X86_WRMSR",
	ExitDirtyRingFull: "DIRTY_RING_FULL", ExitAPResetHold: "AP_RESET_HOLD", ExitX86BusLock: "X86_BUS_LOCK",
	ExitXen: "XEN", ExitNotify: "NOTIFY", ExitMemoryFault: "MEMORY_FAULT",
}

func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return "KVM_EXIT_" + n
	}
	return fmt.Sprintf("KVM_EXIT_%d", uint32(r))
}

// Internal error sub-reasons (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation      = 1
	InternalErrorSimulEx        = 2
	InternalErrorDeliveryEv     = 3
	InternalErrorUnexpectedExit = 4
)

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
	SystemEventWakeup   = 4
	SystemEventSuspend  = 5
	SystemEventSEVTerm  = 6
)

// Exit is one decoded KVM_RUN exit. Only the field matching Reason is set.
type Exit struct {
	Reason ExitReason
	// IO is set for ExitIO.
	IO IOExit
	// MMIO is set for ExitMMIO.
	MMIO MMIOExit
	// HardwareReason is hw.hardware_exit_reason (ExitUnknown) or
	// fail_entry.hardware_entry_failure_reason (ExitFailEntry).
	HardwareReason uint64
	// FailEntryCPU is fail_entry.cpu.
	FailEntryCPU uint32
	// Exception and ErrorCode are ex.* for ExitException.
	Exception, ErrorCode uint32
	// Suberror and Data are internal.* for ExitInternalError, or the
	// system_event type and data for ExitSystemEvent.
	Suberror uint32
	Data     []uint64
}

// IOExit mirrors the io member of struct kvm_run's exit union.
type IOExit struct {
	Out   bool
	Size  uint8
	Port  uint16
	Count uint32
	// Data is the Size*Count bytes at data_offset inside kvm_run: the
	// values written (Out) or the buffer to fill (in).
	Data []byte
}

// MMIOExit mirrors the mmio member of struct kvm_run's exit union.
type MMIOExit struct {
	Addr  uint64
	Write bool
	// Data is data[:len] inside kvm_run: the value written, or the buffer
	// to fill for a read.
	Data []byte
}

// struct kvm_run layout (include/uapi/linux/kvm.h): a 32-byte header and
// the exit union at offset 32.
const (
	runExitReasonOff = 8
	runUnionOff      = 32
	runHeaderSize    = runUnionOff + 256
)

// DecodeExit decodes the exit described by a kvm_run mapping. Every offset
// and length read from run is checked against len(run), so a corrupt or
// synthetic page yields an error, never a panic.
func DecodeExit(run []byte) (Exit, error) {
	if len(run) < runHeaderSize {
		return Exit{}, fmt.Errorf("kvm_run is %d bytes, want at least %d", len(run), runHeaderSize)
	}
	le := binary.LittleEndian
	u := run[runUnionOff:]
	e := Exit{Reason: ExitReason(le.Uint32(run[runExitReasonOff:]))}
	switch e.Reason {
	case ExitIO:
		// direction u8, size u8, port u16, count u32, data_offset u64
		io := IOExit{Out: u[0] == 1, Size: u[1], Port: le.Uint16(u[2:]), Count: le.Uint32(u[4:])}
		off := le.Uint64(u[8:])
		n := uint64(io.Size) * uint64(io.Count)
		if io.Size == 0 || n == 0 || off > uint64(len(run)) || n > uint64(len(run))-off {
			return e, fmt.Errorf("KVM_EXIT_IO port %#x: data (%d x %d bytes at offset %#x) outside kvm_run", io.Port, io.Count, io.Size, off)
		}
		io.Data = run[off : off+n : off+n]
		e.IO = io
	case ExitMMIO:
		// phys_addr u64, data [8]u8, len u32, is_write u8
		n := le.Uint32(u[16:])
		if n == 0 || n > 8 {
			return e, fmt.Errorf("KVM_EXIT_MMIO at %#x: length %d", le.Uint64(u), n)
		}
		e.MMIO = MMIOExit{Addr: le.Uint64(u), Write: u[20] != 0, Data: u[8 : 8+n : 8+n]}
	case ExitUnknown:
		e.HardwareReason = le.Uint64(u)
	case ExitFailEntry:
		e.HardwareReason = le.Uint64(u)
		e.FailEntryCPU = le.Uint32(u[8:])
	case ExitException:
		e.Exception, e.ErrorCode = le.Uint32(u), le.Uint32(u[4:])
	case ExitInternalError, ExitSystemEvent:
		// internal: suberror u32, ndata u32, data [16]u64.
		// system_event: type u32, ndata u32, data [16]u64.
		e.Suberror = le.Uint32(u)
		nd := min(le.Uint32(u[4:]), 16)
		for i := range nd {
			e.Data = append(e.Data, le.Uint64(u[8+8*i:]))
		}
	}
	return e, nil
}

func (e Exit) String() string {
	switch e.Reason {
	case ExitIO:
		dir := "in"
		if e.IO.Out {
			dir = "out"
		}
		return fmt.Sprintf("%s %s port %#x size %d count %d", e.Reason, dir, e.IO.Port, e.IO.Size, e.IO.Count)
	case ExitMMIO:
		dir := "read"
		if e.MMIO.Write {
			dir = "write"
		}
		return fmt.Sprintf("%s %s %#x len %d", e.Reason, dir, e.MMIO.Addr, len(e.MMIO.Data))
	case ExitInternalError:
		return fmt.Sprintf("%s suberror %d data %#x", e.Reason, e.Suberror, e.Data)
	case ExitSystemEvent:
		return fmt.Sprintf("%s type %d data %#x", e.Reason, e.Suberror, e.Data)
	case ExitFailEntry:
		return fmt.Sprintf("%s hardware reason %#x cpu %d", e.Reason, e.HardwareReason, e.FailEntryCPU)
	case ExitUnknown:
		return fmt.Sprintf("%s hardware reason %#x", e.Reason, e.HardwareReason)
	case ExitException:
		return fmt.Sprintf("%s vector %d error code %#x", e.Reason, e.Exception, e.ErrorCode)
	}
	return e.Reason.String()
}
