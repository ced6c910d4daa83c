package bus

import (
	"errors"
	"testing"
)

// recorder remembers the last access it saw.
type recorder struct {
	off   uint64
	data  []byte
	write bool
	fill  byte
}

func (r *recorder) Read(off uint64, data []byte) {
	r.off, r.write = off, false
	for i := range data {
		data[i] = r.fill
	}
	r.data = append([]byte(nil), data...)
}

func (r *recorder) Write(off uint64, data []byte) {
	r.off, r.write, r.data = off, true, append([]byte(nil), data...)
}

func TestRegisterRejectsOverlap(t *testing.T) {
	b := New("pio")
	if err := b.Register(0x3f8, 8, "com1", &recorder{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		base, size uint64
		wantErr    error
	}{
		{"same range", 0x3f8, 8, ErrOverlap},
		{"tail overlaps", 0x3f0, 9, ErrOverlap},
		{"head overlaps", 0x3ff, 1, ErrOverlap},
		{"inside", 0x3fa, 1, ErrOverlap},
		{"covers", 0x300, 0x200, ErrOverlap},
		{"adjacent below", 0x3f0, 8, nil},
		{"adjacent above", 0x400, 8, nil},
	}
	for _, tt := range tests {
		err := b.Register(tt.base, tt.size, tt.name, &recorder{})
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Register(%s %#x+%#x) = %v, want %v", tt.name, tt.base, tt.size, err, tt.wantErr)
		}
	}
	if err := b.Register(0x1000, 0, "empty", &recorder{}); err == nil {
		t.Error("Register with size 0 succeeded")
	}
	if err := b.Register(^uint64(0), 2, "wraps", &recorder{}); err == nil {
		t.Error("Register of a wrapping range succeeded")
	}
	if got := b.Ranges(); len(got) != 3 || got[0].Base != 0x3f0 || got[2].Base != 0x400 {
		t.Errorf("Ranges() = %+v", got)
	}
}

func TestDispatch(t *testing.T) {
	b := New("mmio")
	a, c := &recorder{fill: 0xaa}, &recorder{fill: 0xcc}
	if err := b.Register(0xd0000000, 0x200, "a", a); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(0xd0001000, 0x200, "c", c); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		addr    uint64
		n       int
		write   bool
		want    *recorder
		wantOff uint64
	}{
		{"a first byte", 0xd0000000, 4, false, a, 0},
		{"a notify", 0xd0000050, 4, true, a, 0x50},
		{"a last byte", 0xd00001ff, 1, false, a, 0x1ff},
		{"c config", 0xd0001100, 8, true, c, 0x100},
		{"straddles a's end", 0xd00001fe, 4, false, nil, 0},
		{"gap", 0xd0000800, 4, true, nil, 0},
		{"below all", 0x1000, 4, false, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.data, c.data = nil, nil
			data := []byte{1, 2, 3, 4, 5, 6, 7, 8}[:tt.n]
			var hit bool
			if tt.write {
				hit = b.Write(tt.addr, data)
			} else {
				hit = b.Read(tt.addr, data)
			}
			if hit != (tt.want != nil) {
				t.Fatalf("hit = %v, want %v", hit, tt.want != nil)
			}
			if tt.want == nil {
				if a.data != nil || c.data != nil {
					t.Error("a device saw an access outside its range")
				}
				if !tt.write && data[0] != 0xff {
					t.Errorf("unclaimed read = %x, want all ones", data)
				}
				return
			}
			if tt.want.off != tt.wantOff || tt.want.write != tt.write || len(tt.want.data) != tt.n {
				t.Errorf("device saw off %#x write %v len %d, want %#x %v %d", tt.want.off, tt.want.write, len(tt.want.data), tt.wantOff, tt.write, tt.n)
			}
			if !tt.write && data[0] != tt.want.fill {
				t.Errorf("read data = %x, want device fill %#x", data, tt.want.fill)
			}
		})
	}
}
