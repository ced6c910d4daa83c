package nested

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmctl/vmctl/internal/initramfs"
	"github.com/vmctl/vmctl/internal/nested"
)

// prelude is prepended to scenarios that need its helpers.
const prelude = `
ms() { read -r u _ </proc/uptime; v=$(echo "$u" | tr -d .); v=${v#0}; v=${v#0}; echo $((v * 10)); }
# alive PID: the process runs (a zombie the shell has not reaped yet does not).
alive() { [ -r /proc/$1/stat ] && ! grep -q ') Z' /proc/$1/stat; }
`

// Paths inside L1 (relative to /nested, the scenarios' directory).
const (
	l1Kernel    = "guest/vmlinuz"
	l1Image     = "guest/initramfs.img"
	l1Release   = "guest/kernel.release"
	l1BusyboxL2 = "guest/l2-busybox.img"
	l1TripleBz  = "guest/triplefault.bzImage"
)

// vmmFiles are the files every vmctl-vmm scenario needs: the VMM and the
// project's guest kernel.
func vmmFiles(root string) []nested.File {
	return []nested.File{
		{Path: "nested/bin/vmctl-vmm", Source: filepath.Join(root, "bin/vmctl-vmm")},
		{Path: "nested/" + l1Kernel, Source: filepath.Join(root, "bin/guest/vmlinuz")},
	}
}

var vmmNeeds = []string{"bin/vmctl-vmm", "bin/guest/vmlinuz"}

// l2Init is /init of a busybox L2 guest used where the project's agent is
// not the point: it follows l2.mode= on the kernel command line.
//
//	reboot: print L2-REBOOTING and reboot at once
//	write:  write l2.token= to the start of /dev/vda, then reboot
//	read:   print L2-READ <first line of /dev/vda>, then reboot
//	clock:  sleep 1 s (needs working timer interrupts), print
//	        L2-CLOCK cpus=<online CPUs> uptime=<s>, then reboot
const l2Init = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
case "$(arg l2.mode)" in
reboot)
	echo L2-REBOOTING
	;;
write)
	echo "$(arg l2.token)" | dd of=/dev/vda conv=fsync 2>/dev/null && echo "L2-WROTE $(arg l2.token)"
	;;
read)
	echo "L2-READ $(head -c 64 /dev/vda | head -n 1)"
	;;
clock)
	sleep 1
	echo "L2-CLOCK cpus=$(nproc) uptime=$(cut -d ' ' -f 1 /proc/uptime)"
	;;
*)
	echo "L2-UNKNOWN-MODE"
	;;
esac
sync
reboot -f
`

// l2BusyboxImage writes the busybox L2 initramfs into tmp.
func l2BusyboxImage(tmp string) (string, error) {
	out := filepath.Join(tmp, "l2-busybox.img")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("busybox for L2: %w (install busybox-static)", err)
	}
	var buf bytes.Buffer
	img := initramfs.Image{
		Init:  []byte(l2Init),
		Dirs:  []string{"bin"},
		Files: []initramfs.File{{Path: "bin/busybox", Mode: 0o755, Data: bb}},
	}
	if err := initramfs.Write(&buf, img); err != nil {
		return "", err
	}
	return out, os.WriteFile(out, buf.Bytes(), 0o644)
}

// tripleFaultBzImage is the smallest file vmctl-vmm's loader accepts as a
// bzImage (boot protocol 2.15, 64-bit entry): its 64-bit entry loads an
// empty IDT and executes ud2. With no IDT, #UD escalates to a double and
// then a triple fault, which KVM reports as KVM_EXIT_SHUTDOWN.
func tripleFaultBzImage() []byte {
	const setupSects = 1
	kernelOff := (setupSects + 1) * 512
	b := make([]byte, kernelOff+0x1000)
	le := binary.LittleEndian
	b[0x1f1] = setupSects
	le.PutUint16(b[0x1fe:], 0xaa55)     // boot_flag
	b[0x200], b[0x201] = 0xeb, 0x62     // jmp short: header ends at 0x264
	le.PutUint32(b[0x202:], 0x53726448) // "HdrS"
	le.PutUint16(b[0x206:], 0x020f)     // protocol 2.15
	b[0x211] = 0x01                     // loadflags: LOADED_HIGH
	le.PutUint32(b[0x22c:], 0x7fffffff) // initrd_addr_max
	le.PutUint32(b[0x230:], 0x200000)   // kernel_alignment
	le.PutUint16(b[0x236:], 0x01)       // xloadflags: XLF_KERNEL_64
	le.PutUint32(b[0x238:], 255)        // cmdline_size
	le.PutUint64(b[0x258:], 0x1000000)  // pref_address
	le.PutUint32(b[0x260:], 0x100000)   // init_size
	code := []byte{
		0x0f, 0x01, 0x1d, 0x03, 0x00, 0x00, 0x00, // lidt [rip+3]: the zeroed descriptor below
		0x0f, 0x0b, // ud2
		0xf4, // hlt (not reached)
		// IDT descriptor: limit 0, base 0 (10 zero bytes, already zero)
	}
	copy(b[kernelOff+0x200:], code) // the 64-bit entry is at +0x200
	return b
}
