package net

import "golang.org/x/sys/unix"

// Feature bits of the network device (virtio 1.2, section 5.1.3).
const (
	// FeatureCSUM: the device takes frames with a partial checksum
	// (guest transmit checksum offload).
	FeatureCSUM uint64 = 1 << 0
	// FeatureGuestCSUM: the driver takes frames with a partial checksum
	// (receive checksum offload).
	FeatureGuestCSUM uint64 = 1 << 1
	// FeatureMTU: the configuration space holds the MTU the driver uses.
	FeatureMTU uint64 = 1 << 3
	// FeatureMAC: the configuration space holds the MAC.
	FeatureMAC uint64 = 1 << 5
	// FeatureGuestTSO4 and FeatureGuestTSO6: the driver takes TCP
	// segmentation offload frames (IPv4, IPv6); FeatureGuestECN: with
	// the ECN bit.
	FeatureGuestTSO4 uint64 = 1 << 7
	FeatureGuestTSO6 uint64 = 1 << 8
	FeatureGuestECN  uint64 = 1 << 9
	// FeatureHostTSO4, FeatureHostTSO6 and FeatureHostECN are the
	// transmit equivalents: the device takes TSO frames from the driver.
	FeatureHostTSO4 uint64 = 1 << 11
	FeatureHostTSO6 uint64 = 1 << 12
	FeatureHostECN  uint64 = 1 << 13
	// FeatureMrgRxBuf: a received frame may span several receive buffers.
	FeatureMrgRxBuf uint64 = 1 << 15
	// FeatureStatus: the configuration space has the link status.
	FeatureStatus uint64 = 1 << 16
)

// Offload flags of TUNSETOFFLOAD (include/uapi/linux/if_tun.h): what the
// reader of the tap, here the guest, accepts from the host kernel.
const (
	tunFCSUM   = unix.TUN_F_CSUM
	tunFTSO4   = unix.TUN_F_TSO4
	tunFTSO6   = unix.TUN_F_TSO6
	tunFTSOECN = unix.TUN_F_TSO_ECN
)

// offloads is what the guest and the device agreed on, with every feature
// whose prerequisite was not negotiated treated as absent (virtio 1.2,
// 5.1.3.1: GUEST_TSO4 requires GUEST_CSUM, and so on). The transport only
// refuses features that were not offered, so a driver may ack a feature
// without its prerequisite; the device then behaves as if it had not.
type offloads struct {
	// Guest to host (transmit).
	txCsum, txTSO4, txTSO6, txECN bool
	// Host to guest (receive).
	rxCsum, rxTSO4, rxTSO6, rxECN bool
	// mergeable: receive frames may span several buffers.
	mergeable bool
	// mtu: the driver agreed to the configuration space's MTU.
	mtu bool
}

// negotiate derives the offloads from the negotiated feature bits.
func negotiate(features uint64) offloads {
	has := func(f uint64) bool { return features&f != 0 }
	var o offloads
	o.txCsum = has(FeatureCSUM)
	o.txTSO4 = o.txCsum && has(FeatureHostTSO4)
	o.txTSO6 = o.txCsum && has(FeatureHostTSO6)
	o.txECN = (o.txTSO4 || o.txTSO6) && has(FeatureHostECN)
	o.rxCsum = has(FeatureGuestCSUM)
	o.rxTSO4 = o.rxCsum && has(FeatureGuestTSO4)
	o.rxTSO6 = o.rxCsum && has(FeatureGuestTSO6)
	o.rxECN = (o.rxTSO4 || o.rxTSO6) && has(FeatureGuestECN)
	o.mergeable = has(FeatureMrgRxBuf)
	o.mtu = has(FeatureMTU)
	return o
}

// tapFlags is the TUNSETOFFLOAD argument that makes the host kernel send
// exactly the frames the guest accepts: partial checksums only with
// GUEST_CSUM, TSO frames only with GUEST_TSO4/6. A tap with more offloads
// than the guest negotiated hands it frames it cannot take.
func (o offloads) tapFlags() int {
	var f int
	if o.rxCsum {
		f |= tunFCSUM
	}
	if o.rxTSO4 {
		f |= tunFTSO4
	}
	if o.rxTSO6 {
		f |= tunFTSO6
	}
	if o.rxECN {
		f |= tunFTSOECN
	}
	return f
}

// guestFeaturesFor are the receive features that a tap accepting the
// TUNSETOFFLOAD flags tap can serve.
func guestFeaturesFor(tap int) uint64 {
	var f uint64
	if tap&tunFCSUM == 0 {
		return 0
	}
	f |= FeatureGuestCSUM
	if tap&tunFTSO4 != 0 {
		f |= FeatureGuestTSO4
	}
	if tap&tunFTSO6 != 0 {
		f |= FeatureGuestTSO6
	}
	if tap&tunFTSOECN != 0 && tap&(tunFTSO4|tunFTSO6) != 0 {
		f |= FeatureGuestECN
	}
	return f
}
