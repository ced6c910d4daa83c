// Package blk is virtio-blk (virtio 1.2, section 5.2) backed by a host
// file: reads, writes, flush (fsync) and GET_ID (the serial the guest shows
// in /sys/block/vdX/serial), with an optional read-only mode in which
// writes fail with VIRTIO_BLK_S_IOERR. Requests are parsed in request.go
// (pure, no I/O) and executed in execute.go.
//
// Concurrency and ordering: one goroutine serves the single request queue,
// woken by QueueNotify, which never blocks the vCPU that kicked. Requests
// complete in the order the driver published them, each one fully before
// the next starts, and the data goes straight between the file and guest
// memory (pread/pwrite, no copy). A slow disk delays completions, not the
// vCPUs: the guest sees a busy device, which is the backpressure it
// understands.
//
// Every sector range is checked against the capacity, fixed when the
// device is created (the file size rounded down to whole sectors). It does
// not implement discard, write-zeroes, multiple queues or a writeback
// cache toggle.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmctl/vmctl/hypervisor/memory"
	"github.com/vmctl/vmctl/hypervisor/virtio"
	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

// Feature bits (virtio 1.2, 5.2.3).
const (
	FeatureSegMax uint64 = 1 << 2
	FeatureRO     uint64 = 1 << 5
	FeatureFlush  uint64 = 1 << 9
)

// QueueSize is the maximum size of the request queue.
const QueueSize = 256

// configSize covers struct virtio_blk_config up to and including
// writeback.
const configSize = 36

// Config describes a disk.
type Config struct {
	// Path is the backing file (a regular file or a block device).
	Path string
	// ReadOnly opens it read-only and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// Serial is returned by GET_ID: at most 20 bytes.
	Serial string
}

// Device is a virtio-blk device.
type Device struct {
	file     *os.File
	readOnly bool
	serial   string
	capacity uint64 // in sectors
	config   [configSize]byte

	wake    virtio.Waker
	workers virtio.Workers
}

var _ virtio.Device = (*Device)(nil)

// New opens the disk. Close releases the file.
func New(cfg Config) (*Device, error) {
	if len(cfg.Serial) > IDBytes {
		return nil, fmt.Errorf("virtio-blk: serial %q is longer than %d bytes", cfg.Serial, IDBytes)
	}
	flag := os.O_RDWR
	if cfg.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(cfg.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: open disk: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too, unlike Stat
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("virtio-blk: size of %s: %w", cfg.Path, err)
	}
	d := &Device{
		file:     f,
		readOnly: cfg.ReadOnly,
		serial:   cfg.Serial,
		capacity: uint64(size) / SectorSize,
		wake:     virtio.NewWaker(),
	}
	// struct virtio_blk_config: capacity at 0, seg_max at 12.
	binary.LittleEndian.PutUint64(d.config[0:], d.capacity)
	binary.LittleEndian.PutUint32(d.config[12:], QueueSize-2)
	return d, nil
}

// Capacity is the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Close closes the backing file. Preconditions: the device is reset.
func (d *Device) Close() error { return d.file.Close() }

// DeviceID implements virtio.Device.
func (d *Device) DeviceID() virtio.DeviceID { return virtio.IDBlock }

// Features implements virtio.Device. SEG_MAX is offered because without it
// Linux sends one segment per request.
func (d *Device) Features() uint64 {
	f := virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | FeatureSegMax | FeatureFlush
	if d.readOnly {
		f |= FeatureRO
	}
	return f
}

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	virtio.ReadConfigBytes(d.config[:], offset, data)
}

// WriteConfig implements virtio.Device. Only writeback is writable in the
// specification, and only with a feature not offered here.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(_ memory.Memory, _ uint64, qs []*queue.Queue, irq virtio.Interrupt) error {
	if len(qs) != 1 || qs[0] == nil {
		return errors.New("virtio-blk: request queue not set up")
	}
	q := qs[0]
	d.workers.Start()
	d.workers.Go(func(stop <-chan struct{}) {
		virtio.ServeQueue("blk", q, d.wake, stop, irq, d.handle)
	})
	d.wake.Wake()
	return nil
}

func (d *Device) handle(c *queue.Chain) uint32 {
	r, err := Parse(c)
	if errors.Is(err, ErrNoStatus) {
		virtio.LogGuestError("virtio-blk: dropping request", "err", err)
		return 0
	}
	if err != nil {
		virtio.LogGuestError("virtio-blk: bad request", "err", err)
		r.Status[0] = StatusIOErr
		return 1
	}
	return d.execute(&r)
}

// QueueNotify implements virtio.Device.
func (d *Device) QueueNotify(index int) {
	if index == 0 {
		d.wake.Wake()
	}
}

// Reset implements virtio.Device. Requests in flight complete first.
func (d *Device) Reset() { d.workers.Stop() }
