package nested

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostExecutable returns the files that let a dynamically linked host
// executable run in L1: the executable at L1 path dst, and every shared
// library ldd(1) lists, each at the path ldd resolved it to (so the dynamic
// loader finds them in its default directories). L1 has no ld.so.cache;
// libraries loaded with dlopen are not found by ldd and not included.
func HostExecutable(src, dst string) ([]File, error) {
	out, err := exec.Command("ldd", src).Output()
	if err != nil {
		return nil, fmt.Errorf("nested: ldd %s: %w", src, err)
	}
	libs, err := parseLdd(out)
	if err != nil {
		return nil, fmt.Errorf("nested: ldd %s: %w", src, err)
	}
	files := []File{{Path: dst, Source: src, Mode: 0o755, Dynamic: true}}
	for _, l := range libs {
		files = append(files, File{Path: l, Source: l, Mode: 0o755, Dynamic: true})
	}
	return files, nil
}

// parseLdd extracts library paths from ldd output lines such as
//
//	libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)
//	/lib64/ld-linux-x86-64.so.2 (0x...)
//	linux-vdso.so.1 (0x...)          (no file: skipped)
func parseLdd(out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "=> not found") {
			return nil, fmt.Errorf("missing library: %s", line)
		}
		if _, after, ok := strings.Cut(line, "=> "); ok {
			line = after
		}
		p, _, _ := strings.Cut(line, " (")
		if filepath.IsAbs(p) {
			libs = append(libs, filepath.Clean(p))
		}
	}
	return libs, sc.Err()
}

// QEMUFirmware lists the firmware files QEMU's microvm machine loads
// (qboot as its BIOS, the option ROMs for -kernel), from the host's
// /usr/share/qemu, at the same paths in L1.
func QEMUFirmware() []File {
	const dir = "/usr/share/qemu/"
	var files []File
	for _, f := range []string{"qboot.rom", "bios-microvm.bin", "linuxboot_dma.bin", "linuxboot.bin", "pvh.bin", "kvmvapic.bin"} {
		// bios-microvm.bin is a symlink to qboot.rom on Debian; File copies
		// contents, and QEMU may ask for either name.
		files = append(files, File{Path: dir + f, Source: dir + f, Mode: 0o644})
	}
	return files
}
