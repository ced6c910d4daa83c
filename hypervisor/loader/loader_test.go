package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vmctl/vmctl/hypervisor/arch/x86"
	"github.com/vmctl/vmctl/hypervisor/memory"
)

// fakeBzImage builds a minimal valid bzImage: 4 setup sectors after the
// boot sector, then kernelSize bytes of "kernel" (0xcc each).
func fakeBzImage(kernelSize int, edit func(b []byte)) []byte {
	le := binary.LittleEndian
	b := make([]byte, 5*512+kernelSize)
	b[offSetupSects] = 4
	le.PutUint16(b[offBootFlag:], bootFlagMagic)
	b[offJump], b[offJump+1] = 0xeb, 0x6a // header ends at 0x26c
	le.PutUint32(b[offHeaderMagic:], headerMagic)
	le.PutUint16(b[offVersion:], 0x020f)
	b[offLoadFlags] = loadedHigh
	le.PutUint32(b[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(b[offKernelAlign:], 0x200000)
	le.PutUint16(b[offXLoadFlags:], xlfKernel64)
	le.PutUint32(b[offCmdlineSize:], 0x7ff)
	le.PutUint64(b[offPrefAddress:], 0x1000000)
	le.PutUint32(b[offInitSize:], 0x400000)
	for i := 5 * 512; i < len(b); i++ {
		b[i] = 0xcc
	}
	if edit != nil {
		edit(b)
	}
	return b
}

func TestParseBzImage(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name    string
		img     []byte
		wantErr string
	}{
		{"valid", fakeBzImage(4096, nil), ""},
		{"too short", make([]byte, 100), "not a Linux bzImage"},
		{"no boot flag", fakeBzImage(4096, func(b []byte) { b[offBootFlag] = 0 }), "not a Linux bzImage"},
		{"no HdrS", fakeBzImage(4096, func(b []byte) { b[offHeaderMagic] = 'X' }), "not a Linux bzImage"},
		{"old protocol", fakeBzImage(4096, func(b []byte) { le.PutUint16(b[offVersion:], 0x0206) }), "older than 2.12"},
		{"no jump", fakeBzImage(4096, func(b []byte) { b[offJump] = 0x90 }), "short jump"},
		{"header too short", fakeBzImage(4096, func(b []byte) { b[offJump+1] = 0x10 }), "setup header ends"},
		{"not loaded high", fakeBzImage(4096, func(b []byte) { b[offLoadFlags] = 0 }), "load high"},
		{"32-bit only", fakeBzImage(4096, func(b []byte) { le.PutUint16(b[offXLoadFlags:], 0) }), "64-bit entry"},
		{"setup sectors past end", fakeBzImage(4096, func(b []byte) { b[offSetupSects] = 255 }), "leave no kernel"},
		{"zero cmdline size", fakeBzImage(4096, func(b []byte) { le.PutUint32(b[offCmdlineSize:], 0) }), "cmdline_size"},
		{"init size too small", fakeBzImage(4096, func(b []byte) { le.PutUint32(b[offInitSize:], 16) }), "init_size"},
		{"pref address high", fakeBzImage(4096, func(b []byte) { le.PutUint64(b[offPrefAddress:], 1<<40) }), "above 4 GiB"},
		{"initrd max low", fakeBzImage(4096, func(b []byte) { le.PutUint32(b[offInitrdAddrMax:], 0x1000) }), "initrd_addr_max"},
		{"bad alignment", fakeBzImage(4096, func(b []byte) { b[offRelocatable] = 1; le.PutUint32(b[offKernelAlign:], 3) }), "kernel_alignment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := ParseBzImage(bytes.NewReader(tt.img), int64(len(tt.img)))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if img.KernelOffset != 5*512 || img.KernelSize != 4096 || len(img.Header) != 0x26c-hdrStart {
					t.Errorf("parsed %+v", img)
				}
				return
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func guestMem(t *testing.T, size uint64) (*memory.Guest, []x86.E820Entry) {
	t.Helper()
	ranges, err := x86.RAMRanges(size)
	if err != nil {
		t.Fatal(err)
	}
	g, err := memory.NewGuest(ranges)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	e820, err := x86.E820(ranges)
	if err != nil {
		t.Fatal(err)
	}
	return g, e820
}

func TestLoadLinuxZeroPage(t *testing.T) {
	mem, e820 := guestMem(t, 64<<20)
	kernel := fakeBzImage(8192, nil)
	initrd := bytes.Repeat([]byte{0x5a}, 10000)
	b, err := LoadLinux(mem, Linux{
		Kernel: bytes.NewReader(kernel), KernelSize: int64(len(kernel)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=ttyS0 quiet", E820: e820,
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Entry != 0x100200 || b.ZeroPage != x86.ZeroPageAddr || b.KernelEnd != 0x1400000 {
		t.Errorf("Boot = %+v", b)
	}
	if b.InitrdAddr%4096 != 0 || b.InitrdAddr < b.KernelEnd || b.InitrdAddr+b.InitrdSize > 64<<20 || (64<<20)-(b.InitrdAddr+b.InitrdSize) >= 4096 {
		t.Errorf("initrd at %#x size %#x: want page-aligned, as high as fits in 64 MiB", b.InitrdAddr, b.InitrdSize)
	}
	zp, _ := mem.Slice(x86.ZeroPageAddr, 4096)
	le := binary.LittleEndian
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"boot_flag", uint64(le.Uint16(zp[offBootFlag:])), bootFlagMagic},
		{"header", uint64(le.Uint32(zp[offHeaderMagic:])), headerMagic},
		{"type_of_loader", uint64(zp[offTypeOfLoader]), 0xff},
		{"cmd_line_ptr", uint64(le.Uint32(zp[offCmdLinePtr:])), x86.CmdlineAddr},
		{"ramdisk_image", uint64(le.Uint32(zp[offRamdiskImage:])), b.InitrdAddr},
		{"ramdisk_size", uint64(le.Uint32(zp[offRamdiskSize:])), 10000},
		{"e820_entries", uint64(zp[zpE820Entries]), uint64(len(e820))},
		{"e820[2].addr", le.Uint64(zp[zpE820Table+40:]), 0x100000},
		{"e820[2].size", le.Uint64(zp[zpE820Table+48:]), 63 << 20},
		{"e820[2].type", uint64(le.Uint32(zp[zpE820Table+56:])), x86.E820RAM},
		{"e820[1].type", uint64(le.Uint32(zp[zpE820Table+36:])), x86.E820Reserved},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("zero page %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if k, _ := mem.Slice(x86.KernelAddr, 8192); k[0] != 0xcc || k[8191] != 0xcc {
		t.Error("kernel not at 1 MiB")
	}
	if r, _ := mem.Slice(b.InitrdAddr, 10000); !bytes.Equal(r, initrd) {
		t.Error("initrd content differs")
	}
	if c, _ := mem.Slice(x86.CmdlineAddr, 20); string(c) != "console=ttyS0 quiet\x00" {
		t.Errorf("cmdline = %q", c)
	}
}

func TestLoadLinuxRejects(t *testing.T) {
	mem, e820 := guestMem(t, 32<<20)
	kernel := fakeBzImage(8192, nil)
	long := string(bytes.Repeat([]byte{'a'}, 0x7ff))
	tests := []struct {
		name string
		l    Linux
	}{
		{"cmdline too long", Linux{Cmdline: long}},
		{"initrd too big", Linux{Initrd: bytes.NewReader(nil), InitrdSize: 20 << 20}},
		{"no RAM for the kernel", Linux{E820: e820[:2]}},
	}
	for _, tt := range tests {
		tt.l.Kernel, tt.l.KernelSize = bytes.NewReader(kernel), int64(len(kernel))
		if tt.l.E820 == nil {
			tt.l.E820 = e820
		}
		if _, err := LoadLinux(mem, tt.l); err == nil {
			t.Errorf("%s: LoadLinux succeeded", tt.name)
		}
	}
}

// The project's own kernel parses, when it has been built.
func TestGuestKernelHeader(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "bin", "guest", "vmlinuz")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("bin/guest/vmlinuz not built: run make kernel")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	img, err := ParseBzImage(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if img.Version < minVersion || img.InitSize == 0 {
		t.Errorf("guest kernel header %+v", img)
	}
}

func FuzzParseBzImage(f *testing.F) {
	f.Add(fakeBzImage(1024, nil))
	f.Add(fakeBzImage(1024, func(b []byte) { b[offSetupSects] = 0 }))
	f.Add(fakeBzImage(0, nil)[:0x270])
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := ParseBzImage(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if img.KernelOffset+img.KernelSize != int64(len(b)) || img.KernelSize <= 0 || int64(img.InitSize) < img.KernelSize {
			t.Errorf("accepted inconsistent image: %+v", img)
		}
		// Loading must not panic either, whatever the header says.
		mem, err := memory.FromRegions([]memory.Region{{GPA: 0, Host: make([]byte, 1<<20)}})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = LoadLinux(mem, Linux{Kernel: bytes.NewReader(b), KernelSize: int64(len(b)), E820: []x86.E820Entry{{Addr: 0, Size: 1 << 20, Type: x86.E820RAM}}})
	})
}
