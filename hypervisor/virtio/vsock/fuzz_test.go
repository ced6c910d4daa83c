package vsock

import (
	"path/filepath"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// FuzzTxPacket feeds arbitrary guest packets, split across buffers at
// arbitrary points, to the transmit handler. It must never panic, never
// queue unbounded control packets and never hold more guest data for a
// connection than the credit it granted.
func FuzzTxPacket(f *testing.F) {
	pkt := func(h Header, payload string) []byte {
		h.SrcCID, h.DstCID, h.Type, h.Len = testCID, HostCID, TypeStream, uint32(len(payload))
		b := make([]byte, HeaderSize)
		h.Encode(b)
		return append(b, payload...)
	}
	f.Add(pkt(Header{SrcPort: 1, DstPort: 52, Op: OpRequest, BufAlloc: 4096}, ""), uint8(44))
	f.Add(pkt(Header{SrcPort: 1, DstPort: 52, Op: OpRW}, "data"), uint8(3))
	f.Add(pkt(Header{SrcPort: 1, DstPort: 52, Op: OpShutdown, Flags: 3}, ""), uint8(0))
	f.Add(pkt(Header{SrcPort: 1, DstPort: 52, Op: OpCreditRequest}, ""), uint8(7))

	dev, err := New(Config{GuestCID: testCID, UDSPath: filepath.Join(f.TempDir(), "v.sock")})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { dev.Close() })
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		dev.mu.Lock()
		dev.active = true
		dev.mu.Unlock()
		defer dev.Reset()
		// The same packet twice: the second sees the connection the first
		// may have created.
		for range 2 {
			var c queue.Chain
			rest := data
			for len(rest) > 0 {
				k := min(len(rest), int(split)+1)
				c.Readable = append(c.Readable, queue.Buffer{Data: rest[:k]})
				rest = rest[k:]
			}
			if n := dev.handleTx(&c); n != 0 {
				t.Fatalf("handleTx used %d bytes of a transmit chain", n)
			}
		}
		dev.mu.Lock()
		defer dev.mu.Unlock()
		if len(dev.control) > maxControl {
			t.Fatalf("%d control packets queued", len(dev.control))
		}
		for _, c := range dev.conns {
			if c.rxCnt-c.fwdCnt > ConnBufSize || uint32(len(c.sendBuf)) > ConnBufSize {
				t.Fatalf("connection holds %d bytes (%d unacknowledged) beyond its credit", len(c.sendBuf), c.rxCnt-c.fwdCnt)
			}
		}
	})
}
