package nested

import (
	"os/exec"
	"slices"
	"testing"
)

func TestParseLdd(t *testing.T) {
	out := []byte(`	linux-vdso.so.1 (0x00007ffd0b7f2000)
	libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f0d0c4a0000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0d0c2bf000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0d0c4e0000)
`)
	got, err := parseLdd(out)
	want := []string{"/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseLdd = %q, %v, want %q", got, err, want)
	}
	if _, err := parseLdd([]byte("\tlibfoo.so.1 => not found\n")); err == nil {
		t.Error("parseLdd accepted a missing library")
	}
}

func TestHostExecutable(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("ldd is not installed")
	}
	files, err := HostExecutable("/bin/ls", "usr/bin/ls")
	if err != nil {
		t.Fatalf("HostExecutable: %v", err)
	}
	if files[0].Path != "usr/bin/ls" || len(files) < 3 {
		t.Errorf("HostExecutable(/bin/ls) = %+v, want ls, libc and the loader", files)
	}
}
