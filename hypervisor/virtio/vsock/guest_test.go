package vsock

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio/mmiotest"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// This file plays the guest's virtio-vsock driver and socket layer, with
// Linux's buffer layout (a 44-byte header buffer and a 4 KiB data buffer
// per receive chain), over the queue mock and the mmio transport.

const (
	testCID        = 3
	guestBufAlloc  = 64 << 10 // what the mock guest advertises per socket
	rxPayloadSize  = 4096
	txPayloadLimit = 16 << 10
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

type packet struct {
	Header
	payload []byte
}

// guestSock is the mock guest's view of one connection.
type guestSock struct {
	local, peer uint32 // guest port, host port
	received    []byte
	fwdCnt      uint32 // bytes the guest consumed (it consumes at once)
	fwdAdvised  uint32
	hostBuf     uint32 // device's buf_alloc
	hostFwd     uint32 // device's fwd_cnt
	txCnt       uint32
	backlog     []byte // waiting for credit from the device
	shutdown    uint32 // flags received
	reset       bool
}

type guest struct {
	t          *testing.T
	tr         *mmio.Transport
	rx, tx, ev *queuetest.Driver
	socks      map[[2]uint32]*guestSock // {guest port, host port}
}

func newGuest(t *testing.T, dev *Device) *guest {
	t.Helper()
	mem := queuetest.NewMemory(0x100000, 8<<20)
	g := &guest{t: t, socks: map[[2]uint32]*guestSock{}}
	g.rx = queuetest.NewDriver(mem, 0x100000, 128, rxPayloadSize)
	g.tx = queuetest.NewDriver(mem, g.rx.End(), 64, txPayloadLimit)
	g.ev = queuetest.NewDriver(mem, g.tx.End(), 8, 8)
	for _, d := range []*queuetest.Driver{g.rx, g.tx, g.ev} {
		d.EventIdx = true
	}
	g.tr = mmio.New(dev, mem, &countIRQ{})
	if _, err := mmiotest.Boot(g.tr, dev.Features(), []*queuetest.Driver{g.rx, g.tx, g.ev}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mmiotest.Write32(g.tr, mmio.RegStatus, 0) })
	g.fillRx()
	return g
}

func (g *guest) kick(q uint32) { mmiotest.Write32(g.tr, mmio.RegQueueNotify, q) }

// fillRx posts receive buffers the way virtio_vsock_rx_fill does.
func (g *guest) fillRx() {
	old := g.rx.AvailIdx()
	for g.rx.Free() >= 2 {
		if _, err := g.rx.Add(queuetest.Writable(HeaderSize), queuetest.Writable(rxPayloadSize)); err != nil {
			g.t.Fatal(err)
		}
	}
	if g.rx.AvailIdx() != old && g.rx.KickWanted(old) {
		g.kick(rxQueue)
	}
}

// send transmits a packet from the guest.
func (g *guest) send(h Header, payload []byte) {
	h.SrcCID, h.DstCID, h.Type, h.Len = testCID, HostCID, TypeStream, uint32(len(payload))
	var hb [HeaderSize]byte
	h.Encode(hb[:])
	for {
		for {
			_, ok, err := g.tx.PopUsed()
			if err != nil {
				g.t.Fatal(err)
			}
			if !ok {
				break
			}
		}
		if g.tx.Free() >= 2 {
			break
		}
		time.Sleep(100 * time.Microsecond) // transmit ring full: the device catches up
	}
	old := g.tx.AvailIdx()
	segs := []queuetest.Segment{queuetest.Readable(hb[:])}
	if len(payload) > 0 {
		segs = append(segs, queuetest.Readable(payload))
	}
	if _, err := g.tx.Add(segs...); err != nil {
		g.t.Fatal(err)
	}
	if g.tx.KickWanted(old) {
		g.kick(txQueue)
	}
}

// sendOn sends op on s with the socket's credit fields.
func (g *guest) sendOn(s *guestSock, op uint16, flags uint32, payload []byte) {
	s.fwdAdvised = s.fwdCnt
	g.send(Header{SrcPort: s.local, DstPort: s.peer, Op: op, Flags: flags,
		BufAlloc: guestBufAlloc, FwdCnt: s.fwdCnt}, payload)
}

