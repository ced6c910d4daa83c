package x86

import (
	"encoding/binary"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/memory"
)

func TestRAMRangesAndE820(t *testing.T) {
	tests := []struct {
		size    uint64
		wantErr bool
		ranges  []memory.Range
		e820    []E820Entry
	}{
		{size: 8 << 20, wantErr: true},
		{size: 256<<20 + 4096, wantErr: true},
		{size: 256 << 20,
			ranges: []memory.Range{{GPA: 0, Size: 256 << 20}},
			e820: []E820Entry{
				{0, 0x9fc00, E820RAM},
				{0x9fc00, 0x100000 - 0x9fc00, E820Reserved},
				{0x100000, 255 << 20, E820RAM},
			}},
		{size: 4 << 30,
			ranges: []memory.Range{{GPA: 0, Size: 3 << 30}, {GPA: 4 << 30, Size: 1 << 30}},
			e820: []E820Entry{
				{0, 0x9fc00, E820RAM},
				{0x9fc00, 0x100000 - 0x9fc00, E820Reserved},
				{0x100000, 3<<30 - 0x100000, E820RAM},
				{4 << 30, 1 << 30, E820RAM},
			}},
	}
	for _, tt := range tests {
		r, err := RAMRanges(tt.size)
		if (err != nil) != tt.wantErr {
			t.Fatalf("RAMRanges(%#x) error = %v, want error %v", tt.size, err, tt.wantErr)
		}
		if err != nil {
			continue
		}
		if len(r) != len(tt.ranges) {
			t.Fatalf("RAMRanges(%#x) = %+v, want %+v", tt.size, r, tt.ranges)
		}
		for i := range r {
			if r[i] != tt.ranges[i] {
				t.Errorf("RAMRanges(%#x)[%d] = %+v, want %+v", tt.size, i, r[i], tt.ranges[i])
			}
		}
		e, err := E820(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(e) != len(tt.e820) {
			t.Fatalf("E820 = %+v, want %+v", e, tt.e820)
		}
		for i := range e {
			if e[i] != tt.e820[i] {
				t.Errorf("E820[%d] = %+v, want %+v", i, e[i], tt.e820[i])
			}
		}
	}
}

func testMem(t *testing.T) *memory.Guest {
	t.Helper()
	g, err := memory.NewGuest([]memory.Range{{GPA: 0, Size: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// walk translates va through the 4-level tables in mem, as the MMU would.
func walk(t *testing.T, mem memory.Memory, va uint64) (uint64, bool) {
	t.Helper()
	pml4e, _ := mem.ReadUint64(PML4Addr + (va>>39&511)*8)
	if pml4e&1 == 0 {
		return 0, false
	}
	pdpte, _ := mem.ReadUint64(pml4e&^0xfff + (va>>30&511)*8)
	if pdpte&1 == 0 {
		return 0, false
	}
	pde, _ := mem.ReadUint64(pdpte&^0xfff + (va>>21&511)*8)
	if pde&1 == 0 || pde&0x80 == 0 {
		return 0, false
	}
	return pde&^0x1fffff | va&0x1fffff, true
}

func TestPageTablesIdentityMapLow4GiB(t *testing.T) {
	mem := testMem(t)
	if err := WriteBootTables(mem); err != nil {
		t.Fatal(err)
	}
	for _, va := range []uint64{0, ZeroPageAddr, KernelAddr + 0x200, 0x3fffffff, 0x40000000, 0xbfffffff, 0xfee00000, 0xffffffff} {
		pa, ok := walk(t, mem, va)
		if !ok || pa != va {
			t.Errorf("translate(%#x) = %#x, %v; want identity", va, pa, ok)
		}
	}
	if _, ok := walk(t, mem, 1<<32); ok {
		t.Errorf("4 GiB is mapped; the boot tables map only the low 4 GiB")
	}
}

func TestGDTSegmentsRoundTrip(t *testing.T) {
	tests := []struct {
		sel  uint16
		want kvm.Segment
	}{
		{codeSelector, kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 11, Present: 1, S: 1, L: 1, G: 1}},
		{dataSelector, kvm.Segment{Limit: 0xffffffff, Selector: 0x18, Type: 3, Present: 1, S: 1, DB: 1, G: 1}},
		{tssSelector, kvm.Segment{Limit: 0xffffffff, Selector: 0x20, Type: 11, Present: 1, G: 1}},
	}
	for _, tt := range tests {
		if got := segment(gdt[tt.sel/8], tt.sel); got != tt.want {
			t.Errorf("segment(%#x) = %+v, want %+v", tt.sel, got, tt.want)
		}
	}
	if got := gdtEntry(0xa09b, 0, 0xfffff); got != 0x00af9b000000ffff {
		t.Errorf("gdtEntry(code64) = %#x, want 0x00af9b000000ffff", got)
	}
	s := LongModeSregs(kvm.Sregs{})
	if s.CR0&cr0PG == 0 || s.CR4&cr4PAE == 0 || s.EFER&(eferLME|eferLMA) != eferLME|eferLMA || s.CR3 != PML4Addr {
		t.Errorf("LongModeSregs: cr0 %#x cr4 %#x efer %#x cr3 %#x", s.CR0, s.CR4, s.EFER, s.CR3)
	}
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func TestMPTable(t *testing.T) {
	for _, n := range []int{1, 2, 8, MaxVCPUs} {
		tab, err := MPTable(EBDAAddr, n)
		if err != nil {
			t.Fatal(err)
		}
		if string(tab[:4]) != "_MP_" || sum(tab[:16]) != 0 {
			t.Errorf("n=%d: floating pointer %q checksum %d", n, tab[:4], sum(tab[:16]))
		}
		if p := binary.LittleEndian.Uint32(tab[4:]); p != EBDAAddr+16 {
			t.Errorf("n=%d: config pointer %#x", n, p)
		}
		mpc := tab[16:]
		length := binary.LittleEndian.Uint16(mpc[4:])
		if string(mpc[:4]) != "PCMP" || int(length) != len(mpc) || sum(mpc[:length]) != 0 {
			t.Errorf("n=%d: config %q length %d/%d checksum %d", n, mpc[:4], length, len(mpc), sum(mpc))
		}
		// Walk the entries: count processors, find the IRQ 0 and IRQ 4 routes.
		procs, routes := 0, map[byte]byte{}
		off := 44
		for i := 0; i < int(binary.LittleEndian.Uint16(mpc[34:])); i++ {
			switch mpc[off] {
			case mpTypeProcessor:
				if mpc[off+1] != byte(procs) || (procs == 0) != (mpc[off+3]&cpuBSP != 0) {
					t.Errorf("n=%d: processor entry %d: apic id %d flags %#x", n, procs, mpc[off+1], mpc[off+3])
				}
				procs++
				off += 20
			case mpTypeIOIntr:
				routes[mpc[off+5]] = mpc[off+7]
				if mpc[off+6] != byte(n) {
					t.Errorf("n=%d: interrupt routed to IOAPIC %d", n, mpc[off+6])
				}
				off += 8
			default:
				off += 8
			}
		}
		if off != len(mpc) {
			t.Errorf("n=%d: entries end at %d, table at %d", n, off, len(mpc))
		}
		if procs != n {
			t.Errorf("n=%d: %d processors", n, procs)
		}
		// KVM's default routing sends GSI i to IOAPIC pin i, and its PIT
		// raises GSI 0: every ISA IRQ must name the pin of its own number.
		if len(routes) != MaxIRQ+1 {
			t.Errorf("n=%d: %d interrupt routes, want %d", n, len(routes), MaxIRQ+1)
		}
		for irq := byte(0); irq <= MaxIRQ; irq++ {
			if pin, ok := routes[irq]; !ok || pin != irq {
				t.Errorf("n=%d: IRQ %d -> pin %d (present %v), want pin %d", n, irq, pin, ok, irq)
			}
		}
	}
	if _, err := MPTable(EBDAAddr, 0); err == nil {
		t.Error("MPTable with 0 vCPUs succeeded")
	}
	if _, err := MPTable(EBDAAddr, MaxVCPUs+1); err == nil {
		t.Error("MPTable above MaxVCPUs succeeded")
	}
}

func TestPatchCPUID(t *testing.T) {
	in := []kvm.CPUIDEntry{
		{Function: 0, EAX: 0xd},
		{Function: 1, EBX: 0xff00_0800, ECX: 0x1},
		{Function: 0xb, Index: 1, Flags: kvm.CPUIDFlagSignificantIndex, EDX: 7},
	}
	out := PatchCPUID(in, 3, 4, CPUIDOptions{})
	if in[1].ECX != 0x1 {
		t.Error("PatchCPUID modified its input")
	}
	find := func(fn uint32) kvm.CPUIDEntry {
		for _, e := range out {
			if e.Function == fn {
				return e
			}
		}
		t.Fatalf("leaf %#x missing", fn)
		return kvm.CPUIDEntry{}
	}
	l1 := find(1)
	if l1.ECX&(1<<31) == 0 || l1.ECX&1 == 0 {
		t.Errorf("leaf 1 ECX = %#x, want hypervisor bit and the original bits", l1.ECX)
	}
	if l1.EBX>>24 != 3 || l1.EBX>>16&0xff != 4 || l1.EBX&0xffff != 0x0800 || l1.EDX&edxHTT == 0 {
		t.Errorf("leaf 1 EBX = %#x EDX = %#x, want APIC ID 3, 4 logical CPUs, HTT", l1.EBX, l1.EDX)
	}
	if e := find(0xb); e.EDX != 3 {
		t.Errorf("leaf 0xb EDX = %d, want x2APIC ID 3", e.EDX)
	}
	sig := find(leafKVMSig)
	var b [12]byte
	binary.LittleEndian.PutUint32(b[0:], sig.EBX)
	binary.LittleEndian.PutUint32(b[4:], sig.ECX)
	binary.LittleEndian.PutUint32(b[8:], sig.EDX)
	if string(b[:9]) != "KVMKVMKVM" || sig.EAX < leafKVMFeatures {
		t.Errorf("leaf 0x40000000 = %q max %#x", b, sig.EAX)
	}
}

func TestBootLAPIC(t *testing.T) {
	tests := []struct {
		name         string
		bsp          bool
		lint0, lint1 uint32 // before
		want0, want1 uint32
	}{
		// Other bits (vector, trigger) and LINT1's mask are kept.
		{name: "BSP, masked fixed at reset", bsp: true, lint0: 0x10000, lint1: 0x10000, want0: 0x700, want1: 0x10400},
		{name: "BSP keeps trigger bits", bsp: true, lint0: 0x8020, want0: 0x8720, want1: 0x400},
		{name: "AP", bsp: false, lint0: 0, lint1: 0x10000, want0: 0x10700, want1: 0x10400},
	}
	for _, tt := range tests {
		var l kvm.LAPICState
		binary.LittleEndian.PutUint32(l.Regs[apicLVTLINT0:], tt.lint0)
		binary.LittleEndian.PutUint32(l.Regs[apicLVTLINT1:], tt.lint1)
		l = BootLAPIC(l, tt.bsp)
		if v := binary.LittleEndian.Uint32(l.Regs[apicLVTLINT0:]); v != tt.want0 {
			t.Errorf("%s: LINT0 = %#x, want %#x", tt.name, v, tt.want0)
		}
		if v := binary.LittleEndian.Uint32(l.Regs[apicLVTLINT1:]); v != tt.want1 {
			t.Errorf("%s: LINT1 = %#x, want %#x", tt.name, v, tt.want1)
		}
	}
}

func TestPatchCPUIDTSCDeadline(t *testing.T) {
	in := []kvm.CPUIDEntry{{Function: 1, ECX: 0x1}}
	tests := []struct {
		opts CPUIDOptions
		want bool
	}{
		{CPUIDOptions{}, false},
		{CPUIDOptions{TSCDeadline: true}, true},
	}
	for _, tt := range tests {
		out := PatchCPUID(in, 0, 1, tt.opts)
		for _, e := range out {
			if e.Function != 1 {
				continue
			}
			if got := e.ECX&ecxTSCDeadline != 0; got != tt.want {
				t.Errorf("PatchCPUID(%+v): leaf 1 ECX = %#x, TSC-deadline bit %v, want %v", tt.opts, e.ECX, got, tt.want)
			}
			if e.ECX&1 == 0 || e.ECX&ecxHypervisor == 0 {
				t.Errorf("PatchCPUID(%+v): leaf 1 ECX = %#x lost the original or hypervisor bit", tt.opts, e.ECX)
			}
		}
	}
}

func TestPatchCPUIDKeepsKVMFeatures(t *testing.T) {
	const kvmclock2 = 1 << 3 // KVM_FEATURE_CLOCKSOURCE2
	in := []kvm.CPUIDEntry{
		{Function: 1},
		{Function: leafKVMSig, EAX: leafKVMFeatures},
		{Function: leafKVMFeatures, EAX: kvmclock2 | 1},
	}
	out := PatchCPUID(in, 0, 1, CPUIDOptions{TSCDeadline: true})
	found := false
	for _, e := range out {
		if e.Function == leafKVMFeatures {
			found = true
			if e.EAX != kvmclock2|1 {
				t.Errorf("leaf 0x40000001 EAX = %#x, want KVM's %#x", e.EAX, kvmclock2|1)
			}
		}
	}
	if !found {
		t.Error("leaf 0x40000001 dropped")
	}
}
