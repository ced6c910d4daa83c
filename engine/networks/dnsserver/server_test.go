package dnsserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/miekg/dns"

	"github.com/vmctl/vmctl/engine/networks/netnstest"
)

// TestMain runs the tests in a network namespace of their own, where port
// 53 of any 127.0.0.x is free and listeners expose nothing of the machine.
func TestMain(m *testing.M) { netnstest.Main(m) }

// fakeUpstream is a nameserver the test runs on addr:53.
type fakeUpstream struct {
	addr    netip.Addr
	queries atomic.Int32
	servers []*dns.Server
}

// startUpstream serves, for every name, A 192.0.2.<last byte of addr>,
// except:
//   - big.test.: TC and no answer over UDP, 60 addresses over TCP;
//   - slow.test.: no answer at all;
//   - servfail.test.: SERVFAIL, if failing.
func startUpstream(t *testing.T, addr string, failing bool) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{addr: netip.MustParseAddr(addr)}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		q := req.Question[0]
		m := new(dns.Msg).SetReply(req)
		m.RecursionAvailable = true
		a := func(last byte) dns.RR {
			return &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.IPv4(192, 0, 2, last)}
		}
		_, tcp := w.RemoteAddr().(*net.TCPAddr)
		switch {
		case q.Name == "slow.test.":
			return
		case q.Name == "servfail.test." && failing:
			m.Rcode = dns.RcodeServerFailure
		case q.Name == "big.test." && !tcp:
			m.Truncated = true
		case q.Name == "big.test.":
			for i := range 60 {
				m.Answer = append(m.Answer, a(byte(i)))
			}
		default:
			m.Answer = append(m.Answer, a(u.addr.As4()[3]))
		}
		w.WriteMsg(m)
	})
	for _, proto := range []string{"udp", "tcp"} {
		started := make(chan struct{})
		srv := &dns.Server{Addr: addr + ":53", Net: proto, Handler: handler, NotifyStartedFunc: func() { close(started) }}
		go func() {
			if err := srv.ListenAndServe(); err != nil {
				t.Errorf("upstream %s %s: %v", addr, proto, err)
				close(started)
			}
		}()
		<-started
		u.servers = append(u.servers, srv)
	}
	t.Cleanup(func() {
		for _, srv := range u.servers {
			srv.Shutdown()
		}
	})
	return u
}

func writeResolvConf(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// Replaced whole, as resolvconf and systemd-resolved do.
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

var serverAddr = netip.MustParseAddrPort("127.0.0.3:53")

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = serverAddr
	if cfg.Lookup == nil {
		cfg.Lookup = testLookup
	}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func ask(t *testing.T, proto, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r, err := tryAsk(proto, name, qtype, 5*time.Second)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", dns.TypeToString[qtype], name, proto, err)
	}
	return r
}

func tryAsk(proto, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: proto, Timeout: timeout}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), serverAddr.String())
	return r, err
}