// recv waits for the next packet from the device.
func (g *guest) recv(timeout time.Duration) (packet, bool) {
	deadline := time.Now().Add(timeout)
	for {
		u, ok, err := g.rx.PopUsed()
		if err != nil {
			g.t.Fatal(err)
		}
		if ok {
			g.fillRx()
			if u.Len < HeaderSize {
				g.t.Fatalf("receive buffer used with %d bytes", u.Len)
			}
			h, _ := DecodeHeader(u.Data)
			if h.SrcCID != HostCID || h.DstCID != testCID || h.Type != TypeStream {
				g.t.Fatalf("packet with header %+v", h)
			}
			if int(h.Len) != len(u.Data)-HeaderSize {
				g.t.Fatalf("packet header says %d bytes, used length carries %d", h.Len, len(u.Data)-HeaderSize)
			}
			return packet{h, u.Data[HeaderSize:]}, true
		}
		if time.Now().After(deadline) {
			return packet{}, false
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// expect waits for a packet with op on the given ports.
func (g *guest) expect(op uint16, guestPort uint32) packet {
	g.t.Helper()
	p, ok := g.recv(5 * time.Second)
	if !ok {
		g.t.Fatalf("no packet from the device, want op %d", op)
	}
	if p.Op != op || p.DstPort != guestPort {
		g.t.Fatalf("packet op %d to port %d, want op %d to port %d", p.Op, p.DstPort, op, guestPort)
	}
	return p
}

// echoServer answers connection requests to port and echoes every byte,
// honouring the device's credit and checking that the device honours the
// guest's. It runs until done is closed or a socket count limit is hit.
func (g *guest) echoServer(port uint32, done <-chan struct{}, errs chan<- error) {
	for {
		select {
		case <-done:
			return
		default:
		}
		p, ok := g.recv(20 * time.Millisecond)
		if !ok {
			continue
		}
		key := [2]uint32{p.DstPort, p.SrcPort}
		s := g.socks[key]
		if s == nil {
			if p.Op == OpRequest && p.DstPort == port {
				s = &guestSock{local: p.DstPort, peer: p.SrcPort, hostBuf: p.BufAlloc, hostFwd: p.FwdCnt}
				g.socks[key] = s
				g.sendOn(s, OpResponse, 0, nil)
			} else if p.Op != OpRST {
				g.send(Header{SrcPort: p.DstPort, DstPort: p.SrcPort, Op: OpRST}, nil)
			}
			continue
		}
		s.hostBuf, s.hostFwd = p.BufAlloc, p.FwdCnt
		switch p.Op {
		case OpRW:
			s.received = append(s.received, p.payload...)
			if uint32(len(s.received))-s.fwdAdvised > guestBufAlloc {
				errs <- fmt.Errorf("device sent %d bytes beyond the %d the guest advertised",
					uint32(len(s.received))-s.fwdAdvised-guestBufAlloc, guestBufAlloc)
				return
			}
			s.fwdCnt += uint32(len(p.payload))
			s.backlog = append(s.backlog, p.payload...)
		case OpShutdown:
			// The host finished sending: like an echo server that reads
			// EOF, close the socket once everything is echoed.
			s.shutdown |= p.Flags
		case OpRST:
			s.reset = true
			delete(g.socks, key)
			continue
		}
		g.flush(s)
		if s.shutdown&ShutdownSend != 0 && len(s.backlog) == 0 {
			g.sendOn(s, OpShutdown, ShutdownRecv|ShutdownSend, nil)
			s.shutdown = 0
		}
	}
}

// flush sends a socket's backlog as far as the device's credit allows and
// returns credit the device is waiting for.
func (g *guest) flush(s *guestSock) {
	for len(s.backlog) > 0 {
		free := s.hostBuf - (s.txCnt - s.hostFwd)
		if s.txCnt-s.hostFwd >= s.hostBuf {
			free = 0
		}
		n := min(uint32(len(s.backlog)), free, txPayloadLimit)
		if n == 0 {
			break
		}
		g.sendOn(s, OpRW, 0, s.backlog[:n])
		s.backlog = s.backlog[n:]
		s.txCnt += n
	}
	if s.fwdCnt-s.fwdAdvised >= guestBufAlloc/2 {
		g.sendOn(s, OpCreditUpdate, 0, nil)
	}
}
