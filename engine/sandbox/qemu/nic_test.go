package qemu

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// nicNetnsEnv names the network namespace TestNICsReachGuest runs its VM
// in, when the test binary runs again inside it.
const nicNetnsEnv = "VMCTL_QEMU_TEST_NETNS"

// TestNICsReachGuest boots a VM with two NICs on taps and checks that the
// guest has them with the MACs and MTUs the config gave. QEMU opens a tap
// by name in its own network namespace, which is the engine's; so the test
// makes a namespace of its own with the taps in it and runs again inside
// it (ip netns exec): no frame the guest sends can leave that namespace.
func TestNICsReachGuest(t *testing.T) {
	d, cfg := needVM(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and taps")
	}
	nics := []sandbox.NIC{
		{Tap: "vmq0", MAC: net.HardwareAddr{0x02, 0x42, 0x0a, 0x59, 0, 2}, MTU: 1400},
		{Tap: "vmq1", MAC: net.HardwareAddr{0x02, 0x42, 0x0a, 0x59, 0, 3}},
	}
	if os.Getenv(nicNetnsEnv) == "" {
		ns := fmt.Sprintf("vmq-%d-%x", os.Getpid(), rand.Uint32())
		ip := func(args ...string) {
			t.Helper()
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		ip("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		for _, n := range nics {
			ip("-n", ns, "tuntap", "add", "dev", n.Tap, "mode", "tap", "vnet_hdr")
			ip("-n", ns, "link", "set", n.Tap, "up")
		}
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNICsReachGuest$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), nicNetnsEnv+"="+ns)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestNICsReachGuest") {
			t.Fatalf("the test inside namespace %s: %v\n%s", ns, err, out)
		}
		t.Logf("inside namespace %s:\n%s", ns, out)
		return
	}

	cfg.NICs = nics
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctxTimeout(t, 60*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, "nics\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	// The guest may name them in another order than the config's (the
	// agent finds them by MAC); the set is what counts.
	got := strings.Fields(line)
	slices.Sort(got)
	t.Logf("guest NICs (mac:mtu): %q", got)
	want := []string{"02:42:0a:59:00:02:1400", "02:42:0a:59:00:03:1500"}
	if !slices.Equal(got, want) {
		t.Errorf("guest NICs (mac:mtu) = %q, want %q", got, want)
	}
}
