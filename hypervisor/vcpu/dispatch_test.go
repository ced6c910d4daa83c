package vcpu

import (
	"testing"

	"github.com/vmctl/vmctl/hypervisor/bus"
	"github.com/vmctl/vmctl/hypervisor/kvm"
)

// access is one device access as a recorder saw it.
type access struct {
	off   uint64
	write bool
	data  string
}

// recorder logs accesses and answers reads with fill.
type recorder struct {
	seen []access
	fill byte
}

func (r *recorder) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = r.fill
	}
	r.seen = append(r.seen, access{off, false, string(data)})
}

func (r *recorder) Write(off uint64, data []byte) {
	r.seen = append(r.seen, access{off, true, string(data)})
}

func testBuses(t *testing.T) (Buses, *recorder, *recorder) {
	t.Helper()
	pio, mmio := &recorder{fill: 0x77}, &recorder{fill: 0x88}
	b := Buses{PIO: bus.New("pio"), MMIO: bus.New("mmio")}
	if err := b.PIO.Register(0x10, 4, "test", pio); err != nil {
		t.Fatal(err)
	}
	if err := b.MMIO.Register(0xd0000000, 0x200, "test", mmio); err != nil {
		t.Fatal(err)
	}
	return b, pio, mmio
}

func TestHandleExit(t *testing.T) {
	tests := []struct {
		name     string
		exit     kvm.Exit
		stop     bool
		reason   Reason
		pio      []access
		mmio     []access
		wantData string // IO/MMIO data after the exit (what the guest gets)
	}{
		{name: "pio out", exit: kvm.Exit{Reason: kvm.ExitIO, IO: kvm.IOExit{Out: true, Size: 1, Port: 0x10, Count: 1, Data: []byte{0x42}}},
			pio: []access{{0, true, "\x42"}}},
		{name: "pio in word at offset 2", exit: kvm.Exit{Reason: kvm.ExitIO, IO: kvm.IOExit{Size: 2, Port: 0x12, Count: 1, Data: make([]byte, 2)}},
			pio: []access{{2, false, "\x77\x77"}}, wantData: "\x77\x77"},
		{name: "rep outsb", exit: kvm.Exit{Reason: kvm.ExitIO, IO: kvm.IOExit{Out: true, Size: 1, Port: 0x11, Count: 3, Data: []byte("abc")}},
			pio: []access{{1, true, "a"}, {1, true, "b"}, {1, true, "c"}}},
		{name: "pio in unclaimed port", exit: kvm.Exit{Reason: kvm.ExitIO, IO: kvm.IOExit{Size: 1, Port: 0x80, Count: 1, Data: []byte{0}}},
			wantData: "\xff"},
		{name: "pio straddling device end", exit: kvm.Exit{Reason: kvm.ExitIO, IO: kvm.IOExit{Out: true, Size: 4, Port: 0x12, Count: 1, Data: []byte("wxyz")}}},
		{name: "mmio write", exit: kvm.Exit{Reason: kvm.ExitMMIO, MMIO: kvm.MMIOExit{Addr: 0xd0000050, Write: true, Data: []byte{1, 0, 0, 0}}},
			mmio: []access{{0x50, true, "\x01\x00\x00\x00"}}},
		{name: "mmio read", exit: kvm.Exit{Reason: kvm.ExitMMIO, MMIO: kvm.MMIOExit{Addr: 0xd0000100, Data: make([]byte, 8)}},
			mmio: []access{{0x100, false, "\x88\x88\x88\x88\x88\x88\x88\x88"}}, wantData: "\x88\x88\x88\x88\x88\x88\x88\x88"},
		{name: "mmio read unclaimed", exit: kvm.Exit{Reason: kvm.ExitMMIO, MMIO: kvm.MMIOExit{Addr: 0xfeb00000, Data: make([]byte, 2)}},
			wantData: "\xff\xff"},
		{name: "intr", exit: kvm.Exit{Reason: kvm.ExitIntr}},
		{name: "irq window", exit: kvm.Exit{Reason: kvm.ExitIRQWindowOpen}},
		{name: "ioapic eoi", exit: kvm.Exit{Reason: kvm.ExitIOAPICEOI}},
		{name: "nmi", exit: kvm.Exit{Reason: kvm.ExitNMI}},
		{name: "debug", exit: kvm.Exit{Reason: kvm.ExitDebug}},
		{name: "hlt", exit: kvm.Exit{Reason: kvm.ExitHLT}, stop: true, reason: ReasonHalt},
		{name: "triple fault", exit: kvm.Exit{Reason: kvm.ExitShutdown}, stop: true, reason: ReasonTripleFault},
		{name: "fail entry", exit: kvm.Exit{Reason: kvm.ExitFailEntry, HardwareReason: 0x21}, stop: true, reason: ReasonFailEntry},
		{name: "emulation failure", exit: kvm.Exit{Reason: kvm.ExitInternalError, Suberror: kvm.InternalErrorEmulation}, stop: true, reason: ReasonEmulationFailure},
		{name: "delivery error", exit: kvm.Exit{Reason: kvm.ExitInternalError, Suberror: kvm.InternalErrorDeliveryEv}, stop: true, reason: ReasonInternalError},
		{name: "poweroff", exit: kvm.Exit{Reason: kvm.ExitSystemEvent, Suberror: kvm.SystemEventShutdown}, stop: true, reason: ReasonPoweroff},
		{name: "reset", exit: kvm.Exit{Reason: kvm.ExitSystemEvent, Suberror: kvm.SystemEventReset}, stop: true, reason: ReasonReboot},
		{name: "crash", exit: kvm.Exit{Reason: kvm.ExitSystemEvent, Suberror: kvm.SystemEventCrash}, stop: true, reason: ReasonGuestCrash},
		{name: "suspend", exit: kvm.Exit{Reason: kvm.ExitSystemEvent, Suberror: kvm.SystemEventSuspend}},
		{name: "odd system event", exit: kvm.Exit{Reason: kvm.ExitSystemEvent, Suberror: 99}, stop: true, reason: ReasonUnhandledExit},
		{name: "unknown", exit: kvm.Exit{Reason: kvm.ExitUnknown, HardwareReason: 7}, stop: true, reason: ReasonUnhandledExit},
		{name: "exception", exit: kvm.Exit{Reason: kvm.ExitException, Exception: 6}, stop: true, reason: ReasonUnhandledExit},
		{name: "unnamed", exit: kvm.Exit{Reason: 200}, stop: true, reason: ReasonUnhandledExit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, pio, mmio := testBuses(t)
			stop, r := HandleExit(tt.exit, b)
			if stop != tt.stop || r.Reason != tt.reason {
				t.Fatalf("HandleExit(%v) = %v, %v; want %v, %v", tt.exit, stop, r, tt.stop, tt.reason)
			}
			if tt.stop && r.Detail == "" {
				t.Error("a stopping exit has no detail for the log")
			}
			if !equal(pio.seen, tt.pio) || !equal(mmio.seen, tt.mmio) {
				t.Errorf("devices saw pio %+v mmio %+v, want %+v %+v", pio.seen, mmio.seen, tt.pio, tt.mmio)
			}
			if tt.wantData != "" {
				got := string(tt.exit.IO.Data) + string(tt.exit.MMIO.Data)
				if got != tt.wantData {
					t.Errorf("data returned to the guest = %q, want %q", got, tt.wantData)
				}
			}
		})
	}
}

func equal(a, b []access) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReasonCodes(t *testing.T) {
	seen := map[int]Reason{}
	for _, r := range Reasons() {
		code := r.ExitCode()
		if code == 0 {
			continue
		}
		if other, dup := seen[code]; dup {
			t.Errorf("%v and %v share exit code %d", r, other, code)
		}
		seen[code] = r
	}
	want := map[Reason]int{ReasonReboot: 0, ReasonPoweroff: 0, ReasonStopped: 0, ReasonTripleFault: 10,
		ReasonEmulationFailure: 11, ReasonInternalError: 12, ReasonFailEntry: 13, ReasonHostError: 1}
	for r, code := range want {
		if r.ExitCode() != code {
			t.Errorf("%v.ExitCode() = %d, want %d (documented)", r, r.ExitCode(), code)
		}
	}
}
