package machine

import (
	"strings"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/kvm"
)

// A VM state decodes only as written: damage, another format or a state
// that does not hold what it claims is refused before any VM is built.
func TestSnapshotEncoding(t *testing.T) {
	s := &savedVM{Format: snapshotFormat, VCPUs: 1, MemoryMiB: 256, Cmdline: "console=ttyS0",
		CPUs:  []savedCPU{{Regs: kvm.Regs{RIP: 0xffffffff81000000}, MSRs: []kvm.MSREntry{{Index: 0x10, Data: 42}}}},
		Chips: make([]kvm.IRQChip, 3), Clock: 123456789}
	b, err := encodeSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got.CPUs[0].Regs.RIP != s.CPUs[0].Regs.RIP || got.CPUs[0].MSRs[0] != s.CPUs[0].MSRs[0] || got.Clock != s.Clock || got.Cmdline != s.Cmdline {
		t.Fatalf("decoded %+v, want %+v", got, s)
	}

	flipped := append([]byte(nil), b...)
	flipped[len(flipped)/2] ^= 1
	truncated := b[:len(b)-10]
	other := *s
	other.Format = snapshotFormat + 1
	otherB, _ := encodeSnapshot(&other)
	short := *s
	short.VCPUs = 2
	shortB, _ := encodeSnapshot(&short)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"a flipped bit", flipped, "damaged"},
		{"truncated", truncated, "damaged"},
		{"not a state", []byte("hello"), "not a vmctl-vmm VM state"},
		{"another format", otherB, "format"},
		{"fewer vCPUs than it claims", shortB, "holds 1 vCPUs of 2"},
	} {
		if _, err := decodeSnapshot(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: decode = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// A restore that does not give the saved RAM exactly once is refused by
// Validate.
func TestRestoreConfig(t *testing.T) {
	c := Config{Restore: &Snapshot{State: []byte("x")}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "saved guest RAM") {
		t.Fatalf("Validate without RAM = %v", err)
	}
}
