package x86

import "github.com/vmctl/vmctl/hypervisor/kvm"

// CPUID leaves and bits the VMM changes.
const (
	leafFeatures    = 0x1
	leafTopology    = 0xb
	leafTopologyV2  = 0x1f
	leafKVMSig      = 0x40000000
	leafKVMFeatures = 0x40000001

	ecxHypervisor  = 1 << 31 // CPUID.1:ECX[31], "running under a hypervisor"
	ecxTSCDeadline = 1 << 24 // CPUID.1:ECX[24], the LAPIC timer's TSC-deadline mode
	edxHTT         = 1 << 28 // CPUID.1:EDX[28], EBX[23:16] counts logical CPUs
)

// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX: the signature Linux's kvm guest
// support looks for before it uses kvm-clock.
const (
	kvmSigEBX = 0x4b4d564b
	kvmSigECX = 0x564b4d56
	kvmSigEDX = 0x4d
)

// CPUIDOptions are the host facts PatchCPUID needs beyond the supported
// table.
type CPUIDOptions struct {
	// TSCDeadline: KVM_CAP_TSC_DEADLINE_TIMER is present, so the in-kernel
	// LAPIC emulates the TSC-deadline timer mode.
	TSCDeadline bool
}

// PatchCPUID returns the CPUID table for vCPU id of n, starting from what
// KVM_GET_SUPPORTED_CPUID reports:
//   - leaf 1: the hypervisor bit (KVM does not set it, and without it Linux
//     never probes the 0x40000000 leaves, never finds kvm-clock and hangs
//     calibrating the TSC), the initial APIC ID and the logical CPU count,
//     and the TSC-deadline bit when opts.TSCDeadline: KVM reports that mode
//     through the capability, not in the supported table, and with it
//     Linux arms the LAPIC timer in TSC ticks instead of calibrating the
//     LAPIC against the PIT (slow and fragile when nested);
//   - leaves 0xb and 0x1f: the x2APIC ID;
//   - leaf 0x40000000: the KVM signature, added if KVM did not report it.
//
// The KVM features leaf 0x40000001 (kvm-clock, async PF, PV EOI, ...) is
// passed on as KVM reports it, as Firecracker does.
//
// supported is not modified.
func PatchCPUID(supported []kvm.CPUIDEntry, id, n int, opts CPUIDOptions) []kvm.CPUIDEntry {
	out := append([]kvm.CPUIDEntry(nil), supported...)
	hasSig := false
	for i := range out {
		e := &out[i]
		switch e.Function {
		case leafFeatures:
			e.ECX |= ecxHypervisor
			if opts.TSCDeadline {
				e.ECX |= ecxTSCDeadline
			}
			e.EBX = e.EBX&0xffff | uint32(id)<<24 | uint32(min(n, 255))<<16
			if n > 1 {
				e.EDX |= edxHTT
			}
		case leafTopology, leafTopologyV2:
			e.EDX = uint32(id)
		case leafKVMSig:
			hasSig = true
			e.EBX, e.ECX, e.EDX = kvmSigEBX, kvmSigECX, kvmSigEDX
			e.EAX = max(e.EAX, leafKVMFeatures)
		}
	}
	if !hasSig {
		out = append(out, kvm.CPUIDEntry{Function: leafKVMSig, EAX: leafKVMFeatures, EBX: kvmSigEBX, ECX: kvmSigECX, EDX: kvmSigEDX})
	}
	return out
}
