// Package vcpu runs virtual CPUs: one goroutine per vCPU, locked to its OS
// thread, looping on KVM_RUN and dispatching each exit to the PIO or MMIO
// bus. A vCPU has explicit states, changed only by its own goroutine in
// answer to requests sent over channels:
//
//	Created --Start--> Running --Pause--> Paused --Resume--> Running
//	Running|Paused --Stop, or an exit that ends the VM--> Exited
//
// Requests reach a vCPU inside KVM_RUN by setting kvm_run.immediate_exit
// and sending SIGURG to its thread (tgkill): the signal cuts a KVM_RUN
// already in the guest short, immediate_exit one about to enter. SIGURG is
// the signal Go's runtime uses for preemption and tolerates unasked.
//
// Exit handling is the pure function HandleExit. Nothing the guest does
// makes it panic; an exit that cannot continue ends the VM with a Reason,
// and each Reason has a documented process exit code:
//
//	0   guest poweroff or reboot (i8042 reset, KVM system event), halt
//	    without interrupts, or a stop requested by the host
//	1   host-side failure (KVM_RUN failed, unreadable exit)
//	10  triple fault (KVM_EXIT_SHUTDOWN)
//	11  instruction emulation failure (KVM internal error, suberror 1)
//	12  other KVM internal error
//	13  VM entry failure (KVM_EXIT_FAIL_ENTRY)
//	14  guest crash reported by KVM (system event crash)
//	15  an exit reason this VMM does not handle
//
// This package does not create vCPUs or set their registers; the machine
// does.
package vcpu

import "fmt"

// Reason is why a vCPU, and with it the VM, stopped.
type Reason int

const (
	ReasonNone Reason = iota
	// ReasonStopped: the host asked the VM to stop.
	ReasonStopped
	// ReasonPoweroff: the guest powered off (KVM system event shutdown).
	ReasonPoweroff
	// ReasonReboot: the guest reset the machine (i8042 0xFE, system event reset).
	ReasonReboot
	// ReasonHalt: HLT with no in-kernel irqchip, so nothing can wake the CPU.
	ReasonHalt
	// ReasonTripleFault: KVM_EXIT_SHUTDOWN, a fault while delivering a double fault.
	ReasonTripleFault
	// ReasonEmulationFailure: KVM could not emulate an instruction.
	ReasonEmulationFailure
	// ReasonInternalError: any other KVM internal error.
	ReasonInternalError
	// ReasonFailEntry: the hardware refused to enter the guest.
	ReasonFailEntry
	// ReasonGuestCrash: KVM reported a guest crash (system event crash).
	ReasonGuestCrash
	// ReasonUnhandledExit: an exit reason this VMM has no handling for.
	ReasonUnhandledExit
	// ReasonHostError: KVM_RUN itself failed or its exit could not be read.
	ReasonHostError
)

var reasonInfo = map[Reason]struct {
	name string
	code int
}{
	ReasonNone:             {"none", 0},
	ReasonStopped:          {"stopped", 0},
	ReasonPoweroff:         {"poweroff", 0},
	ReasonReboot:           {"reboot", 0},
	ReasonHalt:             {"halt", 0},
	ReasonHostError:        {"host-error", 1},
	ReasonTripleFault:      {"triple-fault", 10},
	ReasonEmulationFailure: {"emulation-failure", 11},
	ReasonInternalError:    {"internal-error", 12},
	ReasonFailEntry:        {"fail-entry", 13},
	ReasonGuestCrash:       {"guest-crash", 14},
	ReasonUnhandledExit:    {"unhandled-exit", 15},
}

func (r Reason) String() string {
	if i, ok := reasonInfo[r]; ok {
		return i.name
	}
	return fmt.Sprintf("reason-%d", int(r))
}

// ExitCode is the vmctl-vmm process exit code for r (see the package doc).
func (r Reason) ExitCode() int {
	if i, ok := reasonInfo[r]; ok {
		return i.code
	}
	return 1
}

// Reasons lists every reason, for documentation and the control API.
func Reasons() []Reason {
	return []Reason{ReasonStopped, ReasonPoweroff, ReasonReboot, ReasonHalt, ReasonHostError,
		ReasonTripleFault, ReasonEmulationFailure, ReasonInternalError, ReasonFailEntry,
		ReasonGuestCrash, ReasonUnhandledExit}
}

// Result is how a vCPU ended.
type Result struct {
	Reason Reason
	// Detail says more, for logs: the exit that ended the run, with its data.
	Detail string
}

func (r Result) String() string {
	if r.Detail == "" {
		return r.Reason.String()
	}
	return r.Reason.String() + ": " + r.Detail
}
