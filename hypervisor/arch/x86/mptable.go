package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/memory"
)

// MaxVCPUs bounds the vCPU count: APIC IDs are 0..n-1 and the IOAPIC takes
// ID n, all below the broadcast ID 0xff, and the MP table stays small.
const MaxVCPUs = 64

// MaxIRQ is the highest IOAPIC pin (the KVM IOAPIC has 24).
const MaxIRQ = 23

// MP specification 1.4 structures. Sizes: floating pointer 16, header 44,
// processor 20, bus/IOAPIC/interrupt entries 8.
const (
	mpfSize       = 16
	mpcHeaderSize = 44
	mpProcSize    = 20
	mpEntrySize   = 8

	mpTypeProcessor = 0
	mpTypeBus       = 1
	mpTypeIOAPIC    = 2
	mpTypeIOIntr    = 3
	mpTypeLocalIntr = 4

	mpIntINT    = 0
	mpIntNMI    = 1
	mpIntExtINT = 3

	apicVersion   = 0x14
	ioapicVersion = 0x11
	cpuEnabled    = 1
	cpuBSP        = 2
	// cpuSignature is family 6, and features say FPU and APIC: the MP
	// parser only checks that an APIC exists.
	cpuSignature = 0x600
	cpuFeatures  = 0x201
)

// MPTable builds the MP floating pointer and configuration table for n
// vCPUs, to be placed at addr. ISA IRQ i is routed to IOAPIC pin i for
// every i, the cascade IRQ 2 included: that is KVM's default GSI routing
// (arch/x86/kvm/irq_comm.c, default_routing: GSI i -> IOAPIC pin i and PIC
// pin i%8), and the in-kernel PIT raises GSI 0, so its ticks arrive on pin
// 0. PC chipsets (and QEMU, which installs its own GSI routing) wire the
// PIT to pin 2 instead; a table saying so here would make Linux program a
// pin that never fires, and its timer checks fail.
func MPTable(addr uint64, n int) ([]byte, error) {
	if n < 1 || n > MaxVCPUs {
		return nil, fmt.Errorf("MP table: %d vCPUs, want 1 to %d", n, MaxVCPUs)
	}
	ioapicID := byte(n)
	le := binary.LittleEndian
	var entries []byte
	count := 0
	add := func(e []byte) { entries = append(entries, e...); count++ }
	for i := 0; i < n; i++ {
		p := make([]byte, mpProcSize)
		p[0], p[1], p[2] = mpTypeProcessor, byte(i), apicVersion
		p[3] = cpuEnabled
		if i == 0 {
			p[3] |= cpuBSP
		}
		le.PutUint32(p[4:], cpuSignature)
		le.PutUint32(p[8:], cpuFeatures)
		add(p)
	}
	add([]byte{mpTypeBus, 0, 'I', 'S', 'A', ' ', ' ', ' '})
	io := make([]byte, mpEntrySize)
	io[0], io[1], io[2], io[3] = mpTypeIOAPIC, ioapicID, ioapicVersion, 1
	le.PutUint32(io[4:], IOAPICAddr)
	add(io)
	for irq := 0; irq <= MaxIRQ; irq++ {
		// irqflag 0: polarity and trigger conform to the bus (ISA: edge, high).
		add([]byte{mpTypeIOIntr, mpIntINT, 0, 0, 0, byte(irq), ioapicID, byte(irq)})
	}
	add([]byte{mpTypeLocalIntr, mpIntExtINT, 0, 0, 0, 0, 0xff, 0})
	add([]byte{mpTypeLocalIntr, mpIntNMI, 0, 0, 0, 0, 0xff, 1})

	table := make([]byte, mpfSize+mpcHeaderSize+len(entries))
	mpf := table[:mpfSize]
	copy(mpf, "_MP_")
	le.PutUint32(mpf[4:], uint32(addr+mpfSize))
	mpf[8], mpf[9] = 1, 4 // length in 16-byte units, spec revision 1.4
	mpf[10] = checksum(mpf)

	mpc := table[mpfSize:]
	copy(mpc, "PCMP")
	le.PutUint16(mpc[4:], uint16(len(mpc)))
	mpc[6] = 4
	copy(mpc[8:16], "VMCTL   ")
	copy(mpc[16:28], "VMCTL-VMM   ")
	le.PutUint16(mpc[34:], uint16(count))
	le.PutUint32(mpc[36:], LAPICAddr)
	copy(mpc[mpcHeaderSize:], entries)
	mpc[7] = checksum(mpc)
	return table, nil
}

// checksum returns the byte that makes b sum to zero (b's own checksum
// byte must be zero when called).
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// WriteMPTable writes the MP table for n vCPUs at EBDAAddr.
func WriteMPTable(mem memory.Memory, n int) error {
	t, err := MPTable(EBDAAddr, n)
	if err != nil {
		return err
	}
	if err := mem.WriteAt(t, EBDAAddr); err != nil {
		return fmt.Errorf("write MP table: %w", err)
	}
	return nil
}
