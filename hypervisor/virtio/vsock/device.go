// Package vsock is a userspace virtio-vsock device (virtio 1.2, section
// 5.10) that bridges guest AF_VSOCK stream sockets to host AF_UNIX sockets
// with Firecracker's "hybrid vsock" scheme:
//
//   - Host to guest: a host program connects to the unix socket at
//     Config.UDSPath and writes "CONNECT <port>\n". The device opens a
//     connection to the guest's port from a host port it picks (1<<30 and
//     up); when the guest accepts, the host program reads
//     "OK <hostport>\n" and then has a plain byte stream. If nobody
//     listens in the guest the unix connection is closed.
//   - Guest to host: a guest connect to (CID 2, port P) becomes a unix
//     connection to "<UDSPath>_<P>"; if nothing listens there the guest
//     gets a reset.
//
// Flow control is virtio-vsock's credit scheme in both directions: the
// device never sends a connection more than the guest's advertised buffer
// allows, and it resets a connection whose guest sends more than the
// device's (ConnBufSize).
//
// Concurrency, ordering and backpressure: one goroutine serves the
// receive queue (host to guest) and one the transmit queue (guest to host),
// both woken by QueueNotify, which never blocks. Each connection has a
// reader goroutine, which reads at most one chunk (64 KiB) from its unix
// socket and then waits until the receive worker has handed it to the
// guest, and a writer goroutine, which writes what the guest sent to the
// socket. The transmit worker only copies guest data into the connection's
// buffer (bounded by the credit the device granted) and never touches a
// socket, so a host program that stops reading stalls only its own
// connection: its writer blocks, no credit is returned, and the guest stops
// sending on that connection. No vCPU, queue worker or other connection
// waits for it. Bytes of one connection are delivered in order;
// connections are served round-robin; control packets (responses,
// resets, credit updates) go before data, except that a shutdown follows
// the connection's last data.
//
// It supports stream sockets only, and never uses the event queue (it has
// no snapshots, hence no transport resets to announce).
package vsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// Queue indexes and size.
const (
	rxQueue    = 0
	txQueue    = 1
	eventQueue = 2
	// QueueSize is the maximum size of each queue.
	QueueSize = 256
)

const (
	// ConnBufSize is the receive buffer the device advertises per
	// connection (buf_alloc): guest data not yet written to the host
	// socket never exceeds it.
	ConnBufSize = 256 << 10
	// readChunk is the most one connection reads from its socket before
	// the guest has taken it.
	readChunk = 64 << 10
	// maxPayload bounds one guest packet (Linux sends at most 64 KiB).
	maxPayload = 64 << 10
	// maxControl bounds queued control packets, which a guest could
	// otherwise grow without limit by sending to unknown ports while not
	// posting receive buffers.
	maxControl = 1 << 14
	// firstHostPort is where host ports for host-initiated connections
	// start, as in Firecracker.
	firstHostPort = 1 << 30

	handshakeTimeout = 5 * time.Second  // for the host's CONNECT line
	connectTimeout   = 10 * time.Second // for the guest's answer to a request
	dialTimeout      = 5 * time.Second  // for a guest-initiated unix connect
)

// Config describes a vsock device.
type Config struct {
	// GuestCID is the guest's context ID, 3 or more.
	GuestCID uint64
	// UDSPath is the host unix socket that host programs connect to; it is
	// created by New and removed by Close.
	UDSPath string
	// FirstConnect, if set, is called once, on a goroutine of its own, when
	// the guest first accepts a host connection: the guest is up and its
	// service listens.
	FirstConnect func()
}

// Device is a hybrid virtio-vsock device.
type Device struct {
	cid    uint64
	path   string
	ln     *net.UnixListener
	config [8]byte
	log    *slog.Logger

	rxWake, txWake virtio.Waker
	workers        virtio.Workers
	acceptDone     chan struct{}
	handshakes     sync.WaitGroup

	firstConnect sync.Once
	onConnect    func()

	mu           sync.Mutex // guards the fields below and every conn's state
	active       bool
	conns        map[connKey]*conn
	hostPorts    map[uint32]bool
	nextHostPort uint32
	control      []controlPacket // to the guest, before any data
	ready        []*conn         // connections with data for the guest
	connWG       sync.WaitGroup  // conn goroutines (dial, read, write)
}

var _ virtio.Device = (*Device)(nil)

