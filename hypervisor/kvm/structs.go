package kvm

// Regs mirrors struct kvm_regs, arch/x86/include/uapi/asm/kvm.h.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment, arch/x86/include/uapi/asm/kvm.h.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable mirrors struct kvm_dtable, arch/x86/include/uapi/asm/kvm.h.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs mirrors struct kvm_sregs, arch/x86/include/uapi/asm/kvm.h.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64
}

// FPU mirrors struct kvm_fpu, arch/x86/include/uapi/asm/kvm.h.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// LAPICState mirrors struct kvm_lapic_state, arch/x86/include/uapi/asm/kvm.h:
// the local APIC's register page as the kernel keeps it.
type LAPICState struct {
	Regs [1024]byte
}

// MSREntry mirrors struct kvm_msr_entry, arch/x86/include/uapi/asm/kvm.h.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// maxMSRs bounds one KVM_GET_MSRS/KVM_SET_MSRS call; boot needs about a dozen.
const maxMSRs = 64

// msrs mirrors struct kvm_msrs followed by its flexible entries array.
type msrs struct {
	NMSRs   uint32
	_       uint32
	Entries [maxMSRs]MSREntry
}

// CPUIDEntry mirrors struct kvm_cpuid_entry2, arch/x86/include/uapi/asm/kvm.h.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUIDFlagSignificantIndex (KVM_CPUID_FLAG_SIGNIFCANT_INDEX) marks leaves
// whose sub-leaf index matters.
const CPUIDFlagSignificantIndex = 1

// maxCPUIDEntries is KVM_MAX_CPUID_ENTRIES in the kernel (256).
const maxCPUIDEntries = 256

// cpuid2 mirrors struct kvm_cpuid2 followed by its flexible entries array.
type cpuid2 struct {
	NEnt    uint32
	_       uint32
	Entries [maxCPUIDEntries]CPUIDEntry
}

// UserspaceMemoryRegion mirrors struct kvm_userspace_memory_region,
// include/uapi/linux/kvm.h.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// irqLevel mirrors struct kvm_irq_level, include/uapi/linux/kvm.h.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// irqfd mirrors struct kvm_irqfd, include/uapi/linux/kvm.h.
type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

const irqfdFlagDeassign = 1

// ioeventfd mirrors struct kvm_ioeventfd, include/uapi/linux/kvm.h.
type ioeventfd struct {
	DataMatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

const (
	ioeventfdFlagDataMatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2
)

// pitConfig mirrors struct kvm_pit_config, arch/x86/include/uapi/asm/kvm.h.
type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

// pitSpeakerDummy (KVM_PIT_SPEAKER_DUMMY) makes KVM emulate port 0x61 so
// the guest's PIT calibration reads the gate/output bits without exiting.
const pitSpeakerDummy = 1

// MSI mirrors struct kvm_msi, include/uapi/linux/kvm.h.
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// MPState values (KVM_MP_STATE_*), for GetMPState/SetMPState.
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// mpState mirrors struct kvm_mp_state, include/uapi/linux/kvm.h.
type mpState struct {
	State uint32
}
