// Package net is virtio-net (virtio 1.2, section 5.1) backed by a tap
// device: frames the guest transmits are written to the tap, frames read
// from the tap are delivered to the guest.
//
// Offered: the MAC, the MTU and the link status in the configuration
// space; checksum offload both ways (CSUM, GUEST_CSUM); TCP segmentation
// offload both ways for IPv4 and IPv6 with ECN (HOST_TSO4/6/ECN,
// GUEST_TSO4/6/ECN; the receive ones only as far as the tap supports
// them); mergeable receive buffers (MRG_RXBUF). Not offered: UFO and USO
// (Linux guests stopped sending UFO in 4.14 and the host kernel never
// hands a tap reader UFO, so it would be an unexercised path), multiqueue,
// the control queue (so no receive filters and no run-time offload
// changes), link status changes.
//
// The tap: the caller opens it with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
// non-blocking, and hands it over; the device sets its vnet header size to
// 12 bytes (TUNSETVNETHDRSZ), the guest's header size, so a header needs
// no reshaping, and sets its offloads (TUNSETOFFLOAD) to exactly what the
// guest negotiated when the driver starts the device, back to none on
// reset. A tap with more offloads than the guest negotiated would hand it
// partially checksummed or TSO frames it cannot take.
//
// The guest is not trusted. Every transmitted header is checked against
// the negotiated features and the frame before anything reaches the host
// kernel (header.go): the flags, gso_type, that a checksum lies inside the
// frame and after the Ethernet header, that a TSO frame's Ethernet, IP and
// TCP headers parse and agree with csum_start and gso_type, that its
// segments fit the MTU and are not absurdly many. The header the host
// kernel gets is built from checked values, never copied, and hdr_len is
// computed, not taken from the guest. The frame's first bytes, which
// contain every header checked, are copied out of guest memory before the
// checks, so the guest cannot change them afterwards; the rest is written
// from guest memory directly. Frames that fail are dropped and counted
// (Stats); nothing a guest writes stops the device or the VMM. Frames from
// the tap are checked too: one using an offload the guest did not
// negotiate (queued before a reset, say) is dropped.
//
// Concurrency, ordering and backpressure: one goroutine per queue. The
// transmit goroutine is woken by QueueNotify (a kick never blocks the
// vCPU), drains the queue and writes the frames to the tap in the order
// the guest queued them; the host kernel takes a frame or drops it, it
// does not push back. The receive goroutine holds the guest's receive
// buffers it popped and reads the next frame from the tap straight into
// them (readv: the tap's header into a private buffer, the frame into
// guest memory, whatever does not fit into a private overflow buffer that
// is then copied into further guest buffers). It reads a frame only when
// it holds a buffer, so when the guest stops posting buffers frames queue,
// and are eventually dropped, in the tap: the host kernel is the buffer,
// as for any NIC, and a stalled guest cannot make the VMM allocate. The
// guest is interrupted when the tap runs empty or the device waits for
// buffers, and after each frame as far as the driver's event index asks
// for it.
package net

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// QueueSize is the maximum size of each queue.
const QueueSize = 256

const (
	rxQueue = 0
	txQueue = 1
)

// MTU limits (virtio 1.2, 5.1.4.1) and the default.
const (
	MinMTU     = 68
	MaxMTU     = 65535
	DefaultMTU = 1500
)

// statusLinkUp is VIRTIO_NET_S_LINK_UP.
const statusLinkUp = 1

// Config describes a NIC.
type Config struct {
	// Tap is the tap device, opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and
	// in non-blocking mode. The device sets its vnet header size and
	// offloads; it does not close it.
	Tap *os.File
	// MAC is the guest's Ethernet address.
	MAC [6]byte
	// MTU is offered to the guest (MinMTU to MaxMTU; 0 means DefaultMTU).
	// It should not exceed the tap's MTU.
	MTU int
}

// Device is a virtio-net device.
type Device struct {
	queues   [2]*queue.Queue // of the last activation
	tap      *os.File
	raw      syscall.RawConn
	ctl      tapControl
	mtu      int
	features uint64
	config   [12]byte // struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu
	log      *slog.Logger
	stats    counters

	rxWake, txWake virtio.Waker
	workers        virtio.Workers
	// off is set by Activate before the workers start and read only by
	// them.
	off offloads
}

var _ virtio.Device = (*Device)(nil)

// New returns an inactive virtio-net device on cfg.Tap. It sets the tap's
// vnet header size and probes which receive offloads the tap supports.
func New(cfg Config) (*Device, error) {
	if cfg.Tap == nil {
		return nil, errors.New("virtio-net: no tap device")
	}
	return newDevice(cfg, ioctlTap{cfg.Tap})
}

