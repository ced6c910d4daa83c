// Package devices holds the legacy PC devices the VMM emulates in user
// space: the 8250/16550A UART that carries the guest console, the i8042
// keyboard controller (only for its reset line, which is how Linux reboots
// with reboot=k), and a boot-timer port that logs when the guest reaches a
// point of interest.
//
// Devices implement bus.Device and run on the vCPU thread that trapped.
// They never touch KVM: interrupts go out through a Line the machine wires
// to the irqchip, and machine-level effects (reset) through callbacks.
package devices

import (
	"io"
	"sync"
)

// Line sets the level of an interrupt line. The UART's line is level
// semantics (high while an interrupt is pending); on an edge-triggered
// IOAPIC pin each low-to-high change delivers one interrupt.
type Line func(high bool)

// UART registers (offsets from the base port) and bits, as in
// include/uapi/linux/serial_reg.h.
const (
	regRBRTHR = 0 // receive buffer / transmit holding; DLL when DLAB
	regIER    = 1 // interrupt enable; DLM when DLAB
	regIIRFCR = 2 // interrupt identification (read) / FIFO control (write)
	regLCR    = 3
	regMCR    = 4
	regLSR    = 5
	regMSR    = 6
	regSCR    = 7

	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmit holding register empty
	ierRLSI = 0x04 // receiver line status
	ierMSI  = 0x08 // modem status
	ierMask = 0x0f // the 16550A has no bits above; Linux probes bit 6 to tell an XScale UART

	iirNoInt  = 0x01
	iirMSI    = 0x00
	iirTHRI   = 0x02
	iirRDI    = 0x04
	iirRLSI   = 0x06
	iirFIFOOn = 0xc0 // both bits: a 16550A with working FIFOs

	fcrEnable  = 0x01
	fcrClearRX = 0x02

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80
)

// rxLimit bounds buffered input; bytes beyond it are dropped with an
// overrun, as a real FIFO would.
const rxLimit = 4096

// Serial is a 16550A UART. Transmission is instantaneous: a byte written
// to THR goes to the output writer and THR is empty again at once, so a
// transmit-holding-empty interrupt is re-armed after every byte while the
// guest has it enabled. That interrupt is what lets the Linux tty layer
// push user-space output: printk can poll the UART, a write(2) to
// /dev/ttyS0 waits for the interrupt.
type Serial struct {
	out io.Writer
	irq Line

	mu         sync.Mutex // guards everything below
	ier        byte
	lcr        byte
	mcr        byte
	scr        byte
	dll, dlm   byte
	fcr        byte
	rx         []byte
	overrun    bool
	thrPending bool // THRE interrupt pending: THR emptied since the last IIR read
	lineHigh   bool
}

// NewSerial returns a UART writing transmitted bytes to out and driving irq.
func NewSerial(out io.Writer, irq Line) *Serial {
	if out == nil {
		out = io.Discard
	}
	if irq == nil {
		irq = func(bool) {}
	}
	// Divisor 12 is 9600 baud, the reset value firmware leaves.
	return &Serial{out: out, irq: irq, dll: 12, mcr: mcrOUT2}
}

// Read implements bus.Device.
func (s *Serial) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	clear(data)
	s.mu.Lock()
	data[0] = s.readReg(offset)
	raise := s.updateLocked()
	s.mu.Unlock()
	s.signal(raise)
}

// Write implements bus.Device.
func (s *Serial) Write(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	s.mu.Lock()
	out := s.writeReg(offset, data[0])
	raise := s.updateLocked()
	s.mu.Unlock()
	if out >= 0 {
		// Outside the lock: a slow writer must not hold up input.
		s.out.Write([]byte{byte(out)})
	}
	s.signal(raise)
}

// Input queues bytes for the guest to read, as if received on the line.
func (s *Serial) Input(p []byte) {
	s.mu.Lock()
	for _, b := range p {
		s.receiveLocked(b)
	}
	raise := s.updateLocked()
	s.mu.Unlock()
	s.signal(raise)
}

// Feed copies r into the UART's receiver until r fails; run it in its own
// goroutine.
func (s *Serial) Feed(r io.Reader) error {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.Input(buf[:n])
		}
		if err != nil {
			return err
		}
	}
}

func (s *Serial) receiveLocked(b byte) {
	if len(s.rx) >= rxLimit {
		s.overrun = true
		return
	}
	s.rx = append(s.rx, b)
}

