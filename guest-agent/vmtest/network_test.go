package vmtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmctl/vmctl/api/agent/contract"
	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

// ipIn runs ip with args and fails the test on an error.
func ipIn(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a named network namespace that the test removes at its
// end. Everything of the test's network lives in it: nothing it sends can
// reach another network.
func newNetns(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip (iproute2): %v", err)
	}
	name := fmt.Sprintf("vmt-%d-%x", os.Getpid(), rand.Uint32())
	ipIn(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// inNetns runs f on an OS thread of its own that has joined the named
// namespace: sockets f opens live there. The thread is never unlocked, so
// it ends with f's goroutine instead of serving others from the namespace.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// TestNetworkInVM gives the guest a NIC on a tap in a namespace of the
// test's, has the agent configure it, and runs a container in the
// guest's network: the host side pings the guest and connects to a server
// in the container, the container reaches a network behind its default
// route and sees its interface, routes and /etc files.
func TestNetworkInVM(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newNetns(t)
	const (
		tap      = "vmt0"
		mac      = "02:42:0a:58:00:02"
		guestIP  = "10.88.0.2"
		hostIP   = "10.88.0.1"
		guestIP6 = "fd00:88::2"
		hostIP6  = "fd00:88::1"
		// beyond is on the host side, reached through the default route.
		beyond = "10.99.0.1"
	)
	ipIn(t, "-n", ns, "link", "set", "lo", "up")
	ipIn(t, "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
	ipIn(t, "-n", ns, "addr", "add", hostIP+"/24", "dev", tap)
	ipIn(t, "-n", ns, "addr", "add", hostIP6+"/64", "dev", tap, "nodad")
	ipIn(t, "-n", ns, "link", "set", tap, "mtu", "1400", "up")
	ipIn(t, "-n", ns, "link", "add", "vmtb0", "type", "veth", "peer", "name", "vmtb1")
	ipIn(t, "-n", ns, "addr", "add", beyond+"/24", "dev", "vmtb0")
	ipIn(t, "-n", ns, "link", "set", "vmtb0", "up")

	root := testenv.BusyboxRoot(t, "")
	for _, a := range []string{"ip", "nc", "ping"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	image := testenv.Ext4Image(t, root, "16M")
	writable := testenv.Ext4Image(t, "", "64M")
	g := boot(t, bootOpts{
		disks:   []disk{{image, "img0", true}, {writable, "rw0", false}},
		connect: true, netns: ns,
		nics: []nic{{tap: tap, mac: mac, mtu: 1400}},
	})

	eth0 := &agent.NetworkInterface{Mac: mac, Name: contract.InterfaceName(0), Addresses: []string{guestIP + "/24", guestIP6 + "/64"}, Mtu: 1400}
	routes := []*agent.NetworkRoute{{Gateway: hostIP}}
	for name, req := range map[string]*agent.ConfigureNetworkRequest{
		"absent MAC": {Interfaces: []*agent.NetworkInterface{eth0, {Mac: "02:42:0a:58:00:77", Name: "eth1"}}, Routes: routes},
		"gateway unreachable": {Interfaces: []*agent.NetworkInterface{eth0},
			Routes: []*agent.NetworkRoute{{Gateway: "10.77.0.1"}}},
		"malformed address": {Interfaces: []*agent.NetworkInterface{{Mac: mac, Name: "eth0", Addresses: []string{"10.88.0.2/33"}}}},
	} {
		_, err := g.agent.ConfigureNetwork(ctxT(t), req)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
			t.Errorf("ConfigureNetwork with %s = %v, want InvalidArgument", name, err)
		}
	}
	// The failures changed nothing: the guest does not answer yet.
	if out, err := exec.Command("ip", "netns", "exec", ns, testenv.Busybox, "ping", "-c", "1", "-W", "2", guestIP).CombinedOutput(); err == nil {
		t.Errorf("the guest answered ping before its network was configured: %s", out)
	}
	// That ping left a failed neighbour entry, which would drop the host's
	// first answers to the guest until it is resolved again.
	ipIn(t, "-n", ns, "neigh", "flush", "dev", tap)
	req := &agent.ConfigureNetworkRequest{Interfaces: []*agent.NetworkInterface{eth0}, Routes: routes}
	for i := 0; i < 2; i++ { // the second time, as a host retrying would
		if _, err := g.agent.ConfigureNetwork(ctxT(t), req); err != nil {
			t.Fatalf("ConfigureNetwork (call %d): %v", i+1, err)
		}
	}

	hosts := "127.0.0.1\tlocalhost\n" + guestIP + "\tweb\n"
	resolv := "nameserver " + hostIP + "\n"
	spec := dockerSpec("web", "sh", "-c", `ip -o addr show dev eth0; ip route; cat /sys/class/net/eth0/mtu;
		cat /etc/hosts /etc/resolv.conf /etc/hostname
		for i in 1 2 3 4 5; do ping -c 1 -W 3 `+beyond+` >/dev/null && { echo reached-beyond; break; }; done
		nc -l -p 8080 -e echo hello-from-the-container`)
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.agent.CreateContainer(ctxT(t), &agent.CreateContainerRequest{ContainerId: "web", OciSpec: b, Storages: containerDisks,
		Hosts: hosts, ResolvConf: resolv, HostnameFile: "web\n", ShareGuestNetwork: true}); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := g.agent.StartContainer(ctxT(t), &agent.ContainerRequest{ContainerId: "web"}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	var out, errOut string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out = g.readAll(t, "web", "", false) }()
	go func() { defer wg.Done(); errOut = g.readAll(t, "web", "", true) }()

	for _, target := range []string{guestIP, guestIP6} {
		var pingOut []byte
		var err error
		for try := 0; try < 3; try++ { // the first packet may wait for neighbour discovery
			if pingOut, err = exec.Command("ip", "netns", "exec", ns, testenv.Busybox, "ping", "-c", "1", "-W", "5", target).CombinedOutput(); err == nil {
				break
			}
		}
		if err != nil {
			t.Errorf("ping %s from the host side: %v: %s", target, err, pingOut)
		}
	}
	var reply string
	err = inNetns(ns, func() error {
		deadline := time.Now().Add(60 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(guestIP, "8080"), 5*time.Second)
			if err == nil {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				reply, err = bufio.NewReader(c).ReadString('\n')
				return err
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(200 * time.Millisecond) // nc is not listening yet
		}
	})
	if err != nil || reply != "hello-from-the-container\n" {
		t.Errorf("TCP from the host side to the container = %q, %v", reply, err)
	}
	wait, err := g.agent.WaitProcess(ctxT(t), &agent.ProcessRequest{ContainerId: "web"})
	wg.Wait()
	if err != nil || wait.ExitStatus != 0 {
		t.Errorf("container exit = %+v, %v; output:\n%s", wait, err, out)
	}
	t.Logf("container output:\n%s\nstderr:\n%s", out, errOut)
	for _, want := range []string{
		"inet " + guestIP + "/24", "inet6 " + guestIP6 + "/64", "default via " + hostIP + " dev eth0",
		"\n1400\n", hosts + resolv + "web\n", "reached-beyond\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("container output lacks %q:\n%s", want, out)
		}
	}
	g.remove(t, "web")
}
