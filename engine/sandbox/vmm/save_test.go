package vmm

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// A template VM gets its RAM file and the save pipe's write end, a
// restored one the RAM file, the pipe's read end and -wait-start: the
// descriptors are numbered after the files the command has already.
func TestSaveFiles(t *testing.T) {
	mem, err := os.CreateTemp(t.TempDir(), "ram")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, tc := range []struct {
		name string
		cfg  sandbox.Config
		want []string
	}{
		{"template", sandbox.Config{Template: true, Memory: mem}, []string{"-ram-fd", "4", "-save-state-fd", "5"}},
		{"restore", sandbox.Config{Restore: strings.NewReader("state"), Memory: mem}, []string{"-ram-fd", "4", "-restore-state-fd", "5", "-wait-start"}},
	} {
		cmd := exec.Command("vmctl-vmm")
		cmd.ExtraFiles = []*os.File{os.Stdin} // fd 3, as the jail's namespace descriptor
		kept, err := saveFiles(cmd, tc.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(cmd.Args[1:], tc.want) || len(cmd.ExtraFiles) != 3 || kept == nil {
			t.Errorf("%s: args %v with %d extra files, want %v with 3", tc.name, cmd.Args[1:], len(cmd.ExtraFiles), tc.want)
		}
		if cmd.ExtraFiles[1] == mem {
			t.Errorf("%s: the caller's memory file itself is handed over (it is closed after start)", tc.name)
		}
		kept.Close()
		for _, f := range cmd.ExtraFiles[1:] {
			f.Close()
		}
	}
	cmd := exec.Command("vmctl-vmm")
	if kept, err := saveFiles(cmd, sandbox.Config{}); kept != nil || err != nil || len(cmd.Args) != 1 {
		t.Errorf("an ordinary VM got %v, %v, args %v", kept, err, cmd.Args)
	}
	if _, err := saveFiles(exec.Command("vmctl-vmm"), sandbox.Config{Template: true}); err == nil {
		t.Error("a template without a memory file was accepted")
	}
}

func TestCanRestore(t *testing.T) {
	d := &Driver{binary: "/bin/true"}
	ok := sandbox.Config{MemoryMiB: 256, Disks: make([]sandbox.Disk, 2)}
	if err := d.CanRestore(ok); err != nil {
		t.Fatalf("CanRestore(%+v) = %v", ok, err)
	}
	for name, cfg := range map[string]sandbox.Config{
		"share": {MemoryMiB: 256, Shares: make([]sandbox.Share, 1)},
		"size":  {Disks: make([]sandbox.Disk, 1)},
	} {
		if err := d.CanRestore(cfg); err == nil {
			t.Errorf("CanRestore with a %s = nil, want why not", name)
		}
	}
	if a, b := d.SaveIdentity(), (&Driver{binary: "/bin/sh"}).SaveIdentity(); a == b {
		t.Error("two binaries give one save identity")
	}
}
