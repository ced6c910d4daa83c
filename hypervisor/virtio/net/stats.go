package net

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// DropReason says why a frame was dropped.
type DropReason uint8

// Drop reasons. Tx reasons are about frames the guest transmitted, Rx
// reasons about frames read from the tap for the guest.
const (
	// TxMalformed: the header contradicts the frame or the specification
	// (a checksum outside the frame, a TSO frame whose headers do not
	// parse or whose csum_start is not its TCP header, gso_size 0, ...),
	// or the chain is too short for a header and an Ethernet header.
	TxMalformed DropReason = iota + 1
	// TxNotNegotiated: the header asks for an offload the driver did not
	// negotiate (NEEDS_CSUM without CSUM, TSO without HOST_TSO4/6, UFO).
	TxNotNegotiated
	// TxTooLong: a frame beyond the MTU without segmentation offload, a
	// TSO segment beyond the MTU, or a frame beyond maxFrame.
	TxTooLong
	// TxTapError: the host kernel refused the frame.
	TxTapError
	// RxMalformed: the tap's header is inconsistent with its frame.
	RxMalformed
	// RxNotNegotiated: the tap's header uses an offload the guest did not
	// negotiate (a frame queued before the offloads changed).
	RxNotNegotiated
	// RxTooLong: a frame beyond the guest's MTU, or larger than its
	// receive buffers can hold.
	RxTooLong
	numDropReasons
)

var dropNames = [numDropReasons]string{
	TxMalformed:     "tx-malformed",
	TxNotNegotiated: "tx-not-negotiated",
	TxTooLong:       "tx-too-long",
	TxTapError:      "tx-tap-error",
	RxMalformed:     "rx-malformed",
	RxNotNegotiated: "rx-not-negotiated",
	RxTooLong:       "rx-too-long",
}

func (r DropReason) String() string {
	if r == 0 || r >= numDropReasons {
		return fmt.Sprintf("drop-reason-%d", r)
	}
	return dropNames[r]
}

// Stats are the device's counters since it was created.
type Stats struct {
	TxFrames, TxBytes uint64 // handed to the tap
	RxFrames, RxBytes uint64 // delivered to the guest
	// Dropped counts dropped frames by reason (index: DropReason).
	Dropped [numDropReasons]uint64
	// BadRxBuffers counts receive chains the driver made unusable (no
	// room for the header, or device-readable parts); each was returned
	// with length 0.
	BadRxBuffers uint64
}

// String is a one-line summary: totals and the non-zero drop counters.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tx %d frames %d bytes, rx %d frames %d bytes", s.TxFrames, s.TxBytes, s.RxFrames, s.RxBytes)
	for r := DropReason(1); r < numDropReasons; r++ {
		if s.Dropped[r] > 0 {
			fmt.Fprintf(&b, ", %s %d", r, s.Dropped[r])
		}
	}
	if s.BadRxBuffers > 0 {
		fmt.Fprintf(&b, ", bad rx buffers %d", s.BadRxBuffers)
	}
	return b.String()
}

// counters are updated by the queue goroutines and read by Stats.
type counters struct {
	txFrames, txBytes, rxFrames, rxBytes atomic.Uint64
	dropped                              [numDropReasons]atomic.Uint64
	badRxBuffers                         atomic.Uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		TxFrames: c.txFrames.Load(), TxBytes: c.txBytes.Load(),
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(),
		BadRxBuffers: c.badRxBuffers.Load(),
	}
	for i := range c.dropped {
		s.Dropped[i] = c.dropped[i].Load()
	}
	return s
}
