package devices

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// uart is a Serial under test with its output and line history.
type uart struct {
	*Serial
	out   bytes.Buffer
	edges []bool
}

func newUART() *uart {
	u := &uart{}
	u.Serial = NewSerial(&u.out, func(high bool) { u.edges = append(u.edges, high) })
	return u
}

func (u *uart) in(off uint64) byte {
	b := []byte{0}
	u.Read(off, b)
	return b[0]
}

func (u *uart) outb(off uint64, v byte) { u.Write(off, []byte{v}) }

// step is one register access and what it must return or leave behind.
type step struct {
	write bool
	off   uint64
	val   byte // written, or expected read value
	line  int  // expected line after the step: 1 high, 0 low, -1 don't care
}

func TestSerialRegisterSemantics(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		out   string
	}{
		{"reset state", []step{
			{false, regIIRFCR, iirNoInt, 0},
			{false, regLSR, lsrTHRE | lsrTEMT, 0},
			{false, regIER, 0, 0},
		}, ""},
		{"transmit without interrupts", []step{
			{true, regRBRTHR, 'h', 0}, {true, regRBRTHR, 'i', 0},
			{false, regLSR, lsrTHRE | lsrTEMT, 0},
		}, "hi"},
		{"divisor latch", []step{
			{true, regLCR, lcrDLAB | 0x03, 0},
			{true, regRBRTHR, 0x01, 0}, {true, regIER, 0x00, 0},
			{false, regRBRTHR, 0x01, 0}, {false, regIER, 0x00, 0},
			{true, regLCR, 0x03, 0},
			{false, regLCR, 0x03, 0},
		}, ""},
		{"IER keeps four bits", []step{
			{true, regIER, 0x4f, 1}, {false, regIER, 0x0f, -1},
		}, ""},
		// Linux's UART_BUG_THRE probe: enabling THRI raises it at once,
		// reading IIR clears it, disabling and re-enabling raises it again.
		{"THRE on enable, cleared by IIR read", []step{
			{true, regIER, ierTHRI, 1},
			{false, regIIRFCR, iirTHRI, 0},
			{false, regIIRFCR, iirNoInt, 0},
			{true, regIER, 0, 0},
			{true, regIER, ierTHRI, 1},
			{false, regIIRFCR, iirTHRI, 0},
			{true, regIER, 0, 0},
		}, ""},
		// The tty layer's transmit loop: each THR write re-arms THRE.
		{"THRE after every byte", []step{
			{true, regIER, ierTHRI, 1},
			{false, regIIRFCR, iirTHRI, 0},
			{true, regRBRTHR, 'a', 1},
			{false, regIIRFCR, iirTHRI, 0},
			{true, regRBRTHR, 'b', 1},
			{true, regIER, 0, 0},
			{false, regIIRFCR, iirNoInt, 0},
		}, "ab"},
		{"FIFO bits identify a 16550A", []step{
			{true, regIIRFCR, fcrEnable, 0},
			{false, regIIRFCR, iirFIFOOn | iirNoInt, 0},
			{true, regIIRFCR, 0, 0},
			{false, regIIRFCR, iirNoInt, 0},
		}, ""},
		{"loopback", []step{
			{true, regMCR, mcrLoop | mcrRTS | mcrOUT2, 0},
			{false, regMSR, msrCTS | msrDCD, 0},
			{true, regIER, ierRDI, 0},
			{true, regRBRTHR, 'x', 1},
			{false, regLSR, lsrTHRE | lsrTEMT | lsrDR, 1},
			{false, regIIRFCR, iirRDI, 1},
			{false, regRBRTHR, 'x', 0},
			{false, regLSR, lsrTHRE | lsrTEMT, 0},
			{true, regMCR, mcrOUT2, 0},
			{false, regMSR, msrDCD | msrDSR | msrCTS, 0},
		}, ""},
		{"scratch", []step{
			{true, regSCR, 0x5a, 0}, {false, regSCR, 0x5a, 0},
		}, ""},
		{"RDI outranks THRI", []step{
			{true, regMCR, mcrLoop, 0},
			{true, regRBRTHR, 'y', 0},
			{true, regIER, ierRDI | ierTHRI, 1},
			{false, regIIRFCR, iirRDI, 1},
			{false, regRBRTHR, 'y', 1},
			{false, regIIRFCR, iirTHRI, 0},
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUART()
			for i, s := range tt.steps {
				if s.write {
					u.outb(s.off, s.val)
				} else if got := u.in(s.off); got != s.val {
					t.Fatalf("step %d: read reg %d = %#x, want %#x", i, s.off, got, s.val)
				}
				if s.line >= 0 && u.lineHigh != (s.line == 1) {
					t.Fatalf("step %d: line high = %v, want %v", i, u.lineHigh, s.line == 1)
				}
			}
			if u.out.String() != tt.out {
				t.Errorf("output = %q, want %q", u.out.String(), tt.out)
			}
			// The line callback only ever sees changes.
			for i := 1; i < len(u.edges); i++ {
				if u.edges[i] == u.edges[i-1] {
					t.Errorf("line set to %v twice in a row", u.edges[i])
				}
			}
		})
	}
}

