package loader

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vmctl/vmctl/hypervisor/arch/x86"
	"github.com/vmctl/vmctl/hypervisor/memory"
)

// Linux describes what to boot.
type Linux struct {
	// Kernel is a bzImage of KernelSize bytes.
	Kernel     io.ReaderAt
	KernelSize int64
	// Initrd (optional) is InitrdSize bytes.
	Initrd     io.ReaderAt
	InitrdSize int64
	Cmdline    string
	// E820 is the guest's memory map (x86.E820).
	E820 []x86.E820Entry
}

// Boot is where the loaded kernel starts.
type Boot struct {
	// Entry is the 64-bit entry point; RSI must hold ZeroPage.
	Entry    uint64
	ZeroPage uint64
	// KernelEnd is the first byte above the kernel's decompression room.
	KernelEnd uint64
	// InitrdAddr and InitrdSize are where the initrd went (0 if none).
	InitrdAddr, InitrdSize uint64
}

// struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h).
const (
	zpExtRamdiskImage = 0x0c0
	zpExtRamdiskSize  = 0x0c4
	zpExtCmdLinePtr   = 0x0c8
	zpE820Entries     = 0x1e8
	zpE820Table       = 0x2d0
	zpE820Max         = 128 // E820_MAX_ENTRIES_ZEROPAGE
	e820EntrySize     = 20
	zeroPageSize      = 4096
	pageSize          = 4096
)

// LoadLinux loads the kernel, command line and initrd described by l into
// mem and writes the zero page. The kernel goes to x86.KernelAddr; the
// initrd as high as the kernel and low RAM allow.
func LoadLinux(mem memory.Memory, l Linux) (Boot, error) {
	img, err := ParseBzImage(l.Kernel, l.KernelSize)
	if err != nil {
		return Boot{}, err
	}
	lowEnd := lowRAMEnd(l.E820)
	// The decompressor works from max(load address, pref_address) over
	// init_size bytes (arch/x86/boot/compressed/head_64.S).
	b := Boot{Entry: x86.KernelAddr + entry64Offset, ZeroPage: x86.ZeroPageAddr}
	b.KernelEnd = max(uint64(x86.KernelAddr), img.PrefAddress) + uint64(img.InitSize)
	if b.KernelEnd > lowEnd {
		return Boot{}, fmt.Errorf("kernel needs RAM up to %d MiB, the guest has %d MiB below 3 GiB: give the VM more memory",
			b.KernelEnd>>20, lowEnd>>20)
	}
	dst, err := mem.Slice(x86.KernelAddr, uint64(img.KernelSize))
	if err != nil {
		return Boot{}, fmt.Errorf("place kernel: %w", err)
	}
	if _, err := l.Kernel.ReadAt(dst, img.KernelOffset); err != nil && err != io.EOF {
		return Boot{}, fmt.Errorf("read kernel: %w", err)
	}

	if uint64(len(l.Cmdline)) >= uint64(img.CmdlineSize) || len(l.Cmdline) >= x86.CmdlineMax {
		return Boot{}, fmt.Errorf("kernel command line is %d bytes, the kernel accepts at most %d",
			len(l.Cmdline), min(img.CmdlineSize, x86.CmdlineMax-1))
	}
	if err := mem.WriteAt(append([]byte(l.Cmdline), 0), x86.CmdlineAddr); err != nil {
		return Boot{}, fmt.Errorf("place command line: %w", err)
	}

	if l.Initrd != nil && l.InitrdSize > 0 {
		b.InitrdAddr, err = placeInitrd(img, lowEnd, b.KernelEnd, uint64(l.InitrdSize))
		if err != nil {
			return Boot{}, err
		}
		b.InitrdSize = uint64(l.InitrdSize)
		dst, err := mem.Slice(b.InitrdAddr, b.InitrdSize)
		if err != nil {
			return Boot{}, fmt.Errorf("place initrd: %w", err)
		}
		if _, err := l.Initrd.ReadAt(dst, 0); err != nil && err != io.EOF {
			return Boot{}, fmt.Errorf("read initrd: %w", err)
		}
	}

	zp, err := zeroPage(img, b, l.E820)
	if err != nil {
		return Boot{}, err
	}
	if err := mem.WriteAt(zp, x86.ZeroPageAddr); err != nil {
		return Boot{}, fmt.Errorf("write zero page: %w", err)
	}
	return b, nil
}

// placeInitrd picks the highest page-aligned address for size bytes that
// ends within both low RAM and the kernel's initrd_addr_max, above the
// kernel.
func placeInitrd(img *BzImage, lowEnd, kernelEnd, size uint64) (uint64, error) {
	limit := min(lowEnd, uint64(img.InitrdAddrMax)+1)
	if size > limit || limit-size < kernelEnd {
		return 0, fmt.Errorf("initrd of %d MiB does not fit between the kernel (%d MiB) and %d MiB: give the VM more memory",
			size>>20, kernelEnd>>20, limit>>20)
	}
	addr := (limit - size) &^ (pageSize - 1)
	if addr < kernelEnd {
		return 0, fmt.Errorf("initrd of %d MiB does not fit above the kernel: give the VM more memory", size>>20)
	}
	return addr, nil
}

// lowRAMEnd is the end of the highest RAM range below 4 GiB.
func lowRAMEnd(e820 []x86.E820Entry) uint64 {
	var end uint64
	for _, e := range e820 {
		if e.Type == x86.E820RAM && e.Addr+e.Size <= 1<<32 {
			end = max(end, e.Addr+e.Size)
		}
	}
	return end
}

// zeroPage builds struct boot_params: the image's setup header with the
// loader's fields filled in, and the e820 map.
func zeroPage(img *BzImage, b Boot, e820 []x86.E820Entry) ([]byte, error) {
	if len(e820) > zpE820Max {
		return nil, fmt.Errorf("e820 map has %d entries, the zero page holds %d", len(e820), zpE820Max)
	}
	le := binary.LittleEndian
	zp := make([]byte, zeroPageSize)
	copy(zp[hdrStart:], img.Header)
	zp[offTypeOfLoader] = loaderTypeAny
	le.PutUint32(zp[offCode32Start:], x86.KernelAddr)
	le.PutUint32(zp[offCmdLinePtr:], x86.CmdlineAddr)
	le.PutUint32(zp[zpExtCmdLinePtr:], 0)
	le.PutUint32(zp[offRamdiskImage:], uint32(b.InitrdAddr))
	le.PutUint32(zp[offRamdiskSize:], uint32(b.InitrdSize))
	le.PutUint32(zp[zpExtRamdiskImage:], uint32(b.InitrdAddr>>32))
	le.PutUint32(zp[zpExtRamdiskSize:], uint32(b.InitrdSize>>32))
	zp[zpE820Entries] = byte(len(e820))
	for i, e := range e820 {
		off := zpE820Table + i*e820EntrySize
		le.PutUint64(zp[off:], e.Addr)
		le.PutUint64(zp[off+8:], e.Size)
		le.PutUint32(zp[off+16:], e.Type)
	}
	return zp, nil
}
