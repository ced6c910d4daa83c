// Package mmiotest brings a device up through its virtio-mmio registers the
// way the Linux virtio_mmio driver does, for device tests that want the
// transport in the loop. It is test support only.
package mmiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/mmio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue/queuetest"
)

// Read32 reads a 32-bit register.
func Read32(tr *mmio.Transport, off uint64) uint32 {
	var b [4]byte
	tr.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// Write32 writes a 32-bit register.
func Write32(tr *mmio.Transport, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	tr.Write(off, b[:])
}

// Features reads the 64 offered feature bits.
func Features(tr *mmio.Transport) uint64 {
	Write32(tr, mmio.RegDeviceFeaturesSel, 1)
	hi := Read32(tr, mmio.RegDeviceFeatures)
	Write32(tr, mmio.RegDeviceFeaturesSel, 0)
	return uint64(hi)<<32 | uint64(Read32(tr, mmio.RegDeviceFeatures))
}

// Boot resets the device, acks want&offered features (EVENT_IDX only if
// every driver has EventIdx set, and cleared otherwise), programs queue i
// from drivers[i] (nil leaves it unused) and sets DRIVER_OK. It returns the
// negotiated features.
func Boot(tr *mmio.Transport, want uint64, drivers []*queuetest.Driver) (uint64, error) {
	if m := Read32(tr, mmio.RegMagicValue); m != mmio.MagicValue {
		return 0, fmt.Errorf("magic value %#x", m)
	}
	Write32(tr, mmio.RegStatus, 0)
	Write32(tr, mmio.RegStatus, virtio.StatusAcknowledge)
	Write32(tr, mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	acked := Features(tr) & want
	for _, d := range drivers {
		if d != nil && !d.EventIdx {
			acked &^= virtio.FeatureEventIdx
		}
	}
	Write32(tr, mmio.RegDriverFeaturesSel, 0)
	Write32(tr, mmio.RegDriverFeatures, uint32(acked))
	Write32(tr, mmio.RegDriverFeaturesSel, 1)
	Write32(tr, mmio.RegDriverFeatures, uint32(acked>>32))
	status := virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK
	Write32(tr, mmio.RegStatus, status)
	if Read32(tr, mmio.RegStatus)&virtio.StatusFeaturesOK == 0 {
		return 0, fmt.Errorf("device refused features %#x", acked)
	}
	for i, d := range drivers {
		if d == nil {
			continue
		}
		c := d.Config()
		Write32(tr, mmio.RegQueueSel, uint32(i))
		if max := Read32(tr, mmio.RegQueueNumMax); uint32(c.Size) > max {
			return 0, fmt.Errorf("queue %d: size %d above the maximum %d", i, c.Size, max)
		}
		Write32(tr, mmio.RegQueueNum, uint32(c.Size))
		for _, r := range []struct {
			off  uint64
			addr uint64
		}{{mmio.RegQueueDescLow, c.DescTable}, {mmio.RegQueueDriverLow, c.AvailRing}, {mmio.RegQueueDeviceLow, c.UsedRing}} {
			Write32(tr, r.off, uint32(r.addr))
			Write32(tr, r.off+4, uint32(r.addr>>32))
		}
		Write32(tr, mmio.RegQueueReady, 1)
	}
	status |= virtio.StatusDriverOK
	Write32(tr, mmio.RegStatus, status)
	if got := Read32(tr, mmio.RegStatus); got != status {
		return 0, fmt.Errorf("status %#x after DRIVER_OK, want %#x", got, status)
	}
	return acked, nil
}
