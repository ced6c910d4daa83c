package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeQEMU writes a script that answers -help as QEMU 7.2 does and counts
// how often it ran.
func fakeQEMU(t *testing.T, dir string) (bin, count string) {
	t.Helper()
	bin, count = filepath.Join(dir, "qemu-system-x86_64"), filepath.Join(dir, "count")
	script := "#!/bin/sh\necho x >> " + count + "\n" +
		"echo '-chroot dir       chroot to dir just before starting the VM'\n" +
		"echo '-runas user       change to user id user just before starting the VM'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, count
}

func runs(t *testing.T, count string) int {
	b, err := os.ReadFile(count)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "x")
}

func TestCachedDrop(t *testing.T) {
	dir := t.TempDir()
	bin, count := fakeQEMU(t, dir)
	file := filepath.Join(dir, "qemu-probe.json")
	forget := func() { dropCache = sync.Map{} }
	t.Cleanup(forget)

	if d := cachedDrop(bin, file); d != dropRunas {
		t.Fatalf("drop %d, want -runas", d)
	}
	cachedDrop(bin, file)
	if n := runs(t, count); n != 1 {
		t.Fatalf("QEMU asked %d times in one process, want 1", n)
	}
	// Another process: the file answers.
	forget()
	if d := cachedDrop(bin, file); d != dropRunas || runs(t, count) != 1 {
		t.Fatalf("drop %d after %d runs: the file did not answer", d, runs(t, count))
	}
	// Without a file, a new process asks again.
	forget()
	cachedDrop(bin, "")
	if n := runs(t, count); n != 2 {
		t.Fatalf("%d runs, want 2", n)
	}
	// Another binary at the path (an upgrade): asked again, even with the
	// file and this process's memory.
	os.Remove(bin)
	fakeQEMU(t, dir)
	if d := cachedDrop(bin, file); d != dropRunas || runs(t, count) != 3 {
		t.Fatalf("drop %d after %d runs: the new binary was not asked", d, runs(t, count))
	}
	// A damaged file is only a miss.
	forget()
	os.WriteFile(file, []byte("{not json"), 0o600)
	if d := cachedDrop(bin, file); d != dropRunas || runs(t, count) != 4 {
		t.Fatalf("drop %d after %d runs with a damaged file", d, runs(t, count))
	}
	// A binary that cannot be jailed is not remembered as such.
	none := filepath.Join(dir, "old-qemu")
	os.WriteFile(none, []byte("#!/bin/sh\necho x >> "+count+"\n"), 0o755)
	forget()
	cachedDrop(none, file)
	cachedDrop(none, file)
	if n := runs(t, count); n != 6 {
		t.Fatalf("%d runs: a failed probe was remembered", n)
	}
}
