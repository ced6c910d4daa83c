package vmtest

import (
	"bufio"
	"fmt"
	"os"

	"github.com/cavaliergopher/cpio"
)

// writeInitramfs writes an uncompressed newc archive: the usual empty
// directories, /dev/console and /init = the agent binary.
func writeInitramfs(path, agentBinary string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	w := cpio.NewWriter(bw)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp"} {
		if err := w.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755, Links: 2}); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// The library cannot set a device number, so /dev/console (char 5:1,
	// which the kernel opens as init's stdin/stdout/stderr) is written by
	// hand in the same newc format.
	if err := writeCharDev(bw, "dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	agent, err := os.ReadFile(agentBinary)
	if err != nil {
		return err
	}
	if err := w.WriteHeader(&cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: int64(len(agent))}); err != nil {
		return err
	}
	if _, err := w.Write(agent); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// writeCharDev writes one newc ("070701") entry for a character device:
// 13 eight-digit hex fields, then the NUL-terminated name padded to 4 bytes.
func writeCharDev(w *bufio.Writer, name string, perm, major, minor uint32) error {
	const sIFCHR = 0o020000
	fields := []uint32{
		0x7fff0001,    // ino, clear of the writer's sequential numbers
		sIFCHR | perm, // mode
		0, 0,          // uid, gid
		1,    // nlink
		0,    // mtime
		0,    // filesize
		0, 0, // dev major, minor
		major, minor, // rdev major, minor
		uint32(len(name) + 1), // namesize
		0,                     // check
	}
	hdr := "070701"
	for _, v := range fields {
		hdr += fmt.Sprintf("%08x", v)
	}
	n := len(hdr) + len(name) + 1
	pad := (4 - n%4) % 4
	_, err := w.WriteString(hdr + name + "\x00" + string(make([]byte, pad)))
	return err
}
