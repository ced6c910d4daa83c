package ninep

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// FuzzRequests: whatever a guest puts in a request chain, the device
// returns the chain (a reply or nothing) and goes on serving; the share
// underneath is a real directory.
func FuzzRequests(f *testing.F) {
	frame := func(typ byte, tag uint16, body ...byte) []byte {
		b := make([]byte, 7, 7+len(body))
		binary.LittleEndian.PutUint32(b, uint32(7+len(body)))
		b[4] = typ
		binary.LittleEndian.PutUint16(b[5:], tag)
		return append(b, body...)
	}
	// Tversion, Tattach, Twalk with "..", Tlopen, Treaddir, garbage.
	f.Add(frame(100, 0xffff, 0, 0, 1, 0, 8, 0, '9', 'P', '2', '0', '0', '0', '.', 'L'))
	f.Add(frame(104, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add(frame(110, 2, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 2, 0, '.', '.'))
	f.Add(frame(12, 3, 1, 0, 0, 0, 0, 0, 0, 0))
	f.Add(frame(40, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0})
	r := newRig(f, f.TempDir(), false)
	f.Fuzz(func(t *testing.T, req []byte) {
		if len(req) > slotSize {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, err := r.drv.Add(queuetest.Readable(req), queuetest.Writable(4096)); err != nil {
			t.Fatal(err)
		}
		r.dev.QueueNotify(0)
		if _, err := r.drv.WaitUsed(10 * time.Second); err != nil {
			t.Fatalf("request %x was not returned: %v", req, err)
		}
	})
}
