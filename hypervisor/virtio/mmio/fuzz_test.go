package mmio

import (
	"encoding/binary"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/virtio"
)

// FuzzRegisters replays arbitrary register access sequences: 8 bytes per
// access (offset u16, size selector, write flag, value u32). The transport
// must never panic, and the device must be active exactly when the status
// says DRIVER_OK without DEVICE_NEEDS_RESET.
func FuzzRegisters(f *testing.F) {
	op := func(off uint16, write bool, v uint32) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint16(b, off)
		b[2] = 2 // 4 bytes
		if write {
			b[3] = 1
		}
		binary.LittleEndian.PutUint32(b[4:], v)
		return b
	}
	var seq []byte
	for _, o := range [][]byte{
		op(RegStatus, true, 3), op(RegDriverFeaturesSel, true, 1), op(RegDriverFeatures, true, 1),
		op(RegStatus, true, 11), op(RegQueueNum, true, 16), op(RegQueueDescLow, true, 0x10000),
		op(RegQueueDriverLow, true, 0x10100), op(RegQueueDeviceLow, true, 0x10200),
		op(RegQueueReady, true, 1), op(RegStatus, true, 15), op(RegQueueNotify, true, 0),
		op(RegInterruptStatus, false, 0), op(RegStatus, true, 0),
	} {
		seq = append(seq, o...)
	}
	f.Add(seq)
	f.Add([]byte{0x00, 0x01, 3, 1, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, dev, _, _ := newTransport()
		for len(data) >= 8 {
			off := uint64(binary.LittleEndian.Uint16(data)) % (Size + 0x20)
			size := []int{1, 2, 4, 8}[data[2]%4]
			buf := make([]byte, size)
			copy(buf, data[4:])
			if data[3]&1 != 0 {
				tr.Write(off, buf)
			} else {
				tr.Read(off, buf)
			}
			data = data[8:]
			status := rd(tr, RegStatus)
			wantActive := status&virtio.StatusDriverOK != 0 && status&virtio.StatusDeviceNeedsReset == 0
			if tr.active.Load() != wantActive {
				t.Fatalf("status %#x but device active = %v", status, tr.active.Load())
			}
			if tr.active.Load() && dev.activations-dev.resets != 1 {
				t.Fatalf("%d activations and %d resets while active", dev.activations, dev.resets)
			}
		}
	})
}
