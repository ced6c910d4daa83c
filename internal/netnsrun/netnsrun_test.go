package netnsrun

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain plays both parts: the outer run re-executes the test binary in
// a namespace, the inner run checks it is there.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && !Inside() {
		code, err := Reexec("vmctl-netnsrun-test", Options{ResolvConf: "nameserver 198.51.100.53\n"})
		if err != nil {
			os.Stderr.WriteString("netnsrun: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestInsideOwnNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: network namespaces need root")
	}
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if outer := os.Getenv(OuterEnv); outer == "" || outer == own {
		t.Errorf("namespace %s, started from %q: want a new one", own, outer)
	}
	out, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatal(err)
	}
	if links := strings.Split(strings.TrimSpace(string(out)), "\n"); len(links) != 1 || !strings.Contains(links[0], " lo:") || !strings.Contains(links[0], "UP") {
		t.Errorf("links = %q, want lo alone, up", out)
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err != nil || !strings.Contains(string(out), os.Getenv(Env)) {
		t.Errorf("ip netns list = %q, %v; want %s", out, err, os.Getenv(Env))
	}
	if b, err := os.ReadFile("/etc/resolv.conf"); err != nil || string(b) != "nameserver 198.51.100.53\n" {
		t.Errorf("/etc/resolv.conf in the namespace = %q, %v; want the one Reexec was given", b, err)
	}
}