// New creates the host socket and returns an inactive device. Host
// connections made before the guest driver is up are closed after their
// CONNECT line; clients retry, as they must anyway until the guest listens.
func New(cfg Config) (*Device, error) {
	if cfg.GuestCID < 3 || cfg.GuestCID > 0xffffffff {
		return nil, fmt.Errorf("vsock: guest CID %d is outside 3..2^32-1", cfg.GuestCID)
	}
	if cfg.UDSPath == "" {
		return nil, errors.New("vsock: no unix socket path")
	}
	// A socket left by a VMM that died is in the way of Listen; anything
	// else at that path is not ours to remove.
	if fi, err := os.Lstat(cfg.UDSPath); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(cfg.UDSPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.UDSPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vsock: listen on the host socket: %w", err)
	}
	d := &Device{
		onConnect:    cfg.FirstConnect,
		cid:          cfg.GuestCID,
		path:         cfg.UDSPath,
		ln:           ln,
		log:          slog.With("vsock", cfg.UDSPath),
		rxWake:       virtio.NewWaker(),
		txWake:       virtio.NewWaker(),
		acceptDone:   make(chan struct{}),
		conns:        map[connKey]*conn{},
		hostPorts:    map[uint32]bool{},
		nextHostPort: firstHostPort,
	}
	// struct virtio_vsock_config: le64 guest_cid.
	for i := range 8 {
		d.config[i] = byte(cfg.GuestCID >> (8 * i))
	}
	go d.acceptLoop()
	return d, nil
}

// Close removes the host socket and closes every connection.
// Preconditions: the device is reset or was never activated.
func (d *Device) Close() error {
	d.Reset()
	err := d.ln.Close() // also unlinks the socket file
	<-d.acceptDone
	d.handshakes.Wait()
	return err
}

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() virtio.DeviceID { return virtio.IDVsock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc
}

// QueueMaxSizes implements virtio.Device: rx, tx, event.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	virtio.ReadConfigBytes(d.config[:], offset, data)
}

// WriteConfig implements virtio.Device; the configuration is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(_ memory.Memory, _ uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	if len(qs) != 3 || qs[rxQueue] == nil || qs[txQueue] == nil {
		return errors.New("vsock: receive and transmit queues not set up")
	}
	rx, tx := qs[rxQueue], qs[txQueue]
	d.mu.Lock()
	d.active = true // Inactive --Activate--> Active
	d.mu.Unlock()
	d.workers.Start()
	d.workers.Go(func(stop <-chan struct{}) { d.rxLoop(rx, irq, stop) })
	d.workers.Go(func(stop <-chan struct{}) {
		virtio.ServeQueue("vsock-tx", tx, d.txWake, stop, irq, d.handleTx)
	})
	d.rxWake.Wake()
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

// Reset implements virtio.Device: every connection is closed (the guest's
// sockets died with its driver).
func (d *Device) Reset() {
	d.mu.Lock()
	d.active = false // Active --Reset--> Inactive
	for _, c := range d.conns {
		d.closeLocked(c)
	}
	d.control, d.ready = nil, nil
	d.mu.Unlock()
	d.workers.Stop()
	d.connWG.Wait()
}

// Idle reports whether the device has no connection and nothing queued for
// the guest: the state a VM is saved in, since a host socket cannot follow
// the guest into another process.
func (d *Device) Idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns) == 0 && len(d.control) == 0 && len(d.ready) == 0
}

// rxLoop hands control packets and connection data to the guest, one
// packet per receive buffer.
func (d *Device) rxLoop(q *queue.Queue, irq virtio.Interrupt, stop <-chan struct{}) {
	var held *queue.Chain // a buffer taken when there was work, kept if the work vanished
	for {
		select {
		case <-d.rxWake:
		case <-stop:
			return
		}
		for d.hasRxWork() {
			if held == nil {
				c, err := q.Pop()
				if errors.Is(err, queue.ErrBroken) {
					d.log.Warn("vsock: receive queue stopped", "err", err)
					return
				}
				if err != nil {
					d.log.Debug("vsock: dropping malformed receive buffer", "err", err)
					virtio.PushUsed("vsock-rx", q, c.Head, 0)
					continue
				}
				if c == nil {
					// Out of buffers: ask for a kick when the guest adds
					// some, unless it already did.
					if q.EnableNotify() {
						continue
					}
					break
				}
				held = c
			}
			n, ok := d.fillRx(held)
			if !ok {
				break
			}
			virtio.PushUsed("vsock-rx", q, held.Head, n)
			held = nil
		}
		virtio.Signal("vsock-rx", q, irq)
	}
}

func (d *Device) hasRxWork() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.control) > 0 || len(d.ready) > 0
}
