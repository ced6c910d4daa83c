// Package net is virtio-net (virtio 1.2, section 5.1) backed by a tap
// device: frames the guest transmits are written to the tap, frames read
// from the tap are delivered to the guest. The MAC address is in the
// configuration space.
//
// The tap is opened by the caller with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and
// handed over as a non-blocking *os.File (so reads can be interrupted on
// reset). Every frame on the tap carries a struct virtio_net_hdr of the
// tap's header size (10 bytes by default, 12 after TUNSETVNETHDRSZ); the
// guest's header is 12 bytes (VERSION_1 always has num_buffers). No
// offloads are offered, so every header is all zeros apart from
// num_buffers, and guest header fields are never passed to the host
// kernel.
//
// Concurrency, ordering and backpressure: one goroutine serves the
// transmit queue (woken by QueueNotify; a kick never blocks the vCPU) and
// writes frames to the tap in the order the guest queued them. Another
// reads one frame at a time from the tap and waits for a guest receive
// buffer before reading the next, so when the guest stops taking frames
// they queue, and are eventually dropped, in the tap: the host kernel is
// the buffer, as for any NIC. Frames that do not fit the guest's buffer
// (no mergeable buffers are offered) are dropped.
//
// It does not implement offloads, mergeable receive buffers, multiqueue,
// the control queue or link status.
package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// FeatureMAC is VIRTIO_NET_F_MAC: the configuration space holds the MAC.
const FeatureMAC uint64 = 1 << 5

// FeatureMTU is VIRTIO_NET_F_MTU: the configuration space holds the MTU
// the guest should use (and not exceed).
const FeatureMTU uint64 = 1 << 3

// HeaderSize is the guest's struct virtio_net_hdr with num_buffers (a
// VERSION_1 device always uses it).
const HeaderSize = 12

// QueueSize is the maximum size of each queue.
const QueueSize = 256

const (
	rxQueue = 0
	txQueue = 1
	// maxFrame is the largest frame handled: 64 KiB plus an Ethernet
	// header; larger transmits are dropped.
	maxFrame = 65536 + 14
)

// Config describes a NIC.
type Config struct {
	// Tap is the tap device, opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and
	// in non-blocking mode. The device does not close it.
	Tap *os.File
	// VnetHdrSize is the tap's vnet header size: 0 means the kernel's
	// default of 10; 12 if the caller set TUNSETVNETHDRSZ to 12.
	VnetHdrSize int
	// MAC is the guest's Ethernet address.
	MAC [6]byte
	// MTU, if not 0, is offered to the guest (VIRTIO_NET_F_MTU). It must
	// be at least 68.
	MTU uint16
}

// Device is a virtio-net device.
type Device struct {
	tap     *os.File
	hdrSize int
	config  [12]byte // struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu
	mtu     bool     // the config's mtu is set (VIRTIO_NET_F_MTU offered)
	log     *slog.Logger

	rxWake, txWake virtio.Waker
	workers        virtio.Workers
}

var _ virtio.Device = (*Device)(nil)

// New returns an inactive virtio-net device on cfg.Tap.
func New(cfg Config) (*Device, error) {
	if cfg.Tap == nil {
		return nil, errors.New("virtio-net: no tap device")
	}
	hdr := cfg.VnetHdrSize
	if hdr == 0 {
		hdr = 10
	}
	if hdr != 10 && hdr != 12 {
		return nil, fmt.Errorf("virtio-net: tap vnet header size %d, want 10 or 12", hdr)
	}
	if cfg.MTU != 0 && cfg.MTU < 68 {
		return nil, fmt.Errorf("virtio-net: MTU %d is below 68", cfg.MTU)
	}
	// Reads must be interruptible on reset, which needs the runtime poller.
	if err := cfg.Tap.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("virtio-net: tap must be opened non-blocking: %w", err)
	}
	d := &Device{
		tap:     cfg.Tap,
		hdrSize: hdr,
		log:     slog.With("tap", cfg.Tap.Name()),
		rxWake:  virtio.NewWaker(),
		txWake:  virtio.NewWaker(),
	}
	copy(d.config[:6], cfg.MAC[:])
	if cfg.MTU != 0 {
		binary.LittleEndian.PutUint16(d.config[10:12], cfg.MTU)
		d.mtu = true
	}
	return d, nil
}

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() virtio.DeviceID { return virtio.IDNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | FeatureMAC
	if d.mtu {
		f |= FeatureMTU
	}
	return f
}

// QueueMaxSizes implements virtio.Device: receiveq1, transmitq1.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	virtio.ReadConfigBytes(d.config[:], offset, data)
}

