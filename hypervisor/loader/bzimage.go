// Package loader implements the Linux x86 boot protocol for the 64-bit
// entry (Documentation/arch/x86/boot.rst): it parses and validates a
// bzImage's setup header, loads the protected-mode kernel, the command line
// and an initrd into guest memory, and writes the zero page (struct
// boot_params) with the e820 map.
//
// Every field read from the image is checked before it is used: a
// malformed image yields an error, never a panic or an out-of-range write.
// It depends only on guest memory and the platform layout; it does not set
// vCPU registers (the machine does, from the returned entry point).
package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Setup header offsets inside the image and the zero page
// (struct setup_header, arch/x86/include/uapi/asm/bootparam.h).
const (
	hdrStart         = 0x1f1
	offSetupSects    = 0x1f1
	offBootFlag      = 0x1fe
	offJump          = 0x200
	offHeaderMagic   = 0x202
	offVersion       = 0x206
	offTypeOfLoader  = 0x210
	offLoadFlags     = 0x211
	offCode32Start   = 0x214
	offRamdiskImage  = 0x218
	offRamdiskSize   = 0x21c
	offCmdLinePtr    = 0x228
	offInitrdAddrMax = 0x22c
	offKernelAlign   = 0x230
	offRelocatable   = 0x234
	offXLoadFlags    = 0x236
	offCmdlineSize   = 0x238
	offPrefAddress   = 0x258
	offInitSize      = 0x260
	hdrMinEnd        = 0x264 // through init_size: the fields this loader reads

	bootFlagMagic = 0xaa55
	headerMagic   = 0x53726448 // "HdrS"
	minVersion    = 0x020c     // 2.12: xloadflags and the 64-bit entry are described
	loadedHigh    = 0x01       // loadflags: protected-mode code at 0x100000
	xlfKernel64   = 0x01       // xloadflags: has the 64-bit entry at +0x200
	entry64Offset = 0x200
	loaderTypeAny = 0xff // type_of_loader: "undefined" boot loader
)

// ErrNotBzImage is returned for a file without a valid setup header.
var ErrNotBzImage = errors.New("not a Linux bzImage")

// BzImage is a parsed and validated bzImage.
type BzImage struct {
	// Header is the setup header as found in the file, bytes 0x1f1 up to
	// its self-described end; it is copied into the zero page.
	Header []byte
	// Version is the boot protocol version (0x020f = 2.15).
	Version uint16
	// KernelOffset and KernelSize locate the protected-mode kernel in the file.
	KernelOffset, KernelSize int64
	// CmdlineSize is the longest command line the kernel accepts, without NUL.
	CmdlineSize uint32
	// InitrdAddrMax is the highest address the initrd's last byte may have.
	InitrdAddrMax uint32
	// PrefAddress is where the kernel wants to be decompressed; InitSize is
	// the memory it needs from there.
	PrefAddress uint64
	InitSize    uint32
	// KernelAlignment is the alignment a relocatable kernel needs.
	KernelAlignment uint32
	Relocatable     bool
}

// maxImageSize bounds what ParseBzImage accepts: no sane kernel is bigger,
// and the bound keeps size arithmetic far from overflow.
const maxImageSize = 1 << 30

// ParseBzImage reads and validates the setup header of the bzImage in r
// (size bytes long).
func ParseBzImage(r io.ReaderAt, size int64) (*BzImage, error) {
	if size < hdrMinEnd || size > maxImageSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrNotBzImage, size)
	}
	// The header is at most 0x1f1 + 0x7f + 2 bytes past its start; read
	// the first 1 KiB to cover it.
	buf := make([]byte, min(size, 1024))
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read kernel header: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(buf[offBootFlag:]) != bootFlagMagic || le.Uint32(buf[offHeaderMagic:]) != headerMagic {
		return nil, fmt.Errorf("%w: no boot flag 0xaa55 and \"HdrS\" magic", ErrNotBzImage)
	}
	img := &BzImage{Version: le.Uint16(buf[offVersion:])}
	if img.Version < minVersion {
		return nil, fmt.Errorf("kernel boot protocol %d.%02d is older than 2.12: rebuild a newer kernel",
			img.Version>>8, img.Version&0xff)
	}
	// The jump at 0x200 is "jmp short"; its displacement byte says where
	// the header ends.
	if buf[offJump] != 0xeb {
		return nil, fmt.Errorf("%w: no short jump at 0x200", ErrNotBzImage)
	}
	end := offJump + 2 + int(buf[offJump+1])
	if end < hdrMinEnd || end > len(buf) {
		return nil, fmt.Errorf("%w: setup header ends at %#x", ErrNotBzImage, end)
	}
	img.Header = append([]byte(nil), buf[hdrStart:end]...)

	if buf[offLoadFlags]&loadedHigh == 0 {
		return nil, fmt.Errorf("%w: kernel does not load high (loadflags %#x)", ErrNotBzImage, buf[offLoadFlags])
	}
	if le.Uint16(buf[offXLoadFlags:])&xlfKernel64 == 0 {
		return nil, fmt.Errorf("kernel has no 64-bit entry point (xloadflags %#x): build it for x86_64", le.Uint16(buf[offXLoadFlags:]))
	}
	setupSects := int64(buf[offSetupSects])
	if setupSects == 0 {
		setupSects = 4 // as the boot protocol says for old kernels
	}
	img.KernelOffset = (setupSects + 1) * 512
	img.KernelSize = size - img.KernelOffset
	if img.KernelSize <= entry64Offset {
		return nil, fmt.Errorf("%w: %d setup sectors leave no kernel in %d bytes", ErrNotBzImage, setupSects, size)
	}
	img.CmdlineSize = le.Uint32(buf[offCmdlineSize:])
	img.InitrdAddrMax = le.Uint32(buf[offInitrdAddrMax:])
	img.PrefAddress = le.Uint64(buf[offPrefAddress:])
	img.InitSize = le.Uint32(buf[offInitSize:])
	img.KernelAlignment = le.Uint32(buf[offKernelAlign:])
	img.Relocatable = buf[offRelocatable] != 0
	switch {
	case img.CmdlineSize == 0:
		return nil, fmt.Errorf("%w: cmdline_size is 0", ErrNotBzImage)
	case img.InitSize == 0 || int64(img.InitSize) < img.KernelSize:
		return nil, fmt.Errorf("%w: init_size %#x is smaller than the kernel (%#x)", ErrNotBzImage, img.InitSize, img.KernelSize)
	case img.PrefAddress >= 1<<32:
		return nil, fmt.Errorf("%w: preferred load address %#x is above 4 GiB", ErrNotBzImage, img.PrefAddress)
	case img.InitrdAddrMax < 1<<20:
		return nil, fmt.Errorf("%w: initrd_addr_max %#x is below 1 MiB", ErrNotBzImage, img.InitrdAddrMax)
	case img.Relocatable && (img.KernelAlignment == 0 || img.KernelAlignment&(img.KernelAlignment-1) != 0):
		return nil, fmt.Errorf("%w: kernel_alignment %#x is not a power of two", ErrNotBzImage, img.KernelAlignment)
	}
	return img, nil
}