func newDevice(cfg Config, ctl tapControl) (*Device, error) {
	if cfg.Tap == nil {
		return nil, errors.New("virtio-net: no tap device")
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, fmt.Errorf("virtio-net: MTU %d: must be %d to %d", mtu, MinMTU, MaxMTU)
	}
	name := cfg.Tap.Name()
	// Reads must be interruptible on reset, which needs the runtime poller.
	if err := cfg.Tap.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("virtio-net: %s must be opened non-blocking: %w", name, err)
	}
	raw, err := cfg.Tap.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("virtio-net: %s: %w", name, err)
	}
	if err := ctl.setVnetHdrSize(HeaderSize); err != nil {
		return nil, fmt.Errorf("virtio-net: %s: setting the vnet header size (TUNSETVNETHDRSZ): %w", name, err)
	}
	// Offer the receive offloads the tap can deliver; then none until a
	// driver negotiates.
	var guest uint64
	for _, try := range []int{tunFCSUM | tunFTSO4 | tunFTSO6 | tunFTSOECN, tunFCSUM} {
		if ctl.setOffload(try) == nil {
			guest = guestFeaturesFor(try)
			break
		}
	}
	if err := ctl.setOffload(0); err != nil {
		return nil, fmt.Errorf("virtio-net: %s: clearing offloads (TUNSETOFFLOAD): %w", name, err)
	}
	d := &Device{
		tap: cfg.Tap, raw: raw, ctl: ctl, mtu: mtu,
		features: virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc |
			FeatureMAC | FeatureMTU | FeatureStatus | FeatureMrgRxBuf |
			FeatureCSUM | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN | guest,
		log:    slog.With("tap", name),
		rxWake: virtio.NewWaker(),
		txWake: virtio.NewWaker(),
	}
	copy(d.config[0:6], cfg.MAC[:])
	d.config[6] = statusLinkUp // le16 status
	d.config[10], d.config[11] = byte(mtu), byte(mtu>>8)
	return d, nil
}

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() virtio.DeviceID { return virtio.IDNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueMaxSizes implements virtio.Device: receiveq1, transmitq1.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	virtio.ReadConfigBytes(d.config[:], offset, data)
}

// WriteConfig implements virtio.Device: every field is read-only for a
// VERSION_1 driver.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Stats returns the device's counters.
func (d *Device) Stats() Stats { return d.stats.snapshot() }

// Activate implements virtio.Device: it sets the tap's offloads to what the
// driver negotiated and starts the queue goroutines.
func (d *Device) Activate(mem memory.Memory, features uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	if len(qs) != 2 || qs[rxQueue] == nil || qs[txQueue] == nil {
		return errors.New("virtio-net: receive and transmit queues not set up")
	}
	d.off = negotiate(features)
	if err := d.ctl.setOffload(d.off.tapFlags()); err != nil {
		return fmt.Errorf("virtio-net: setting the tap's offloads (TUNSETOFFLOAD %#x): %w", d.off.tapFlags(), err)
	}
	if err := d.tap.SetDeadline(time.Time{}); err != nil { // undo a reset's deadline
		return fmt.Errorf("virtio-net: tap: %w", err)
	}
	rx, tx := qs[rxQueue], qs[txQueue]
	d.queues = [2]*queue.Queue{rx, tx}
	d.workers.Start()
	d.workers.Go(func(stop <-chan struct{}) { newReceiver(d, rx, irq, stop).run() })
	d.workers.Go(func(stop <-chan struct{}) {
		t := newTransmitter(d)
		virtio.ServeQueue("net-tx", tx, d.txWake, stop, irq, func(c *queue.Chain) uint32 {
			t.transmit(c)
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

// Reset implements virtio.Device. A read or write blocked on the tap is
// interrupted with a deadline in the past; the tap's offloads go back to
// none, so frames queued for the next driver are fully formed.
func (d *Device) Reset() {
	if !d.workers.Running() {
		return
	}
	if err := d.tap.SetDeadline(time.Unix(1, 0)); err != nil {
		d.log.Error("virtio-net: interrupting the tap", "err", err)
	}
	d.workers.Stop()
	// What a queue looked like when it stopped: the one record of a
	// receive or transmit path that stalled.
	d.log.Info("virtio-net queues at reset", "tap", d.tap.Name(), "rx", d.queues[rxQueue].Describe(), "tx", d.queues[txQueue].Describe())
	if err := d.ctl.setOffload(0); err != nil {
		d.log.Warn("virtio-net: clearing the tap's offloads", "err", err)
	}
	d.off = offloads{}
}

// drop counts a dropped frame; guest-caused drops are also logged, rate
// limited.
func (d *Device) drop(why DropReason, frameLen int) {
	d.stats.dropped[why].Add(1)
	switch why {
	case TxMalformed, TxNotNegotiated, TxTooLong:
		virtio.LogGuestError("virtio-net: dropping a transmitted frame", "tap", d.tap.Name(), "reason", why.String(), "bytes", frameLen)
	default:
		d.log.Debug("virtio-net: dropping a frame", "reason", why.String(), "bytes", frameLen)
	}
}
