package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

// taps lists the engine's tap devices in the named namespace ("" for the
// tests' own).
func taps(t *testing.T, ns string) []string {
	t.Helper()
	args := []string{"-o", "link", "show", "type", "tun"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "vt") {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return names
}

// vmctlRules counts the rules of vmctl's nftables table (inet vmctl) in
// the namespace ns; 0 when the table does not exist.
func vmctlRules(t *testing.T, ns string) int {
	t.Helper()
	n := 0
	for _, c := range vmctlChainRules(t, ns) {
		n += c
	}
	return n
}

// vmctlChainRules counts the rules of each chain of vmctl's nftables table
// in the namespace ns.
func vmctlChainRules(t *testing.T, ns string) map[string]int {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, tb := range tables {
		if tb.Name != "vmctl" {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chains {
			if ch.Table.Name != "vmctl" {
				continue
			}
			rules, err := c.GetRules(tb, ch)
			if err != nil {
				t.Fatal(err)
			}
			n[ch.Name] += len(rules)
		}
	}
	return n
}

// A container on the default network, run in-process: eth0 with an address
// of 172.30.0.0/16, a default route through the gateway, the daemon's DNS
// on the gateway, its own name in /etc/hosts; TCP, UDP and DNS to a host
// beyond the bridge through NAT; --network none has only lo; nothing is
// left after --rm.
func TestNetworkDefault(t *testing.T) {
	e := e2e(t)
	newOutside(t, "")
	before := e.containerCount(t)
	script := strings.Join([]string{
		"ip -4 -o addr show eth0",
		"ip route",
		"echo ---; cat /etc/resolv.conf",
		"echo ---; cat /etc/hosts",
		"echo ---; cat /etc/hostname; cat /proc/sys/kernel/domainname",
		"echo ---; wget -q -O- http://" + outsideHost + "/",
		"echo ---; nslookup " + outsideName,
		// UDP straight to the outside host, through NAT.
		"echo ---; nslookup " + outsideName + " " + outsideHost,
	}, "; ")
	r := e.mustRun(t, 0, "run", "--rm", "--hostname", "web1", "--domainname", "example.test", "busybox", "sh", "-c", script)
	parts := strings.Split(r.stdout, "---\n")
	if len(parts) != 7 {
		t.Fatalf("output in %d parts, want 7:\n%s\nstderr: %s", len(parts), r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`eth0\s+inet 172\.30\.\d+\.\d+/16 `).MatchString(parts[0]) || !strings.Contains(parts[0], "default via 172.30.0.1 dev eth0") {
		t.Errorf("address and routes:\n%s\nwant eth0 in 172.30.0.0/16 and a default route via 172.30.0.1", parts[0])
	}
	if !strings.Contains(parts[1], "nameserver 172.30.0.1") {
		t.Errorf("resolv.conf:\n%s\nwant the gateway as nameserver", parts[1])
	}
	if !regexp.MustCompile(`(?m)^172\.30\.\d+\.\d+\s+web1\.example\.test web1$`).MatchString(parts[2]) || !strings.Contains(parts[2], "localhost") {
		t.Errorf("hosts:\n%s\nwant localhost and web1.example.test web1 at the container's address", parts[2])
	}
	if parts[3] != "web1\nexample.test\n" {
		t.Errorf("hostname file and domain name %q, want web1 and example.test (--domainname)", parts[3])
	}
	if parts[4] != outsidePage {
		t.Errorf("HTTP to the outside through NAT: %q, want %q", parts[4], outsidePage)
	}
	if !strings.Contains(parts[5], "Address: "+outsideHost) {
		t.Errorf("DNS of %s through the gateway:\n%s", outsideName, parts[5])
	}
	if !strings.Contains(parts[6], "Address: "+outsideHost) || !strings.Contains(parts[6], "Server:\t\t"+outsideHost) {
		t.Errorf("DNS over UDP to the outside host through NAT:\n%s", parts[6])
	}

	r = e.mustRun(t, 0, "run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
	if links := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(links) != 1 || !strings.Contains(links[0], " lo:") {
		t.Errorf("--network none links:\n%s\nwant lo alone", r.stdout)
	}
	e.checkClean(t, before)
	if left := taps(t, ""); len(left) > 0 {
		t.Errorf("taps left after --rm runs: %v", left)
	}
}

// fetch is a shell command printing the page at url, or failing within
// secs seconds. wget -T crashes Debian's static busybox, so timeout(1)
// bounds it; "|| exit" keeps sh from exec'ing the last command in its own
// place: as the container's PID 1, wget would ignore timeout's signal.
func fetch(url string, secs int) string {
	return fmt.Sprintf("timeout %d wget -q -O- %s || exit 1", secs, url)
}

// One daemon (in a namespace of its own, with its own outside host):
// published ports, user networks with DNS by name, isolation, internal
// networks, the docker CLI's network commands, bad input, and no leaks.
func TestNetworking(t *testing.T) {
	d := startDaemon(t)
	o := newOutside(t, d.netns)
	var containers []string
	t.Cleanup(func() {
		if len(containers) > 0 {
			d.vmctl(t, "", append([]string{"rm", "-f"}, containers...)...)
		}
		d.vmctl(t, "", "network", "rm", "n1", "n2", "n3")
	})
	run := func(t *testing.T, name string, args ...string) {
		t.Helper()
		containers = append(containers, name)
		d.mustVmctl(t, 0, "", append([]string{"run", "-d", "--name", name}, args...)...)
	}
	serve := func(page string) []string {
		return []string{"busybox", "sh", "-c", "mkdir -p /www && echo " + page + " > /www/index.html && exec httpd -f -p 80 -h /www"}
	}
	waitPage := func(t *testing.T, ns, hostport, want string) {
		t.Helper()
		waitFor(t, func() bool { body, err := get(t, ns, hostport); return err == nil && body == want }, "a page from "+hostport)
	}

	t.Run("published ports", func(t *testing.T) {
		archive, err := udpEchoImage()
		must(t, err)
		d.mustVmctl(t, 0, "", "load", "-i", archive)
		run(t, "web", "-p", "8080:80", "-p", "127.0.0.1:8081:80", "-p", "5353:53/udp",
			"udpecho:test", "sh", "-c", "mkdir -p /www && echo page > /www/index.html && httpd -p 80 -h /www && exec udpecho 53")
		waitPage(t, d.netns, "127.0.0.1:8080", "page\n")
		if vmctlRules(t, d.netns) == 0 {
			t.Errorf("no rules in table inet vmctl while web runs and publishes ports")
		}
		if body, err := get(t, d.netns, "127.0.0.1:8081"); err != nil || body != "page\n" {
			t.Errorf("127.0.0.1:8081 from the host: %q, %v", body, err)
		}
		if body, err := get(t, o.ns, outsideGateway+":8080"); err != nil || body != "page\n" {
			t.Errorf("%s:8080 from outside: %q, %v", outsideGateway, body, err)
		}
		if _, err := get(t, o.ns, outsideGateway+":8081"); err == nil {
			t.Errorf("a port published on 127.0.0.1 answered from outside")
		}
		// Hairpin: a container, and the container itself, through the
		// host's address and published port.
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "busybox", "sh", "-c", fetch("http://"+outsideGateway+":8080/", 10)); r.stdout != "page\n" {
			t.Errorf("another container through the host port: %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "exec", "web", "timeout", "10", "wget", "-q", "-O-", "http://"+outsideGateway+":8080/"); r.stdout != "page\n" {
			t.Errorf("the container through its own host port: %q", r.stdout)
		}
		var echoed string
		err = do(t, d.netns, func() error {
			c, err := net.Dial("udp", "127.0.0.1:5353")
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("udp-ping")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			echoed = string(buf[:n])
			return err
		})
		if err != nil || echoed != "udp-ping" {
			t.Errorf("UDP through the published port: %q, %v", echoed, err)
		}
		r := d.mustVmctl(t, 0, "", "port", "web")
		for _, want := range []string{"80/tcp -> 0.0.0.0:8080", "80/tcp -> 127.0.0.1:8081", "53/udp -> 0.0.0.0:5353"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("port web:\n%s\nwant %s", r.stdout, want)
			}
		}
		ip := strings.TrimSpace(d.mustVmctl(t, 0, "", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web").stdout)
		if body, err := get(t, d.netns, ip+":80"); err != nil || body != "page\n" {
			t.Errorf("the container's own address %s from the host: %q, %v", ip, body, err)
		}
		if r := d.docker(t, "", "port", "web", "80/tcp"); !strings.Contains(r.stdout, "0.0.0.0:8080") {
			t.Errorf("docker port web 80/tcp = %q", r.stdout)
		}

		// A host port already taken: one line, and no tap for the refused start.
		tapsBefore := len(taps(t, d.netns))
		containers = append(containers, "clash")
		r = d.mustVmctl(t, 125, "", "run", "-d", "--name", "clash", "-p", "8080:80", "busybox", "sleep", "60")
		oneLine(t, r, "port is already allocated")
		if n := len(taps(t, d.netns)); n != tapsBefore {
			t.Errorf("taps after the refused start: %d, want %d", n, tapsBefore)
		}
		// -P publishes the exposed ports on ephemeral host ports.
		run(t, "eph", "-P", "--expose", "80", "busybox", "httpd", "-f", "-p", "80")
		r = d.mustVmctl(t, 0, "", "port", "eph", "80")
		m := regexp.MustCompile(`0\.0\.0\.0:(\d+)`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("port eph 80 = %q, want an ephemeral host port", r.stdout)
		}
		waitFor(t, func() bool { _, err := get(t, d.netns, "127.0.0.1:"+m[1]); return err == nil }, "eph's ephemeral port")
		// -p 80: an ephemeral host port for one container port.
		run(t, "ephp", "-p", "80", "busybox", "httpd", "-f", "-p", "80")
		r = d.mustVmctl(t, 0, "", "port", "ephp", "80/tcp")
		if m = regexp.MustCompile(`0\.0\.0\.0:(\d+)`).FindStringSubmatch(r.stdout); m == nil || m[1] == "80" {
			t.Fatalf("port ephp 80/tcp = %q, want an ephemeral host port", r.stdout)
		}
		waitFor(t, func() bool { _, err := get(t, d.netns, "127.0.0.1:"+m[1]); return err == nil }, "ephp's ephemeral port")
	})

	t.Run("user networks", func(t *testing.T) {
		d.mustVmctl(t, 0, "", "network", "create", "n1")
		d.mustVmctl(t, 0, "", "network", "create", "--internal", "n2")
		d.mustVmctl(t, 0, "", "network", "create", "--subnet", "10.99.0.0/24", "n3")
		run(t, "a", append([]string{"--network", "n1", "--network-alias", "alpha"}, serve("a")...)...)
		aIP := strings.TrimSpace(d.mustVmctl(t, 0, "", "inspect", "-f", "{{.NetworkSettings.Networks.n1.IPAddress}}", "a").stdout)
		if net.ParseIP(aIP) == nil {
			t.Fatalf("a's address on n1: %q", aIP)
		}
		waitPage(t, d.netns, aIP+":80", "a\n")
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "--network", "n1", "busybox", "sh", "-c",
			fetch("http://a/", 10)+"; "+fetch("http://alpha/", 10)); r.stdout != "a\na\n" {
			t.Errorf("a by name and by alias on n1: %q", r.stdout)
		}
		// docker rename of a running container: its network's DNS answers
		// for the new name at once, and no longer for the old one.
		d.mustDocker(t, 0, "", "rename", "a", "a2")
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "--network", "n1", "busybox", "sh", "-c",
			fetch("http://a2/", 10)+"; if nslookup a >/dev/null 2>&1; then echo old name resolves; fi"); r.stdout != "a\n" {
			t.Errorf("after rename a a2, on n1: %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "ps", "--format", "{{.Names}}", "--filter", "name=a2"); r.stdout != "a2\n" {
			t.Errorf("ps after the rename: %q", r.stdout)
		}
		d.mustVmctl(t, 0, "", "rename", "a2", "a")
		// --dns on a user network: the network's server stays in
		// resolv.conf (names still resolve) and forwards the rest there.
		n1GW := strings.TrimSpace(d.mustVmctl(t, 0, "", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", "n1").stdout)
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "--network", "n1", "--dns", outsideHost, "busybox", "sh", "-c",
			"cat /etc/resolv.conf; "+fetch("http://a/", 10)+"; "+fetch("http://"+outsideName+"/", 10)); r.stdout != "nameserver "+n1GW+"\na\n"+outsidePage {
			t.Errorf("--dns %s on n1 (gateway %s): %q", outsideHost, n1GW, r.stdout)
		}
		if r := d.vmctl(t, "", "run", "--rm", "--network", "n3", "busybox", "sh", "-c", fetch("http://"+aIP+"/", 3)); r.code == 0 {
			t.Errorf("a container on n3 reached a on n1: %q", r.stdout)
		}
		if r := d.vmctl(t, "", "run", "--rm", "--network", "n2", "busybox", "sh", "-c", fetch("http://"+outsideHost+"/", 3)); r.code == 0 {
			t.Errorf("a container on the internal n2 reached the outside: %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "--network", "n3", "busybox", "sh", "-c",
			"ip -4 -o addr show eth0; "+fetch("http://"+outsideHost+"/", 10)); !strings.Contains(r.stdout, "inet 10.99.0.") || !strings.HasSuffix(r.stdout, outsidePage) {
			t.Errorf("n3 (10.99.0.0/24) to the outside:\n%s", r.stdout)
		}
		// connect and disconnect on a created container.
		containers = append(containers, "cc")
		d.mustVmctl(t, 0, "", "create", "--name", "cc", "busybox", "true")
		d.mustVmctl(t, 0, "", "network", "connect", "--alias", "see", "n1", "cc")
		if r := d.mustVmctl(t, 0, "", "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "cc"); !strings.Contains(r.stdout, "n1") {
			t.Errorf("cc's networks after connect: %q", r.stdout)
		}
		d.mustVmctl(t, 0, "", "network", "disconnect", "n1", "cc")
		r := d.mustVmctl(t, 1, "", "network", "rm", "n1")
		oneLine(t, r, "n1")
		// A running container's VM takes no new NIC: 409, one line,
		// nothing attached.
		r = d.mustVmctl(t, 1, "", "network", "connect", "n3", "a")
		oneLine(t, r, "running")
		if r := d.mustVmctl(t, 0, "", "inspect", "-f", "{{len .NetworkSettings.Networks}}", "a"); strings.TrimSpace(r.stdout) != "1" {
			t.Errorf("a's networks after a refused connect: %s", r.stdout)
		}

		// --ip-range, a label and the bridge's name; the network's events.
		since := time.Now().Add(-time.Second).Unix()
		d.mustVmctl(t, 0, "", "network", "create", "--subnet", "10.96.0.0/24", "--ip-range", "10.96.0.128/25",
			"--label", "team=a", "-o", "com.docker.network.bridge.name=br-n4", "n4")
		if r := d.mustVmctl(t, 0, "", "network", "inspect", "-f", `{{index .Labels "team"}} {{index .Options "com.docker.network.bridge.name"}}`, "n4"); strings.TrimSpace(r.stdout) != "a br-n4" {
			t.Errorf("n4's label and bridge option: %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "--network", "n4", "busybox", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(r.stdout, "inet 10.96.0.1") ||
			!regexp.MustCompile(`inet 10\.96\.0\.(12[89]|1[3-9][0-9]|2[0-5][0-9])/24`).MatchString(r.stdout) {
			t.Errorf("an address of n4's --ip-range 10.96.0.128/25: %q", r.stdout)
		}
		if out, err := exec.Command("ip", "-n", d.netns, "link", "show", "br-n4").CombinedOutput(); err != nil {
			t.Errorf("n4's bridge br-n4: %v: %s", err, out)
		}
		d.mustVmctl(t, 0, "", "network", "rm", "n4")
		if err := exec.Command("ip", "-n", d.netns, "link", "show", "br-n4").Run(); err == nil {
			t.Errorf("br-n4 is left after network rm n4")
		}
		r = d.mustDocker(t, 0, "", "events", "--since", fmt.Sprint(since), "--until", fmt.Sprint(time.Now().Unix()+1),
			"--filter", "type=network", "--filter", "network=n4", "--format", "{{.Action}}")
		if got := strings.Fields(r.stdout); !slices.Equal(got, []string{"create", "connect", "disconnect", "destroy"}) {
			t.Errorf("docker events of n4 = %q, want create, connect, disconnect, destroy", got)
		}
	})

	t.Run("docker CLI", func(t *testing.T) {
		d.mustDocker(t, 0, "", "network", "create", "--subnet", "10.98.0.0/24", "dn")
		if r := d.mustDocker(t, 0, "", "network", "ls", "--format", "{{.Name}} {{.Driver}}"); !strings.Contains(r.stdout, "dn bridge") || !strings.Contains(r.stdout, "bridge bridge") {
			t.Errorf("docker network ls:\n%s", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "dn"); strings.TrimSpace(r.stdout) != "10.98.0.0/24" {
			t.Errorf("docker network inspect subnet = %q", r.stdout)
		}
		containers = append(containers, "dweb")
		d.mustDocker(t, 0, "", "run", "-d", "--name", "dweb", "--network", "dn", "-p", "9090:80", "busybox", "httpd", "-f", "-p", "80")
		if r := d.mustDocker(t, 0, "", "port", "dweb"); !strings.Contains(r.stdout, "80/tcp -> 0.0.0.0:9090") {
			t.Errorf("docker port dweb = %q", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.NetworkSettings.Networks.dn.IPAddress}}", "dweb"); !strings.HasPrefix(r.stdout, "10.98.0.") {
			t.Errorf("dweb's address on dn = %q", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"); !strings.HasPrefix(r.stdout, "172.30.") {
			t.Errorf("web's address = %q", r.stdout)
		}
		// web publishes 80 (-p 8080:80), eph exposes it and publishes it
		// with -P, ephp with -p 80; dweb is alone on dn.
		for f, want := range map[string]string{"network=dn": "dweb", "publish=80": "dweb eph ephp web", "expose=80/tcp": "dweb eph ephp web",
			"publish=80/udp": "", "network=dn,publish=80": "dweb"} {
			args := []string{"ps", "--format", "{{.Names}}"}
			for _, term := range strings.Split(f, ",") {
				args = append(args, "--filter", term)
			}
			r := d.mustDocker(t, 0, "", args...)
			got := strings.Fields(r.stdout)
			slices.Sort(got)
			if strings.Join(got, " ") != want {
				t.Errorf("docker ps --filter %s = %q, want %q", f, got, want)
			}
		}
		if r := d.mustVmctl(t, 0, "", "ps", "--filter", "network=bridge", "--filter", "publish=8080", "--format", "{{.Names}}"); strings.TrimSpace(r.stdout) != "" {
			t.Errorf("vmctl ps --filter network=bridge --filter publish=8080 = %q, want none (web publishes 80)", r.stdout)
		}
		d.mustDocker(t, 0, "", "rm", "-f", "dweb")
		containers = append(containers, "dc")
		d.mustDocker(t, 0, "", "create", "--name", "dc", "busybox", "true")
		d.mustDocker(t, 0, "", "network", "connect", "--ip", "10.98.0.77", "dn", "dc")
		if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.NetworkSettings.Networks.dn.IPAddress}}", "dc"); strings.TrimSpace(r.stdout) != "10.98.0.77" {
			t.Errorf("dc's address on dn after docker network connect --ip = %q", r.stdout)
		}
		d.mustDocker(t, 0, "", "network", "disconnect", "dn", "dc")
		d.mustDocker(t, 0, "", "rm", "dc")
		d.mustDocker(t, 0, "", "network", "rm", "dn")
		// prune takes the networks no container is on (n2, n3 and a new
		// one), and keeps n1, which a has.
		d.mustDocker(t, 0, "", "network", "create", "dangling")
		r := d.mustDocker(t, 0, "", "network", "prune", "-f")
		for _, n := range []string{"dangling", "n2", "n3"} {
			if !strings.Contains(r.stdout, n+"\n") {
				t.Errorf("docker network prune = %q, want %s removed", r.stdout, n)
			}
		}
		if strings.Contains(r.stdout, "n1\n") || strings.Contains(r.stdout, "bridge\n") {
			t.Errorf("docker network prune = %q, removed a network in use or the default", r.stdout)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		n1Subnet := strings.TrimSpace(d.mustVmctl(t, 0, "", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "n1").stdout)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"network", "create", "--subnet", n1Subnet, "overlap"}, "overlap"},
			{[]string{"network", "create", "--subnet", "10.300.0.0/24", "malformed"}, "10.300.0.0/24"},
			{[]string{"network", "create", "--subnet", "10.97.0.0/24", "--gateway", "10.96.0.1", "outside-gw"}, "10.96.0.1"},
			{[]string{"run", "--rm", "--network", "nosuch", "busybox", "true"}, "nosuch"},
		} {
			r := d.vmctl(t, "", tc.args...)
			if r.code == 0 {
				t.Errorf("vmctl %s succeeded", strings.Join(tc.args, " "))
				continue
			}
			oneLine(t, r, tc.want)
		}
		for _, name := range []string{"overlap", "malformed", "outside-gw"} {
			if r := d.vmctl(t, "", "network", "inspect", name); r.code == 0 {
				t.Errorf("the refused network %s exists", name)
			}
		}
	})

	t.Run("kill -9 during a start", func(t *testing.T) {
		// The daemon dies while a start plumbs and boots; the next one
		// re-adopts or cleans up, and a removal takes the rest.
		done := make(chan result, 1)
		go func() {
			done <- d.vmctl(t, "", "run", "-d", "--name", "killed", "-p", "8090:80", "busybox", "sleep", "600")
		}()
		time.Sleep(700 * time.Millisecond)
		d.crash(t)
		<-done
		d.launch(t, d.bin)
		containers = append(containers, "killed")
		d.vmctl(t, "", "rm", "-f", "killed")
		if r := d.mustVmctl(t, 0, "", "ps", "-a", "--filter", "name=killed", "-q"); r.stdout != "" {
			t.Errorf("killed still listed after rm -f: %q", r.stdout)
		}
	})

	t.Run("without the userland proxy", func(t *testing.T) {
		// dockerd's --userland-proxy=false: the same daemon, restarted
		// with it, carries the host's loopback and the containers to
		// published ports by DNAT; the containers it re-adopts keep
		// their ports.
		d.crash(t)
		d.args = []string{"--userland-proxy=false"}
		d.launch(t, d.bin)
		run(t, "kweb", append([]string{"-p", "8092:80", "-p", "127.0.0.1:8093:80"}, serve("kpage")...)...)
		waitPage(t, d.netns, "127.0.0.1:8092", "kpage\n")
		if body, err := get(t, d.netns, "127.0.0.1:8093"); err != nil || body != "kpage\n" {
			t.Errorf("127.0.0.1:8093 from the host: %q, %v", body, err)
		}
		if body, err := get(t, o.ns, outsideGateway+":8092"); err != nil || body != "kpage\n" {
			t.Errorf("%s:8092 from outside: %q, %v", outsideGateway, body, err)
		}
		if _, err := get(t, o.ns, outsideGateway+":8093"); err == nil {
			t.Errorf("a port published on 127.0.0.1 answered from outside")
		}
		if r := d.mustVmctl(t, 0, "", "run", "--rm", "busybox", "sh", "-c", fetch("http://"+outsideGateway+":8092/", 10)); r.stdout != "kpage\n" {
			t.Errorf("another container through the host port: %q", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "exec", "kweb", "timeout", "10", "wget", "-q", "-O-", "http://"+outsideGateway+":8092/"); r.stdout != "kpage\n" {
			t.Errorf("the container through its own host port: %q", r.stdout)
		}
		if body, err := get(t, d.netns, "127.0.0.1:8080"); err != nil || body != "page\n" {
			t.Errorf("web's 127.0.0.1:8080 after the restart: %q, %v", body, err)
		}
		// The kernel carries it: loopback DNAT for the two loopback
		// ports, the guard, and route_localnet on the bridge.
		rules := vmctlChainRules(t, d.netns)
		if rules["loopback"] < 2 || rules["guard"] == 0 {
			t.Errorf("rules per chain without the userland proxy: %v; want loopback DNAT and the guard", rules)
		}
		out, err := exec.Command("ip", "netns", "exec", d.netns, "cat", "/proc/sys/net/ipv4/conf/vmctl0/route_localnet").CombinedOutput()
		if err != nil || string(out) != "1\n" {
			t.Errorf("route_localnet of vmctl0: %q, %v; want 1", out, err)
		}
	})

	t.Run("no leaks", func(t *testing.T) {
		// Some were removed on the way (or never made): rm -f of all.
		d.vmctl(t, "", append([]string{"rm", "-f"}, containers...)...)
		containers = nil
		d.mustVmctl(t, 0, "", "network", "rm", "n1")
		if r := d.mustVmctl(t, 0, "", "network", "ls", "--format", "{{.Name}}"); strings.TrimSpace(r.stdout) != "bridge" {
			t.Errorf("networks left: %q, want bridge alone", r.stdout)
		}
		if r := d.mustVmctl(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
			t.Errorf("containers left: %q", r.stdout)
		}
		if left := taps(t, d.netns); len(left) > 0 {
			t.Errorf("taps left after every container was removed: %v", left)
		}
		if n := vmctlRules(t, d.netns); n != 0 {
			t.Errorf("%d nftables rules left in table inet vmctl after every container was removed", n)
		}
		if r := d.mustVmctl(t, 0, "", "network", "inspect", "-f", "{{len .Containers}}", "bridge"); strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("endpoints left on bridge: %s", r.stdout)
		}
		if _, err := get(t, d.netns, "127.0.0.1:8080"); err == nil {
			t.Errorf("port 8080 still answers after its container was removed")
		}
	})
}