func (s *Serial) readReg(offset uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regRBRTHR:
		if dlab {
			return s.dll
		}
		if len(s.rx) == 0 {
			return 0
		}
		b := s.rx[0]
		s.rx = s.rx[1:]
		if len(s.rx) == 0 {
			s.rx = nil // let the backing array go
		}
		return b
	case regIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case regIIRFCR:
		iir := s.iirLocked()
		if iir == iirTHRI {
			// Reading IIR while THRE is the reported source clears it.
			s.thrPending = false
		}
		if s.fcr&fcrEnable != 0 {
			iir |= iirFIFOOn
		}
		return iir
	case regLCR:
		return s.lcr
	case regMCR:
		return s.mcr
	case regLSR:
		lsr := byte(lsrTHRE | lsrTEMT)
		if len(s.rx) > 0 {
			lsr |= lsrDR
		}
		if s.overrun {
			lsr |= lsrOE
			s.overrun = false // cleared by reading LSR
		}
		return lsr
	case regMSR:
		if s.mcr&mcrLoop != 0 {
			// Loopback wires the modem outputs back to the inputs.
			var m byte
			if s.mcr&mcrDTR != 0 {
				m |= msrDSR
			}
			if s.mcr&mcrRTS != 0 {
				m |= msrCTS
			}
			if s.mcr&mcrOUT1 != 0 {
				m |= msrRI
			}
			if s.mcr&mcrOUT2 != 0 {
				m |= msrDCD
			}
			return m
		}
		// A terminal that is always there, never changing.
		return msrDCD | msrDSR | msrCTS
	case regSCR:
		return s.scr
	}
	return 0xff
}

// writeReg applies a store and returns the byte to transmit, or -1.
func (s *Serial) writeReg(offset uint64, v byte) int {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regRBRTHR:
		if dlab {
			s.dll = v
			return -1
		}
		// THR empties at once: the interrupt for "room for more" is due.
		s.thrPending = true
		if s.mcr&mcrLoop != 0 {
			s.receiveLocked(v)
			return -1
		}
		return int(v)
	case regIER:
		if dlab {
			s.dlm = v
			return -1
		}
		old := s.ier
		s.ier = v & ierMask
		if (old^s.ier)&ierTHRI != 0 {
			// Enabling THRI with THR empty raises it at once (Linux's
			// UART_BUG_THRE probe checks this); disabling drops it.
			s.thrPending = s.ier&ierTHRI != 0
		}
	case regIIRFCR:
		s.fcr = v
		if v&fcrClearRX != 0 {
			s.rx = nil
		}
	case regLCR:
		s.lcr = v
	case regMCR:
		s.mcr = v & 0x1f
	case regSCR:
		s.scr = v
	}
	return -1
}

// iirLocked is the highest-priority pending interrupt, without side effects.
func (s *Serial) iirLocked() byte {
	switch {
	case s.ier&ierRLSI != 0 && s.overrun:
		return iirRLSI
	case s.ier&ierRDI != 0 && len(s.rx) > 0:
		return iirRDI
	case s.ier&ierTHRI != 0 && s.thrPending:
		return iirTHRI
	}
	return iirNoInt
}

// updateLocked computes the new line level and reports the change to make
// (0 none, 1 raise, -1 lower); the caller applies it after unlocking.
func (s *Serial) updateLocked() int {
	high := s.iirLocked() != iirNoInt
	if high == s.lineHigh {
		return 0
	}
	s.lineHigh = high
	if high {
		return 1
	}
	return -1
}

func (s *Serial) signal(change int) {
	if change != 0 {
		s.irq(change > 0)
	}
}

// SerialState is what a snapshot keeps of the UART: its registers and
// pending interrupt, not buffered input (a restored console starts with
// none).
type SerialState struct {
	IER, LCR, MCR, SCR, DLL, DLM, FCR byte
	THRPending                        bool
}

// Save returns the UART's registers.
func (s *Serial) Save() SerialState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SerialState{IER: s.ier, LCR: s.lcr, MCR: s.mcr, SCR: s.scr, DLL: s.dll, DLM: s.dlm, FCR: s.fcr, THRPending: s.thrPending}
}

// Restore sets the UART's registers as a saved guest left them and drives
// the interrupt line to match.
func (s *Serial) Restore(st SerialState) {
	s.mu.Lock()
	s.ier, s.lcr, s.mcr, s.scr, s.dll, s.dlm, s.fcr, s.thrPending = st.IER, st.LCR, st.MCR, st.SCR, st.DLL, st.DLM, st.FCR, st.THRPending
	raise := s.updateLocked()
	s.mu.Unlock()
	s.signal(raise)
}
