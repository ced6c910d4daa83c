package net

import (
	"io"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// transmitter is the transmit queue goroutine's state: private buffers
// reused for every frame.
type transmitter struct {
	d     *Device
	hdr   [HeaderSize]byte   // the header the host kernel gets
	head  [headerWindow]byte // the frame's start, copied before the checks
	iovs  [][]byte
	spill []byte // the frame's rest, for chains of more buffers than a writev takes
}

func newTransmitter(d *Device) *transmitter {
	return &transmitter{d: d, iovs: make([][]byte, 0, 64)}
}

// transmit checks one guest frame and writes it to the tap.
func (t *transmitter) transmit(c *queue.Chain) {
	d := t.d
	total := c.ReadableLen()
	switch {
	case total < HeaderSize+ethHeaderLen:
		d.drop(TxMalformed, max(int(total)-HeaderSize, 0))
		return
	case total-HeaderSize > maxFrame:
		d.drop(TxTooLong, int(min(total, 1<<30)))
		return
	}
	frameLen := int(total - HeaderSize)
	r := c.Reader()
	var g [HeaderSize]byte
	io.ReadFull(r, g[:]) // lengths checked above: these reads cannot fail
	n := min(frameLen, headerWindow)
	io.ReadFull(r, t.head[:n])
	host, why := checkTransmit(d.off, d.mtu, decodeHeader(g[:]), t.head[:n], frameLen)
	if why != 0 {
		d.drop(why, frameLen)
		return
	}
	host.encode(t.hdr[:])
	iovs := append(t.iovs[:0], t.hdr[:], t.head[:n])
	// The rest of the frame goes from guest memory to the kernel's copy
	// directly: no check depends on it.
	iovs = appendBuffers(iovs, c.Readable, HeaderSize+n)
	if len(iovs) > maxIovecs {
		if t.spill == nil {
			t.spill = make([]byte, maxFrame)
		}
		rest := t.spill[:frameLen-n]
		io.ReadFull(r, rest)
		iovs = append(iovs[:2], rest)
	}
	t.iovs = iovs[:0]
	written, err := writeFrame(d.raw, iovs)
	clear(iovs) // do not keep guest memory referenced between frames
	if err != nil || written != HeaderSize+frameLen {
		d.stats.dropped[TxTapError].Add(1)
		d.log.Debug("virtio-net: tap write", "err", err, "written", written, "bytes", frameLen)
		return
	}
	d.stats.txFrames.Add(1)
	d.stats.txBytes.Add(uint64(frameLen))
}

// appendBuffers appends the bytes of bufs after the first skip bytes to
// iovs, one slice per non-empty buffer.
func appendBuffers(iovs [][]byte, bufs []queue.Buffer, skip int) [][]byte {
	for _, b := range bufs {
		data := b.Data
		if skip >= len(data) {
			skip -= len(data)
			continue
		}
		data, skip = data[skip:], 0
		iovs = append(iovs, data)
	}
	return iovs
}
