package container

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestPrefetch(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"bin", "usr/bin", "sbin", "work"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) {
		if err := os.WriteFile(filepath.Join(root, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("bin/busybox")
	write("work/tool")
	// An absolute symlink resolves inside the root, not on the host.
	if err := os.Symlink("/bin/busybox", filepath.Join(root, "usr/bin/echo")); err != nil {
		t.Fatal(err)
	}
	// A FIFO must neither block the open nor be taken for the command.
	if err := unix.Mkfifo(filepath.Join(root, "sbin/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	write("bin/fifo")
	// A directory named like the command is skipped too.
	if err := os.Mkdir(filepath.Join(root, "sbin/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("bin/dir")

	// A device node in the command's place is never opened (as root: the
	// test binary may not create one otherwise).
	devNode := unix.Mknod(filepath.Join(root, "sbin/node"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) == nil
	write("bin/node")

	tests := []struct {
		name string
		proc *specs.Process
		want string
	}{
		{"through PATH and a symlink", &specs.Process{Args: []string{"echo"}, Env: []string{"PATH=/usr/bin:/bin"}}, "bin/busybox"},
		{"default PATH", &specs.Process{Args: []string{"busybox"}}, "bin/busybox"},
		{"FIFO skipped", &specs.Process{Args: []string{"fifo"}, Env: []string{"PATH=/sbin:/bin"}}, "bin/fifo"},
		{"directory skipped", &specs.Process{Args: []string{"dir"}, Env: []string{"PATH=/sbin:/bin"}}, "bin/dir"},
		{"device node skipped", &specs.Process{Args: []string{"node"}, Env: []string{"PATH=/sbin:/bin"}}, "bin/node"},
		{"absolute", &specs.Process{Args: []string{"/work/tool"}}, "work/tool"},
		{"relative to cwd", &specs.Process{Args: []string{"./tool"}, Cwd: "/work"}, "work/tool"},
		{"escape by .. stays inside", &specs.Process{Args: []string{"/../../bin/busybox"}}, "bin/busybox"},
		{"relative PATH entries ignored", &specs.Process{Args: []string{"tool"}, Env: []string{"PATH=work"}}, ""},
		{"missing", &specs.Process{Args: []string{"nothere"}}, ""},
		{"no args", &specs.Process{}, ""},
		{"no process", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "device node skipped" && !devNode {
				t.Skip("needs root to create a device node")
			}
			done := make(chan string, 1)
			go func() { done <- Prefetch(root, tt.proc) }()
			var got string
			select {
			case got = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Prefetch blocked")
			}
			want := ""
			if tt.want != "" {
				want = filepath.Join(root, tt.want)
			}
			if got != want {
				t.Errorf("Prefetch = %q, want %q", got, want)
			}
		})
	}
}
