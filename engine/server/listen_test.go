package server

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A unix socket is 0660, owned by --group; a tcp:// host off loopback is
// refused without TLS.
func TestListen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown of the socket needs root")
	}
	g, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skip("no group daemon on this machine")
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(Host{Network: "unix", Address: sock}, ListenOptions{Group: "daemon"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if gid, _ := strconv.Atoi(g.Gid); int(st.Gid) != gid || st.Mode&0o777 != 0o660 {
		t.Errorf("socket gid %d mode %o, want %s and 0660", st.Gid, st.Mode&0o777, g.Gid)
	}
	if _, err := Listen(Host{Network: "unix", Address: filepath.Join(t.TempDir(), "b.sock")}, ListenOptions{Group: "no-such-group-x"}); err == nil {
		t.Error("an unknown group was accepted")
	}
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:2375"} {
		_, err := Listen(Host{Network: "tcp", Address: addr}, ListenOptions{})
		if err == nil || !strings.Contains(err.Error(), "only over TLS") {
			t.Errorf("tcp %s without TLS: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		l, err := Listen(Host{Network: "tcp", Address: addr}, ListenOptions{})
		if err != nil {
			t.Errorf("tcp %s: %v", addr, err)
			continue
		}
		l.Close()
	}
}
