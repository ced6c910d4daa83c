package virtiofsd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mountOf returns the options of the mount at dir as process pid sees it,
// and whether there is one.
func mountOf(pid int, dir string) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return "", false
	}
	found, opts := false, ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == dir {
			found, opts = true, f[5] // the last mount on dir is the visible one
		}
	}
	return opts, found
}

// A read-only share is served from a read-only bind mount in the daemon's
// own mount namespace: the host kernel refuses the daemon's writes. A
// read-write share is served from the directory itself. Neither mount is
// seen outside the daemon.
func TestReadOnlyShareIsAReadOnlyMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("virtiofsd and mount namespaces need root")
	}
	bin, err := Binary()
	if err != nil {
		t.Skip(err)
	}
	for _, ro := range []bool{true, false} {
		dir := t.TempDir()
		state := t.TempDir()
		d, err := Start(bin, Config{Dir: dir, ReadOnly: ro, Socket: SocketName(state, 0), Log: filepath.Join(state, "log")})
		if err != nil {
			t.Fatal(err)
		}
		pid := d.cmd.Process.Pid
		// Wait until the wrapper has exec'd the daemon.
		deadline := time.Now().Add(10 * time.Second)
		for {
			exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
			if filepath.Base(exe) == filepath.Base(bin) {
				break
			}
			if gone, status := d.Exited(); gone || time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(state, "log"))
				t.Fatalf("virtiofsd did not start (exited %v %s): %s", gone, status, log)
			}
			time.Sleep(10 * time.Millisecond)
		}
		opts, found := mountOf(pid, dir)
		switch {
		case ro && (!found || !strings.HasPrefix(opts, "ro")):
			t.Errorf("read-only share: the daemon sees %s mounted %q (found %v), want a read-only mount", dir, opts, found)
		case !ro && found:
			t.Errorf("read-write share: the daemon sees a mount on %s (%q)", dir, opts)
		}
		if _, found := mountOf(os.Getpid(), dir); found {
			t.Errorf("the share's mount is visible outside the daemon")
		}
		if _, err := os.Stat(SocketName(state, 0)); err != nil {
			t.Errorf("socket: %v", err)
		}
		d.Stop()
		if gone, _ := d.Exited(); !gone {
			t.Error("Stop left the daemon running")
		}
	}
}
