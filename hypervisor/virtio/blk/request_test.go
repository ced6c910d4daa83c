package blk

import (
	"errors"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/virtio/queue"
)

func hdr(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	b[0], b[1], b[2], b[3] = byte(typ), byte(typ>>8), byte(typ>>16), byte(typ>>24)
	for i := range 8 {
		b[8+i] = byte(sector >> (8 * i))
	}
	return b
}

func bufs(bs ...[]byte) []queue.Buffer {
	var out []queue.Buffer
	for _, b := range bs {
		out = append(out, queue.Buffer{Data: b})
	}
	return out
}

func TestParse(t *testing.T) {
	sector := make([]byte, 512)
	for _, tc := range []struct {
		name    string
		chain   queue.Chain
		wantErr error
		typ     uint32
		dataLen uint64
		nData   int
	}{
		{name: "read", chain: queue.Chain{Readable: bufs(hdr(TypeIn, 7)), Writable: bufs(make([]byte, 1024), make([]byte, 1))},
			typ: TypeIn, dataLen: 1024, nData: 1},
		{name: "read with status in the data buffer", chain: queue.Chain{Readable: bufs(hdr(TypeIn, 7)), Writable: bufs(make([]byte, 513))},
			typ: TypeIn, dataLen: 512, nData: 1},
		{name: "write with header split and sharing a buffer with data",
			chain: queue.Chain{Readable: bufs(hdr(TypeOut, 1)[:5], append(hdr(TypeOut, 1)[5:], sector[:100]...), sector[100:]),
				Writable: bufs(make([]byte, 1))},
			typ: TypeOut, dataLen: 512, nData: 2},
		{name: "flush", chain: queue.Chain{Readable: bufs(hdr(TypeFlush, 0)), Writable: bufs(make([]byte, 1))}, typ: TypeFlush},
		{name: "get id", chain: queue.Chain{Readable: bufs(hdr(TypeGetID, 0)), Writable: bufs(make([]byte, 20), make([]byte, 1))},
			typ: TypeGetID, dataLen: 20, nData: 1},
		{name: "unsupported type", chain: queue.Chain{Readable: bufs(hdr(TypeDiscard, 0), sector), Writable: bufs(make([]byte, 1))},
			typ: TypeDiscard},
		{name: "no status byte", chain: queue.Chain{Readable: bufs(hdr(TypeIn, 0))}, wantErr: ErrNoStatus},
		{name: "header in a writable buffer", chain: queue.Chain{Writable: bufs(hdr(TypeIn, 0), make([]byte, 1))}, wantErr: ErrBadRequest},
		{name: "short header", chain: queue.Chain{Readable: bufs(hdr(TypeIn, 0)[:15]), Writable: bufs(make([]byte, 1))}, wantErr: ErrBadRequest},
		{name: "read data not whole sectors", chain: queue.Chain{Readable: bufs(hdr(TypeIn, 0)), Writable: bufs(make([]byte, 100), make([]byte, 1))},
			wantErr: ErrBadRequest},
		{name: "read with readable data", chain: queue.Chain{Readable: bufs(hdr(TypeIn, 0), sector), Writable: bufs(make([]byte, 1))},
			wantErr: ErrBadRequest},
		{name: "write with writable data", chain: queue.Chain{Readable: bufs(hdr(TypeOut, 0)), Writable: bufs(sector, make([]byte, 1))},
			wantErr: ErrBadRequest},
		{name: "write data not whole sectors", chain: queue.Chain{Readable: bufs(hdr(TypeOut, 0), sector[:3]), Writable: bufs(make([]byte, 1))},
			wantErr: ErrBadRequest},
	} {
		r, err := Parse(&tc.chain)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: Parse() error = %v, want %v", tc.name, err, tc.wantErr)
			}
			if !errors.Is(err, ErrNoStatus) && len(r.Status) != 1 {
				t.Errorf("%s: failed request has no status byte to report with", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Parse() error = %v", tc.name, err)
			continue
		}
		if r.Type != tc.typ || r.DataLen != tc.dataLen || len(r.Data) != tc.nData || len(r.Status) != 1 {
			t.Errorf("%s: Parse() = type %d, %d bytes in %d buffers, status %d bytes; want %d, %d in %d, 1",
				tc.name, r.Type, r.DataLen, len(r.Data), len(r.Status), tc.typ, tc.dataLen, tc.nData)
		}
	}
}

func TestCheckRange(t *testing.T) {
	for _, tc := range []struct {
		sector, bytes, capacity uint64
		ok                      bool
	}{
		{0, 512, 1, true},
		{0, 1024, 1, false},
		{1, 0, 1, true},
		{1, 512, 1, false},
		{2, 0, 1, false},
		{^uint64(0), 512, 8, false},
		{7, 512, 8, true},
	} {
		r := Request{Sector: tc.sector, DataLen: tc.bytes}
		if err := r.CheckRange(tc.capacity); (err == nil) != tc.ok {
			t.Errorf("CheckRange(sector %d, %d bytes, capacity %d) = %v, want ok=%v", tc.sector, tc.bytes, tc.capacity, err, tc.ok)
		}
	}
}

// FuzzParse: parsing arbitrary chains never panics, and whatever it accepts
// stays inside the chain's buffers.
func FuzzParse(f *testing.F) {
	f.Add(hdr(TypeIn, 3), uint16(1024), uint8(2))
	f.Add(append(hdr(TypeOut, 3), make([]byte, 512)...), uint16(1), uint8(1))
	f.Add(hdr(TypeGetID, 0), uint16(21), uint8(3))
	f.Fuzz(func(t *testing.T, readable []byte, writable uint16, split uint8) {
		c := queue.Chain{}
		for len(readable) > 0 {
			k := min(len(readable), int(split)+1)
			c.Readable = append(c.Readable, queue.Buffer{Data: readable[:k]})
			readable = readable[k:]
		}
		if writable > 0 {
			w := make([]byte, writable)
			k := min(len(w), int(split)+1)
			c.Writable = bufs(w[:k], w[k:])
		}
		r, err := Parse(&c)
		if err != nil {
			return
		}
		var n uint64
		for _, d := range r.Data {
			n += uint64(len(d))
		}
		if n != r.DataLen || len(r.Status) != 1 {
			t.Fatalf("data %d bytes, DataLen %d, status %d bytes", n, r.DataLen, len(r.Status))
		}
	})
}
