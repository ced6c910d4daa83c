package queue

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vmctl/vmctl/hypervisor/memory"
)

// Buffer is one descriptor's buffer. Data is the host view of guest memory:
// writing to it writes guest RAM, and the guest may change it at any time.
type Buffer struct {
	Addr uint64
	Data []byte
}

// Chain is a validated descriptor chain, with indirect tables resolved.
// Readable (device-readable) buffers all precede Writable ones in the
// chain, as the specification requires.
type Chain struct {
	Head     uint16
	Readable []Buffer
	Writable []Buffer
}

// walk follows the chain at head through the descriptor table desc of a
// queue of size n. Preconditions: len(desc) == n*DescSize.
func walk(mem memory.Memory, desc []byte, n uint16, head uint16, indirect bool) (*Chain, error) {
	if head >= n {
		return nil, fmt.Errorf("%w: head index %d outside a table of %d", ErrInvalidChain, head, n)
	}
	c := &Chain{Head: head}
	table, tableLen := desc, uint32(n)
	inIndirect := false
	idx := uint32(head)
	// A chain visits each table entry at most once, so more steps than
	// entries means a loop.
	for steps := uint32(1); ; steps++ {
		if steps > tableLen {
			return nil, fmt.Errorf("%w: longer than its table of %d (a loop?)", ErrInvalidChain, tableLen)
		}
		d := readDescriptor(table, idx)
		if d.Flags&DescFlagIndirect != 0 {
			switch {
			case !indirect:
				return nil, fmt.Errorf("%w: indirect descriptor without VIRTIO_F_INDIRECT_DESC", ErrInvalidChain)
			case inIndirect:
				return nil, fmt.Errorf("%w: nested indirect table", ErrInvalidChain)
			case d.Flags&DescFlagNext != 0:
				return nil, fmt.Errorf("%w: indirect descriptor with NEXT set", ErrInvalidChain)
			case d.Len == 0 || d.Len%DescSize != 0 || d.Len/DescSize > MaxIndirect:
				return nil, fmt.Errorf("%w: indirect table of %d bytes", ErrInvalidChain, d.Len)
			}
			t, err := mem.Slice(d.Addr, uint64(d.Len))
			if err != nil {
				return nil, fmt.Errorf("%w: indirect table at %#x+%d: %w", ErrInvalidChain, d.Addr, d.Len, err)
			}
			// The indirect descriptor ends the direct chain; its table
			// starts at entry 0 (virtio 1.2, 2.7.5.3).
			table, tableLen, idx, steps, inIndirect = t, d.Len/DescSize, 0, 0, true
			continue
		}
		if err := c.add(mem, d); err != nil {
			return nil, err
		}
		if d.Flags&DescFlagNext == 0 {
			return c, nil
		}
		if uint32(d.Next) >= tableLen {
			return nil, fmt.Errorf("%w: next index %d outside a table of %d", ErrInvalidChain, d.Next, tableLen)
		}
		idx = uint32(d.Next)
	}
}

// readDescriptor decodes entry i of table. Preconditions: i is inside table.
func readDescriptor(table []byte, i uint32) Descriptor {
	b := table[i*DescSize : (i+1)*DescSize]
	return Descriptor{
		Addr:  binary.LittleEndian.Uint64(b[0:]),
		Len:   binary.LittleEndian.Uint32(b[8:]),
		Flags: binary.LittleEndian.Uint16(b[12:]),
		Next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

func (c *Chain) add(mem memory.Memory, d Descriptor) error {
	writable := d.Flags&DescFlagWrite != 0
	if !writable && len(c.Writable) > 0 {
		return fmt.Errorf("%w: device-readable descriptor after a writable one", ErrInvalidChain)
	}
	var data []byte
	if d.Len > 0 {
		var err error
		if data, err = mem.Slice(d.Addr, uint64(d.Len)); err != nil {
			return fmt.Errorf("%w: buffer at %#x+%d: %w", ErrInvalidChain, d.Addr, d.Len, err)
		}
	}
	if writable {
		c.Writable = append(c.Writable, Buffer{Addr: d.Addr, Data: data})
	} else {
		c.Readable = append(c.Readable, Buffer{Addr: d.Addr, Data: data})
	}
	return nil
}

// ReadableLen is the total size of the readable buffers.
func (c *Chain) ReadableLen() uint64 { return totalLen(c.Readable) }

// WritableLen is the total size of the writable buffers.
func (c *Chain) WritableLen() uint64 { return totalLen(c.Writable) }

func totalLen(bufs []Buffer) uint64 {
	var n uint64
	for _, b := range bufs {
		n += uint64(len(b.Data))
	}
	return n
}

// Reader returns an io.Reader over the readable buffers, in chain order.
func (c *Chain) Reader() *Reader { return &Reader{bufs: c.Readable} }

// Writer returns an io.Writer over the writable buffers, in chain order.
func (c *Chain) Writer() *Writer { return &Writer{bufs: c.Writable} }

// Reader reads a chain's readable buffers as one stream.
type Reader struct {
	bufs []Buffer
	off  int
	n    uint64
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && len(r.bufs) > 0 {
		k := copy(p, r.bufs[0].Data[r.off:])
		p, r.off, total = p[k:], r.off+k, total+k
		if r.off == len(r.bufs[0].Data) {
			r.bufs, r.off = r.bufs[1:], 0
		}
	}
	r.n += uint64(total)
	if total == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return total, nil
}

// Len is how many bytes remain to be read.
func (r *Reader) Len() uint64 { return totalLen(r.bufs) - uint64(r.off) }

// Writer writes a chain's writable buffers as one stream.
type Writer struct {
	bufs []Buffer
	off  int
	n    uint32
}

// Write implements io.Writer. It fails with io.ErrShortWrite once the
// buffers are full.
func (w *Writer) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && len(w.bufs) > 0 {
		k := copy(w.bufs[0].Data[w.off:], p)
		p, w.off, total = p[k:], w.off+k, total+k
		if w.off == len(w.bufs[0].Data) {
			w.bufs, w.off = w.bufs[1:], 0
		}
	}
	w.n += uint32(total)
	if len(p) > 0 {
		return total, io.ErrShortWrite
	}
	return total, nil
}

// Next returns up to n bytes of writable guest memory at the current
// position and advances past them, for zero-copy producers (a file read
// straight into guest RAM). It returns nil when the buffers are full.
func (w *Writer) Next(n int) []byte {
	for len(w.bufs) > 0 && w.off == len(w.bufs[0].Data) {
		w.bufs, w.off = w.bufs[1:], 0
	}
	if len(w.bufs) == 0 || n <= 0 {
		return nil
	}
	b := w.bufs[0].Data[w.off:]
	if len(b) > n {
		b = b[:n]
	}
	w.off += len(b)
	w.n += uint32(len(b))
	return b
}

// Written is the number of bytes written so far: the used length.
func (w *Writer) Written() uint32 { return w.n }

// Available is how many bytes can still be written.
func (w *Writer) Available() uint64 { return totalLen(w.bufs) - uint64(w.off) }