func TestSerialInput(t *testing.T) {
	u := newUART()
	u.outb(regIER, ierRDI|ierRLSI)
	u.Input([]byte("ok"))
	if !u.lineHigh || u.in(regIIRFCR) != iirRDI {
		t.Fatal("input did not raise RDI")
	}
	if a, b := u.in(regRBRTHR), u.in(regRBRTHR); a != 'o' || b != 'k' {
		t.Errorf("read %q%q, want ok", a, b)
	}
	if u.lineHigh {
		t.Error("line still high with the receiver empty")
	}
	if err := u.Feed(strings.NewReader(strings.Repeat("z", rxLimit+10))); err == nil {
		t.Error("Feed returned nil at EOF")
	}
	if u.in(regIIRFCR) != iirRLSI {
		t.Error("overrun did not raise the line-status interrupt")
	}
	if lsr := u.in(regLSR); lsr&lsrOE == 0 {
		t.Errorf("LSR = %#x, want overrun", lsr)
	}
	if lsr := u.in(regLSR); lsr&lsrOE != 0 {
		t.Error("reading LSR did not clear overrun")
	}
	u.outb(regIIRFCR, fcrEnable|fcrClearRX)
	if u.in(regLSR)&lsrDR != 0 {
		t.Error("FCR clear left data in the receiver")
	}
}

func TestSerialOddAccesses(t *testing.T) {
	u := newUART()
	u.Read(0, nil)
	u.Write(0, nil)
	wide := []byte{1, 2, 3, 4}
	u.Read(regLSR, wide)
	if wide[0] != lsrTHRE|lsrTEMT || wide[1] != 0 {
		t.Errorf("4-byte LSR read = %x", wide)
	}
	for off := uint64(8); off < 300; off += 37 {
		u.outb(off, 0xff)
		if v := u.in(off); v != 0xff {
			t.Errorf("offset %d reads %#x, want open bus", off, v)
		}
	}
}

func TestI8042(t *testing.T) {
	var resets int
	k := NewI8042(func() { resets++ })
	st := []byte{0xaa}
	k.Read(i8042Command, st)
	if st[0] != 0 {
		t.Errorf("status = %#x, want idle 0", st[0])
	}
	k.Write(i8042Data, []byte{i8042CmdReset})
	k.Write(i8042Command, []byte{0xd1})
	if resets != 0 {
		t.Fatal("reset without the 0xfe command on port 0x64")
	}
	k.Write(i8042Command, []byte{i8042CmdReset})
	k.Write(i8042Command, nil)
	if resets != 1 || k.Resets() != 1 {
		t.Errorf("resets = %d/%d, want 1", resets, k.Resets())
	}
}

func TestBootTimer(t *testing.T) {
	var logged []BootEvent
	b := NewBootTimer(time.Now(), func(e BootEvent) { logged = append(logged, e) })
	b.Write(0, []byte{123})
	b.Write(0, []byte{1, 2})
	ev := b.Events()
	if len(ev) != 2 || ev[0].Value != 123 || ev[1].Value != 0x201 || len(logged) != 2 {
		t.Fatalf("events = %+v", ev)
	}
	for i := 0; i < 2*maxBootEvents; i++ {
		b.Write(0, []byte{9})
	}
	if len(b.Events()) != maxBootEvents {
		t.Errorf("kept %d events, want at most %d", len(b.Events()), maxBootEvents)
	}
}