// TestServer runs the server on 127.0.0.3:53 against fake upstreams on
// 127.0.0.2 and 127.0.0.4, with miekg/dns as the client, in a network
// namespace of its own.
func TestServer(t *testing.T) {
	netnstest.Require(t)
	first := startUpstream(t, "127.0.0.2", true)
	second := startUpstream(t, "127.0.0.4", false)
	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	writeResolvConf(t, resolvConf, "# host resolvers\nsearch example.org\nnameserver 127.0.0.2\nnameserver 127.0.0.4 ; second\noptions ndots:1\n")

	t.Run("names of the network", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf})
		before := first.queries.Load()
		for _, proto := range []string{"udp", "tcp"} {
			r := ask(t, proto, "web.", dns.TypeA)
			if got := answers(r); len(got) != 2 || got[0] != "A 172.30.0.2" {
				t.Errorf("%s: %v", proto, got)
			}
			if r := ask(t, proto, "web.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
				t.Errorf("%s: AAAA: %v", proto, r)
			}
		}
		if first.queries.Load() != before {
			t.Error("a name of the network went upstream")
		}
	})

	t.Run("forwarded", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf})
		for _, proto := range []string{"udp", "tcp"} {
			r := ask(t, proto, "example.test.", dns.TypeA)
			if got := answers(r); len(got) != 1 || got[0] != "A 192.0.2.2" {
				t.Errorf("%s: %v", proto, got)
			}
		}
	})

	t.Run("a client's own nameservers", func(t *testing.T) {
		// A container's --dns: its queries the network does not answer go
		// there, the others' to the host's; the network's names stay.
		var asked []netip.Addr
		var mu sync.Mutex
		startServer(t, Config{ResolvConf: resolvConf, Upstreams: func(c netip.Addr) []netip.AddrPort {
			mu.Lock()
			asked = append(asked, c)
			mu.Unlock()
			if c == netip.MustParseAddr("127.0.0.1") {
				return []netip.AddrPort{netip.MustParseAddrPort("127.0.0.4:0"), serverAddr} // port 0: 53; itself: skipped
			}
			return nil
		}})
		before := first.queries.Load()
		for _, proto := range []string{"udp", "tcp"} {
			if got := answers(ask(t, proto, "example.test.", dns.TypeA)); len(got) != 1 || got[0] != "A 192.0.2.4" {
				t.Errorf("%s: %v, want the client's nameserver's answer", proto, got)
			}
			if got := answers(ask(t, proto, "web.", dns.TypeA)); len(got) != 2 {
				t.Errorf("%s: the network's name with the client's nameservers: %v", proto, got)
			}
		}
		if first.queries.Load() != before {
			t.Error("a client with nameservers of its own was forwarded to the host's")
		}
		mu.Lock()
		defer mu.Unlock()
		if len(asked) == 0 || asked[0] != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("Upstreams called for %v, want the client 127.0.0.1", asked)
		}
	})

	t.Run("truncated upstream answer", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf})
		r := ask(t, "udp", "big.test.", dns.TypeA)
		if !r.Truncated {
			t.Errorf("udp: TC not set: %v", r)
		}
		// What a client does on TC: ask again over TCP.
		if r := ask(t, "tcp", "big.test.", dns.TypeA); r.Truncated || len(r.Answer) != 60 {
			t.Errorf("tcp: TC %v, %d answers", r.Truncated, len(r.Answer))
		}
	})

	t.Run("SERVFAIL tries the next nameserver", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf})
		before := second.queries.Load()
		r := ask(t, "udp", "servfail.test.", dns.TypeA)
		if got := answers(r); r.Rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != "A 192.0.2.4" {
			t.Errorf("%v", r)
		}
		if second.queries.Load() != before+1 {
			t.Errorf("the second nameserver had %d queries, want 1", second.queries.Load()-before)
		}
	})

	t.Run("silent upstreams", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf, UpstreamTimeout: 200 * time.Millisecond, ForwardTimeout: 300 * time.Millisecond})
		start := time.Now()
		r := ask(t, "udp", "slow.test.", dns.TypeA)
		if r.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("answered after %v", d)
		}
	})

	t.Run("resolv.conf changes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "resolv.conf")
		writeResolvConf(t, path, "nameserver 127.0.0.2\n")
		s := startServer(t, Config{ResolvConf: path})
		s.upstreams.mu.Lock()
		s.upstreams.recheck = 0
		s.upstreams.mu.Unlock()
		if got := answers(ask(t, "udp", "example.test.", dns.TypeA)); len(got) != 1 || got[0] != "A 192.0.2.2" {
			t.Fatalf("before: %v", got)
		}
		writeResolvConf(t, path, "nameserver 127.0.0.4\n")
		if got := answers(ask(t, "udp", "example.test.", dns.TypeA)); len(got) != 1 || got[0] != "A 192.0.2.4" {
			t.Fatalf("after: %v", got)
		}
	})

	t.Run("never forwards to itself", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "resolv.conf")
		writeResolvConf(t, path, "nameserver "+serverAddr.Addr().String()+"\n")
		var lookups atomic.Int32
		startServer(t, Config{ResolvConf: path, Lookup: func(name string) []netip.Addr {
			lookups.Add(1)
			return testLookup(name)
		}})
		r := ask(t, "udp", "loop.test.", dns.TypeA)
		if r.Rcode != dns.RcodeServerFailure || lookups.Load() != 1 {
			t.Errorf("rcode %s after %d lookups, want SERVFAIL after 1", dns.RcodeToString[r.Rcode], lookups.Load())
		}
	})

	t.Run("several queries on one TCP connection", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf})
		c, err := (&dns.Client{Net: "tcp"}).Dial(serverAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, name := range []string{"web.", "example.test.", "db."} {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.WriteMsg(new(dns.Msg).SetQuestion(name, dns.TypeA)); err != nil {
				t.Fatal(err)
			}
			r, err := c.ReadMsg()
			if err != nil || len(r.Answer) == 0 {
				t.Fatalf("%s: %v %v", name, r, err)
			}
		}
	})

	t.Run("TCP connections past the limit are closed", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf, MaxTCPConns: 1, TCPIdleTimeout: 300 * time.Millisecond})
		idle, err := net.Dial("tcp", serverAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		time.Sleep(50 * time.Millisecond) // accepted
		if _, err := tryAsk("tcp", "web.", dns.TypeA, time.Second); err == nil {
			t.Error("a second connection was served")
		}
		// The idle one is closed after TCPIdleTimeout, and there is room.
		idle.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the idle connection: %v", err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			if _, err := tryAsk("tcp", "web.", dns.TypeA, time.Second); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("no room after the idle connection ended: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("names of the network while forwards are all busy", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf, MaxInFlight: 2, UpstreamTimeout: 3 * time.Second, ForwardTimeout: 3 * time.Second})
		flood, err := net.Dial("udp", serverAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer flood.Close()
		for i := range 20 {
			m := new(dns.Msg).SetQuestion("slow.test.", dns.TypeA)
			m.Id = uint16(i)
			flood.Write(mustPack(t, m))
		}
		start := time.Now()
		r, err := tryAsk("udp", "web.", dns.TypeA, time.Second)
		if err != nil || len(r.Answer) != 2 {
			t.Fatalf("web while flooded: %v, %v", r, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("answered after %v", d)
		}
	})

	t.Run("Stop ends forwards and frees the address", func(t *testing.T) {
		s, err := Start(context.Background(), Config{Addr: serverAddr, Lookup: testLookup, ResolvConf: resolvConf,
			UpstreamTimeout: time.Minute, ForwardTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, proto := range []string{"udp", "tcp"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tryAsk(proto, "slow.test.", dns.TypeA, 2*time.Second)
			}()
		}
		time.Sleep(200 * time.Millisecond) // the forwards are under way
		stopped := make(chan struct{})
		go func() {
			s.Stop()
			close(stopped)
		}()
		// The forwards would wait a minute: Stop cuts them short.
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			t.Fatal("Stop did not return")
		}
		wg.Wait()
		s.Stop()
		again, err := Start(context.Background(), Config{Addr: serverAddr, Lookup: testLookup, ResolvConf: resolvConf})
		if err != nil {
			t.Fatalf("the address is still taken after Stop: %v", err)
		}
		again.Stop()
	})

	t.Run("address taken", func(t *testing.T) {
		startServer(t, Config{ResolvConf: resolvConf})
		_, err := Start(context.Background(), Config{Addr: serverAddr, Lookup: testLookup, ResolvConf: resolvConf})
		if !errdefs.IsConflict(err) {
			t.Fatalf("Start on a taken address = %v, want a conflict", err)
		}
		if r := ask(t, "udp", "web.", dns.TypeA); len(r.Answer) != 2 {
			t.Errorf("the first server after the failed start: %v", r)
		}
	})
	t.Run("address shared", func(t *testing.T) {
		// Engines of one data root in several processes each serve the
		// network: servers with ReusePort share the address, and a
		// program that does not set it still finds it taken (and makes it
		// taken for them).
		cfg := Config{Addr: serverAddr, Lookup: testLookup, ResolvConf: resolvConf, ReusePort: true}
		a, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Stop()
		b, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatalf("a second server with ReusePort: %v", err)
		}
		if r := ask(t, "udp", "web.", dns.TypeA); len(r.Answer) != 2 {
			t.Errorf("with two servers: %v", r)
		}
		if r := ask(t, "tcp", "web.", dns.TypeA); len(r.Answer) != 2 {
			t.Errorf("with two servers, over TCP: %v", r)
		}
		b.Stop()
		if r := ask(t, "udp", "web.", dns.TypeA); len(r.Answer) != 2 {
			t.Errorf("after the second server stopped: %v", r)
		}
		if s, err := Start(context.Background(), Config{Addr: serverAddr, Lookup: testLookup, ResolvConf: resolvConf}); !errdefs.IsConflict(err) {
			if s != nil {
				s.Stop()
			}
			t.Errorf("Start without ReusePort beside one with it = %v, want a conflict", err)
		}
		a.Stop()
		startServer(t, Config{ResolvConf: resolvConf})
		if s, err := Start(context.Background(), cfg); !errdefs.IsConflict(err) {
			if s != nil {
				s.Stop()
			}
			t.Errorf("Start with ReusePort beside a server without it = %v, want a conflict", err)
		}
	})
}

func TestStartInvalid(t *testing.T) {
	for _, cfg := range []Config{
		{Lookup: testLookup},
		{Addr: netip.MustParseAddrPort("0.0.0.0:53"), Lookup: testLookup},
		{Addr: netip.MustParseAddrPort("127.0.0.1:53")},
	} {
		if s, err := Start(context.Background(), cfg); !errdefs.IsInvalidArgument(err) {
			if s != nil {
				s.Stop()
			}
			t.Errorf("Start(%+v) = %v, want invalid argument", cfg, err)
		}
	}
}