// WriteConfig implements virtio.Device; the MAC is not writable without
// VIRTIO_NET_F_CTRL_MAC_ADDR.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(_ memory.Memory, _ uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	if len(qs) != 2 || qs[rxQueue] == nil || qs[txQueue] == nil {
		return errors.New("virtio-net: receive and transmit queues not set up")
	}
	if err := d.tap.SetReadDeadline(time.Time{}); err != nil { // undo a reset's deadline
		return fmt.Errorf("virtio-net: tap: %w", err)
	}
	rx, tx := qs[rxQueue], qs[txQueue]
	d.workers.Start()
	d.workers.Go(func(stop <-chan struct{}) { d.rxLoop(rx, irq, stop) })
	d.workers.Go(func(stop <-chan struct{}) {
		buf := make([]byte, 0, d.hdrSize+maxFrame)
		virtio.ServeQueue("net-tx", tx, d.txWake, stop, irq, func(c *queue.Chain) uint32 {
			d.transmit(c, buf)
			return 0
		})
	})
	d.txWake.Wake()
	return nil
}

// QueueNotify implements virtio.Device.
func (d *Device) QueueNotify(index int) {
	switch index {
	case rxQueue:
		d.rxWake.Wake()
	case txQueue:
		d.txWake.Wake()
	}
}

// Reset implements virtio.Device. A read blocked on the tap is interrupted
// with a deadline in the past.
func (d *Device) Reset() {
	if !d.workers.Running() {
		return
	}
	if err := d.tap.SetReadDeadline(time.Unix(1, 0)); err != nil {
		d.log.Error("virtio-net: interrupting the tap reader", "err", err)
	}
	d.workers.Stop()
}

// transmit writes one guest frame to the tap with a zeroed tap header.
func (d *Device) transmit(c *queue.Chain, buf []byte) {
	n := c.ReadableLen()
	if n < HeaderSize || n-HeaderSize > maxFrame {
		d.log.Debug("virtio-net: dropping a transmit of bad size", "bytes", n)
		return
	}
	r := c.Reader()
	var hdr [HeaderSize]byte
	io.ReadFull(r, hdr[:]) // length checked; offloads are not negotiated, so the header is ignored
	buf = buf[:d.hdrSize+int(n-HeaderSize)]
	clear(buf[:d.hdrSize])
	io.ReadFull(r, buf[d.hdrSize:])
	if _, err := d.tap.Write(buf); err != nil {
		d.log.Debug("virtio-net: tap write", "err", err)
	}
}

// rxLoop reads frames from the tap and hands each to the guest.
func (d *Device) rxLoop(q *queue.Queue, irq virtio.Interrupt, stop <-chan struct{}) {
	buf := make([]byte, d.hdrSize+maxFrame)
	var held *queue.Chain // a buffer too small for the last frame is kept for the next
	for {
		n, err := d.tap.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				<-stop // only Reset sets a deadline
				return
			}
			select {
			case <-stop:
				return
			default:
			}
			d.log.Warn("virtio-net: tap read", "err", err)
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond): // do not spin on a broken tap
			}
			continue
		}
		if n < d.hdrSize {
			continue
		}
		frame := buf[d.hdrSize:n]
		if held == nil {
			if held = d.waitBuffer(q, irq, stop); held == nil {
				return // stopped, or the queue is broken
			}
		}
		if held.WritableLen() < uint64(HeaderSize+len(frame)) {
			d.log.Debug("virtio-net: dropping a frame larger than the receive buffer", "bytes", len(frame))
			continue
		}
		var hdr [HeaderSize]byte
		binary.LittleEndian.PutUint16(hdr[10:], 1) // num_buffers
		w := held.Writer()
		w.Write(hdr[:])
		w.Write(frame)
		virtio.PushUsed("net-rx", q, held.Head, w.Written())
		held = nil
		virtio.Signal("net-rx", q, irq)
	}
}

// waitBuffer returns the next receive buffer, sleeping until the guest
// posts one. It returns nil when stopped or when the queue is broken.
func (d *Device) waitBuffer(q *queue.Queue, irq virtio.Interrupt, stop <-chan struct{}) *queue.Chain {
	for {
		c, err := q.Pop()
		if errors.Is(err, queue.ErrBroken) {
			d.log.Warn("virtio-net: receive queue stopped", "err", err)
			<-stop
			return nil
		}
		if err != nil {
			d.log.Debug("virtio-net: dropping a malformed receive buffer", "err", err)
			virtio.PushUsed("net-rx", q, c.Head, 0)
			virtio.Signal("net-rx", q, irq)
			continue
		}
		if c != nil {
			return c
		}
		if q.EnableNotify() {
			continue
		}
		select {
		case <-d.rxWake:
		case <-stop:
			return nil
		}
	}
}
