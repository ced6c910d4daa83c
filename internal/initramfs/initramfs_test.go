package initramfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// member is what a test expects of one archive member.
type member struct {
	mode uint32
	rdev [2]uint32
	data string
}

// readBack parses an archive twice: with github.com/cavaliergopher/cpio (an
// independent reader, for names, modes and contents) and with rawRdev (for
// the device numbers that reader does not expose).
func readBack(t *testing.T, archive []byte) (order []string, got map[string]member) {
	t.Helper()
	got = map[string]member{}
	r := cpio.NewReader(bytes.NewReader(archive))
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("cpio reader: %v", err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", h.Name, err)
		}
		order = append(order, h.Name)
		got[h.Name] = member{mode: uint32(h.Mode), data: string(data)}
	}
	for name, rdev := range rawRdev(t, archive) {
		m := got[name]
		m.rdev = rdev
		got[name] = m
	}
	return order, got
}

// rawRdev walks the newc headers itself and returns rdevmajor/rdevminor by
// member name.
func rawRdev(t *testing.T, b []byte) map[string][2]uint32 {
	t.Helper()
	out := map[string][2]uint32{}
	field := func(h []byte, i int) uint32 {
		v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header field %d: %v", i, err)
		}
		return uint32(v)
	}
	for off := 0; ; {
		if off+newcHeaderLen > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		h := b[off : off+newcHeaderLen]
		size, nameSize := int(field(h, 6)), int(field(h, 11))
		name := string(b[off+newcHeaderLen : off+newcHeaderLen+nameSize-1])
		if name == trailerName {
			if rest := b[off+newcHeaderLen+nameSize:]; len(rest) > 3 {
				t.Fatalf("%d bytes after the trailer", len(rest))
			}
			return out
		}
		out[name] = [2]uint32{field(h, 9), field(h, 10)}
		off += newcHeaderLen + nameSize
		off += pad4(off)
		off += size
		off += pad4(off)
	}
}

func TestWriteLayout(t *testing.T) {
	initBin := []byte("\x7fELF fake init, odd length")
	var buf bytes.Buffer
	img := Image{
		Init:  initBin,
		Dirs:  []string{"/bin"},
		Files: []File{{Path: "bin/tool", Mode: 0o700, Data: []byte("abc")}},
	}
	if err := Write(&buf, img); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	order, got := readBack(t, buf.Bytes())
	want := map[string]member{
		"dev":         {mode: 0o040755},
		"dev/console": {mode: 0o020600, rdev: [2]uint32{5, 1}},
		"dev/null":    {mode: 0o020666, rdev: [2]uint32{1, 3}},
		"proc":        {mode: 0o040555},
		"sys":         {mode: 0o040555},
		"run":         {mode: 0o040755},
		"tmp":         {mode: 0o041777},
		"mnt":         {mode: 0o040755},
		"bin":         {mode: 0o040755},
		"bin/tool":    {mode: 0o100700, data: "abc"},
		"init":        {mode: 0o100755, data: string(initBin)},
	}
	if len(got) != len(want) {
		t.Errorf("archive has %d members %v, want %d", len(got), order, len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("member %s missing", name)
			continue
		}
		if g.mode != w.mode || g.rdev != w.rdev || g.data != w.data {
			t.Errorf("member %s = mode %o rdev %v data %q, want mode %o rdev %v data %q",
				name, g.mode, g.rdev, g.data, w.mode, w.rdev, w.data)
		}
	}
	// Parents must come before children or the kernel drops the child.
	if strings.Join(order[:3], ",") != "dev,dev/console,dev/null" {
		t.Errorf("order = %v, want dev before its nodes", order)
	}
}

func TestWriteDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	img := Image{Init: bytes.Repeat([]byte{1, 2, 3}, 1000)}
	if err := Write(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of the same image differ")
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name string
		img  Image
		want string
	}{
		{"empty init", Image{}, "init binary is empty"},
		{"escaping dir", Image{Init: []byte{1}, Dirs: []string{"../x"}}, "invalid path"},
		{"root dir", Image{Init: []byte{1}, Dirs: []string{"/"}}, "invalid path"},
		{"duplicate", Image{Init: []byte{1}, Dirs: []string{"dev"}}, "appears twice"},
		{"init twice", Image{Init: []byte{1}, Files: []File{{Path: "init", Mode: 0o755}}}, "appears twice"},
		{"missing parent", Image{Init: []byte{1}, Files: []File{{Path: "bin/sh", Mode: 0o755}}}, "parent directory bin"},
		{"not regular", Image{Init: []byte{1}, Files: []File{{Path: "x", Mode: os.ModeSymlink}}}, "only regular files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Write(io.Discard, tt.img)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Write() error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	initPath := filepath.Join(dir, "agent")
	if err := os.WriteFile(initPath, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "guest", "initramfs.img")
	if err := WriteFile(out, initPath); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, got := readBack(t, b); got["init"].data != "binary" {
		t.Errorf("init = %q, want %q", got["init"].data, "binary")
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Errorf("output dir has %d entries, want only the image (temp file left behind?)", len(entries))
	}
	if err := WriteFile(out, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "read init binary") {
		t.Errorf("WriteFile(missing init) error = %v", err)
	}
}
