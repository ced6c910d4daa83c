package kernelconfig

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// newcWriter writes a cpio archive in the "new ASCII" (newc) format, the only
// one the kernel's initramfs unpacker reads (init/initramfs.c). Written here
// rather than shelling out to cpio(1), which is not a build dependency.
type newcWriter struct {
	w   io.Writer
	ino int
	err error
}

// Mode bits of a newc header (same values as struct stat's st_mode).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
)

// add appends one entry; errors stick and are reported by close.
func (c *newcWriter) add(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&modeDir != 0 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize (with NUL), check.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(&b)
	b.Write(data)
	pad4(&b)
	_, c.err = c.w.Write(b.Bytes())
}

func (c *newcWriter) close() error {
	c.add("TRAILER!!!", 0, nil)
	return c.err
}

// pad4 pads to the 4-byte alignment newc requires after the name and the data.
// The header is 110 bytes, so alignment is relative to the entry start, which is
// itself aligned.
func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// writeInitramfs writes the test guest's initramfs: a static busybox and
// guest-init.sh as /init. The script creates the remaining directories.
func writeInitramfs(path string, compress bool) error {
	busybox, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if compress {
		zw = gzip.NewWriter(f)
		w = zw
	}
	c := &newcWriter{w: w}
	c.add("bin", modeDir|0o755, nil)
	c.add("bin/busybox", modeFile|0o755, busybox)
	c.add("init", modeFile|0o755, guestInit)
	if err := c.close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("compress initramfs: %w", err)
		}
	}
	return f.Close()
}

func TestNewcWriter(t *testing.T) {
	tests := []struct {
		name string
		mode uint32
		data string
		want string // whole entry, NULs shown as '.'
	}{
		{name: "init", mode: modeFile | 0o755, data: "hi",
			want: "070701" + "00000001" + "000081ED" + "00000000" + "00000000" + "00000001" + "00000000" +
				"00000002" + "00000000" + "00000000" + "00000000" + "00000000" + "00000005" + "00000000" +
				"init." + "." + "hi.."},
		{name: "d", mode: modeDir | 0o755, data: "",
			want: "070701" + "00000001" + "000041ED" + "00000000" + "00000000" + "00000002" + "00000000" +
				"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" +
				"d."}, // 110-byte header + 2 bytes of name: already aligned
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			c := &newcWriter{w: &b}
			c.add(tt.name, tt.mode, []byte(tt.data))
			if c.err != nil {
				t.Fatal(c.err)
			}
			got := strings.ReplaceAll(b.String(), "\x00", ".")
			if got != tt.want {
				t.Errorf("add(%q) wrote\n%q, want\n%q", tt.name, got, tt.want)
			}
			if b.Len()%4 != 0 {
				t.Errorf("entry length %d is not 4-byte aligned", b.Len())
			}
		})
	}
}
