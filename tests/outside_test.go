package tests

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/imagefile"

	"github.com/miekg/dns"
)

// The outside world of the network tests: a namespace of the test's own,
// joined by a veth pair to the namespace an engine runs in, with the
// servers a container reaches through NAT. Nothing beyond it is ever
// addressed. Addresses are from TEST-NET-2, which the engine's pools never
// hand out.
const (
	outsideHost    = "198.51.100.2" // the outside host; also the tests' resolver (outsideDNS)
	outsideGateway = "198.51.100.1" // the engine's namespace, as the outside sees it
	outsideName    = "outside.test" // the name the outside DNS server answers
	outsidePage    = "hello from outside\n"
)

// outside is one outside host.
type outside struct {
	ns   string // its namespace (ip netns name)
	peer string // the namespace it is joined to ("" for the tests' own)
}

// newOutside makes an outside host joined to the named namespace, or to
// the tests' own when peer is empty, and starts its servers: HTTP on :80,
// a UDP echo on :7 and DNS on :53 answering outsideName. They go with the
// namespace at the end of the test.
func newOutside(t *testing.T, peer string) *outside {
	t.Helper()
	o := &outside{ns: newNetns(t, "vmctl-out"), peer: peer}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", o.ns).Run() })
	in := func(args ...string) []string {
		if peer == "" {
			return args
		}
		return append([]string{"-n", peer}, args...)
	}
	for _, args := range [][]string{
		in("link", "add", "vo-engine", "type", "veth", "peer", "name", "vo-outside", "netns", o.ns),
		in("addr", "add", outsideGateway+"/24", "dev", "vo-engine"),
		in("link", "set", "vo-engine", "up"),
		{"-n", o.ns, "addr", "add", outsideHost + "/24", "dev", "vo-outside"},
		{"-n", o.ns, "link", "set", "vo-outside", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	o.serve(t)
	return o
}

// do runs fn on a thread in ns (an ip netns name), failing the test if
// the namespace cannot be entered: sockets fn opens stay there.
func do(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	return inNetns(ns, fn)
}

func (o *outside) serve(t *testing.T) {
	t.Helper()
	var httpL net.Listener
	var echo, dnsUDP net.PacketConn
	err := do(t, o.ns, func() (err error) {
		if httpL, err = net.Listen("tcp", outsideHost+":80"); err != nil {
			return err
		}
		if echo, err = net.ListenPacket("udp", outsideHost+":7"); err != nil {
			return err
		}
		dnsUDP, err = net.ListenPacket("udp", outsideHost+":53")
		return err
	})
	if err != nil {
		t.Fatalf("outside servers: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, outsidePage)
	})}
	go srv.Serve(httpL)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		switch {
		case len(q.Question) != 1 || !strings.EqualFold(q.Question[0].Name, outsideName+"."):
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP(outsideHost),
			})
		}
		// Other types of the name: no data, but the name exists.
		w.WriteMsg(m)
	})
	dsrv := &dns.Server{PacketConn: dnsUDP, Handler: mux}
	go dsrv.ActivateAndServe()
	t.Cleanup(func() {
		srv.Close()
		echo.Close()
		dsrv.Shutdown()
	})
}

// get fetches / from hostport, dialled from the named namespace ("" for
// the tests' own), and returns the body.
func get(t *testing.T, ns, hostport string) (string, error) {
	t.Helper()
	var conn net.Conn
	dial := func() (err error) {
		conn, err = net.DialTimeout("tcp", hostport, 5*time.Second)
		return err
	}
	var err error
	if ns == "" {
		err = dial()
	} else {
		err = do(t, ns, dial)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", hostport)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// udpEchoImage is "udpecho:test": busybox with /bin/udpecho
// (tests/testdata/udpecho), a UDP server for the containers of the network
// tests, written as a docker save archive once per run. It returns the
// archive's path.
var udpEchoImage = sync.OnceValues(func() (string, error) { return busyboxWith("udpecho") })

// busyboxWith writes "NAME:test", busybox with /bin/NAME built from
// tests/testdata/NAME, as a docker save archive and returns its path.
func busyboxWith(name string) (string, error) {
	dir, err := os.MkdirTemp("", "vmctl-"+name+"-")
	if err != nil {
		return "", err
	}
	tempDirs = append(tempDirs, dir)
	bin := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, "./testdata/"+name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v: %s", name, err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+".tar")
	return out, imagefile.Add(filepath.Join("..", "build", "busybox.tar"), "bin/"+name, 0o755, prog, name+":test", out)
}
