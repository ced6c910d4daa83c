package kvm

import (
	"encoding/binary"
	"testing"
)

// fakeRun builds a kvm_run page with the given exit reason and union bytes.
func fakeRun(reason ExitReason, union []byte) []byte {
	run := make([]byte, 4096)
	binary.LittleEndian.PutUint32(run[runExitReasonOff:], uint32(reason))
	copy(run[runUnionOff:], union)
	return run
}

func ioUnion(out bool, size uint8, port uint16, count uint32, off uint64) []byte {
	u := make([]byte, 16)
	if out {
		u[0] = 1
	}
	u[1] = size
	binary.LittleEndian.PutUint16(u[2:], port)
	binary.LittleEndian.PutUint32(u[4:], count)
	binary.LittleEndian.PutUint64(u[8:], off)
	return u
}

func mmioUnion(addr uint64, data []byte, n uint32, write bool) []byte {
	u := make([]byte, 24)
	binary.LittleEndian.PutUint64(u, addr)
	copy(u[8:16], data)
	binary.LittleEndian.PutUint32(u[16:], n)
	if write {
		u[20] = 1
	}
	return u
}

func TestDecodeExit(t *testing.T) {
	tests := []struct {
		name    string
		run     []byte
		wantErr bool
		check   func(t *testing.T, e Exit)
	}{
		{"short page", make([]byte, 100), true, nil},
		{"io out", func() []byte {
			r := fakeRun(ExitIO, ioUnion(true, 1, 0x3f8, 1, 0x1000-8))
			r[0x1000-8] = 'A'
			return r
		}(), false, func(t *testing.T, e Exit) {
			if !e.IO.Out || e.IO.Port != 0x3f8 || e.IO.Size != 1 || len(e.IO.Data) != 1 || e.IO.Data[0] != 'A' {
				t.Errorf("io = %+v", e.IO)
			}
		}},
		{"io string", fakeRun(ExitIO, ioUnion(false, 2, 0x60, 3, 512)), false, func(t *testing.T, e Exit) {
			if e.IO.Out || len(e.IO.Data) != 6 {
				t.Errorf("io = %+v", e.IO)
			}
		}},
		{"io data past page", fakeRun(ExitIO, ioUnion(true, 4, 0x10, 2, 4092)), true, nil},
		{"io offset overflow", fakeRun(ExitIO, ioUnion(true, 4, 0x10, 1, ^uint64(0))), true, nil},
		{"io huge count", fakeRun(ExitIO, ioUnion(true, 4, 0x10, 0xffffffff, 64)), true, nil},
		{"io zero size", fakeRun(ExitIO, ioUnion(true, 0, 0x10, 1, 64)), true, nil},
		{"mmio write", fakeRun(ExitMMIO, mmioUnion(0xd0000050, []byte{3, 0, 0, 0}, 4, true)), false, func(t *testing.T, e Exit) {
			if !e.MMIO.Write || e.MMIO.Addr != 0xd0000050 || len(e.MMIO.Data) != 4 || e.MMIO.Data[0] != 3 {
				t.Errorf("mmio = %+v", e.MMIO)
			}
		}},
		{"mmio read len 8", fakeRun(ExitMMIO, mmioUnion(0x1000, nil, 8, false)), false, func(t *testing.T, e Exit) {
			if e.MMIO.Write || len(e.MMIO.Data) != 8 {
				t.Errorf("mmio = %+v", e.MMIO)
			}
		}},
		{"mmio len 9", fakeRun(ExitMMIO, mmioUnion(0x1000, nil, 9, false)), true, nil},
		{"mmio len 0", fakeRun(ExitMMIO, mmioUnion(0x1000, nil, 0, false)), true, nil},
		{"internal error", fakeRun(ExitInternalError, []byte{1, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9}), false, func(t *testing.T, e Exit) {
			if e.Suberror != InternalErrorEmulation || len(e.Data) != 2 || e.Data[0] != 7 || e.Data[1] != 9 {
				t.Errorf("internal = %d %v", e.Suberror, e.Data)
			}
		}},
		{"internal ndata capped", fakeRun(ExitInternalError, []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}), false, func(t *testing.T, e Exit) {
			if len(e.Data) != 16 {
				t.Errorf("ndata = %d, want capped at 16", len(e.Data))
			}
		}},
		{"system event", fakeRun(ExitSystemEvent, []byte{SystemEventReset}), false, func(t *testing.T, e Exit) {
			if e.Suberror != SystemEventReset {
				t.Errorf("type = %d", e.Suberror)
			}
		}},
		{"fail entry", fakeRun(ExitFailEntry, []byte{0x21, 0, 0, 0, 0, 0, 0, 0, 1}), false, func(t *testing.T, e Exit) {
			if e.HardwareReason != 0x21 || e.FailEntryCPU != 1 {
				t.Errorf("fail entry = %#x cpu %d", e.HardwareReason, e.FailEntryCPU)
			}
		}},
		{"hlt", fakeRun(ExitHLT, nil), false, func(t *testing.T, e Exit) {
			if e.Reason != ExitHLT || e.String() != "KVM_EXIT_HLT" {
				t.Errorf("reason = %v", e)
			}
		}},
		{"unnamed reason", fakeRun(ExitReason(99), nil), false, func(t *testing.T, e Exit) {
			if e.String() != "KVM_EXIT_99" {
				t.Errorf("String() = %q", e.String())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := DecodeExit(tt.run)
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeExit() error = %v, want error %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func FuzzDecodeExit(f *testing.F) {
	f.Add(uint32(ExitIO), ioUnion(true, 4, 0x10, 1, 0x100))
	f.Add(uint32(ExitMMIO), mmioUnion(0x1000, nil, 4, false))
	f.Add(uint32(ExitInternalError), []byte{1, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, reason uint32, union []byte) {
		e, err := DecodeExit(fakeRun(ExitReason(reason), union))
		if err == nil && e.Reason == ExitIO && len(e.IO.Data) != int(e.IO.Size)*int(e.IO.Count) {
			t.Errorf("io data length %d, want %d", len(e.IO.Data), int(e.IO.Size)*int(e.IO.Count))
		}
		_ = e.String()
	})
}
