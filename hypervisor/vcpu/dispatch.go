package vcpu

import (
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/bus"
	"github.com/vmctl/vmctl/hypervisor/kvm"
)

// Buses are where exits go.
type Buses struct {
	PIO  *bus.Bus
	MMIO *bus.Bus
}

// HandleExit carries out one exit: port and MMIO accesses go to the buses
// (an access no device claims reads as all ones and writes nowhere, like an
// open bus), exits that leave the guest able to continue are absorbed, and
// the rest end the run with a Result. It reports whether the run ends.
func HandleExit(e kvm.Exit, b Buses) (stop bool, r Result) {
	switch e.Reason {
	case kvm.ExitIO:
		io := e.IO
		size := int(io.Size)
		// String I/O (rep ins/outs) packs Count elements of Size bytes.
		for i := 0; i+size <= len(io.Data); i += size {
			chunk := io.Data[i : i+size]
			if io.Out {
				b.PIO.Write(uint64(io.Port), chunk)
			} else {
				b.PIO.Read(uint64(io.Port), chunk)
			}
		}
		return false, Result{}
	case kvm.ExitMMIO:
		if e.MMIO.Write {
			b.MMIO.Write(e.MMIO.Addr, e.MMIO.Data)
		} else {
			b.MMIO.Read(e.MMIO.Addr, e.MMIO.Data)
		}
		return false, Result{}
	case kvm.ExitIntr, kvm.ExitIRQWindowOpen, kvm.ExitIOAPICEOI, kvm.ExitSetTPR,
		kvm.ExitTPRAccess, kvm.ExitNMI, kvm.ExitDebug, kvm.ExitHypercall:
		// Nothing for the VMM to do: with an in-kernel irqchip and no
		// debugging or hypercall exits enabled these only mean "run again".
		return false, Result{}
	case kvm.ExitHLT:
		return true, Result{ReasonHalt, "HLT with no interrupt source"}
	case kvm.ExitShutdown:
		return true, Result{ReasonTripleFault, "KVM_EXIT_SHUTDOWN (triple fault)"}
	case kvm.ExitFailEntry:
		return true, Result{ReasonFailEntry, e.String()}
	case kvm.ExitInternalError:
		if e.Suberror == kvm.InternalErrorEmulation {
			return true, Result{ReasonEmulationFailure, e.String()}
		}
		return true, Result{ReasonInternalError, e.String()}
	case kvm.ExitSystemEvent:
		switch e.Suberror {
		case kvm.SystemEventShutdown:
			return true, Result{ReasonPoweroff, e.String()}
		case kvm.SystemEventReset:
			return true, Result{ReasonReboot, e.String()}
		case kvm.SystemEventCrash:
			return true, Result{ReasonGuestCrash, e.String()}
		case kvm.SystemEventWakeup, kvm.SystemEventSuspend:
			return false, Result{}
		}
		return true, Result{ReasonUnhandledExit, e.String()}
	}
	return true, Result{ReasonUnhandledExit, fmt.Sprintf("%v", e)}
}
