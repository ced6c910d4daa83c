package dnsserver

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testNetwork is the names of a made-up network: web (two containers
// under one alias), db (IPv4 and IPv6), and the reverse of web's first
// address.
var testNetwork = map[string][]netip.Addr{
	"web":          {netip.MustParseAddr("172.30.0.2"), netip.MustParseAddr("172.30.0.3")},
	"db":           {netip.MustParseAddr("172.30.0.4"), netip.MustParseAddr("fd00::4")},
	"0123456789ab": {netip.MustParseAddr("172.30.0.2")},
}

func testLookup(name string) []netip.Addr { return testNetwork[name] }

func testReverse(a netip.Addr) []string {
	switch a {
	case netip.MustParseAddr("172.30.0.2"):
		return []string{"web"}
	case netip.MustParseAddr("fd00::4"):
		return []string{"db"}
	}
	return nil
}

var testClient = netip.MustParseAddrPort("172.30.0.9:40000")

// newTestServer is a server without sockets whose forwards go to a
// stand-in: it answers 192.0.2.1 for any A query and counts the queries.
func newTestServer(t testing.TB, cfg Config) (*Server, *atomic.Int32) {
	t.Helper()
	if cfg.Lookup == nil {
		cfg.Lookup = testLookup
	}
	if cfg.Reverse == nil {
		cfg.Reverse = testReverse
	}
	cfg.Addr = netip.MustParseAddrPort("172.30.0.1:53")
	s := newServer(cfg.withDefaults())
	var forwarded atomic.Int32
	s.forward = func(ctx context.Context, req *dns.Msg, _ netip.AddrPort, proto string) *dns.Msg {
		forwarded.Add(1)
		if req.Question[0].Name == "fails.example." {
			return nil
		}
		m := new(dns.Msg).SetReply(req)
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
			A:   netip.MustParseAddr("192.0.2.1").AsSlice(),
		})
		return m
	}
	return s, &forwarded
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.Id = 4711
	return m
}

func mustPack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answers is a reply's answer section as "type value" strings, sorted.
func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, f[3]+" "+f[len(f)-1])
	}
	slices.Sort(out)
	return out
}

func TestAnswers(t *testing.T) {
	withEDNS := query("web.", dns.TypeA)
	withEDNS.SetEdns0(4096, false)
	twoQuestions := query("web.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	noQuestion := query("web.", dns.TypeA)
	noQuestion.Question = nil
	update := query("web.", dns.TypeA)
	update.Opcode = dns.OpcodeUpdate
	chaos := query("web.", dns.TypeA)
	chaos.Question[0].Qclass = dns.ClassCHAOS

	tests := []struct {
		name      string
		req       *dns.Msg
		client    netip.AddrPort
		clients   netip.Prefix
		rcode     int
		answers   []string
		forwarded bool
		edns      bool
	}{
		{name: "A of an alias of two", req: query("web.", dns.TypeA), rcode: dns.RcodeSuccess,
			answers: []string{"A 172.30.0.2", "A 172.30.0.3"}},
		{name: "names are case-blind", req: query("WeB.", dns.TypeA), rcode: dns.RcodeSuccess,
			answers: []string{"A 172.30.0.2", "A 172.30.0.3"}},
		{name: "short ID", req: query("0123456789ab.", dns.TypeA), rcode: dns.RcodeSuccess, answers: []string{"A 172.30.0.2"}},
		{name: "A of a name with IPv4 and IPv6", req: query("db.", dns.TypeA), rcode: dns.RcodeSuccess, answers: []string{"A 172.30.0.4"}},
		{name: "AAAA of a name with IPv6", req: query("db.", dns.TypeAAAA), rcode: dns.RcodeSuccess, answers: []string{"AAAA fd00::4"}},
		// Known name without IPv6: an empty answer, not a forward.
		{name: "AAAA of a name without IPv6", req: query("web.", dns.TypeAAAA), rcode: dns.RcodeSuccess},
		{name: "MX of a known name", req: query("web.", dns.TypeMX), rcode: dns.RcodeSuccess},
		{name: "PTR of a container", req: query("2.0.30.172.in-addr.arpa.", dns.TypePTR), rcode: dns.RcodeSuccess,
			answers: []string{"PTR web."}},
		{name: "PTR over ip6.arpa", req: query("4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR),
			rcode: dns.RcodeSuccess, answers: []string{"PTR db."}},
		{name: "PTR of an address nobody has", req: query("9.9.30.172.in-addr.arpa.", dns.TypePTR), rcode: dns.RcodeSuccess,
			answers: []string{"A 192.0.2.1"}, forwarded: true},
		{name: "unknown name", req: query("example.com.", dns.TypeA), rcode: dns.RcodeSuccess,
			answers: []string{"A 192.0.2.1"}, forwarded: true},
		{name: "a name of the network under another's domain", req: query("web.example.com.", dns.TypeA), rcode: dns.RcodeSuccess,
			answers: []string{"A 192.0.2.1"}, forwarded: true},
		{name: "no upstream answered", req: query("fails.example.", dns.TypeA), rcode: dns.RcodeServerFailure, forwarded: true},
		{name: "root", req: query(".", dns.TypeNS), rcode: dns.RcodeSuccess, answers: []string{"A 192.0.2.1"}, forwarded: true},
		{name: "zone transfer", req: query("example.com.", dns.TypeAXFR), rcode: dns.RcodeNotImplemented},
		{name: "update", req: update, rcode: dns.RcodeNotImplemented},
		{name: "two questions", req: twoQuestions, rcode: dns.RcodeFormatError},
		{name: "no question", req: noQuestion, rcode: dns.RcodeFormatError},
		{name: "another class", req: chaos, rcode: dns.RcodeSuccess, answers: []string{"A 192.0.2.1"}, forwarded: true},
		{name: "EDNS is answered with EDNS", req: withEDNS, rcode: dns.RcodeSuccess,
			answers: []string{"A 172.30.0.2", "A 172.30.0.3"}, edns: true},
		{name: "client on the network", req: query("example.com.", dns.TypeA), clients: netip.MustParsePrefix("172.30.0.0/16"),
			rcode: dns.RcodeSuccess, answers: []string{"A 192.0.2.1"}, forwarded: true},
		{name: "client off the network", req: query("web.", dns.TypeA), clients: netip.MustParsePrefix("172.31.0.0/16"),
			rcode: dns.RcodeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, forwarded := newTestServer(t, Config{Clients: tt.clients})
			client := tt.client
			if !client.IsValid() {
				client = testClient
			}
			out := s.handle(context.Background(), mustPack(t, tt.req), client, "udp")
			resp := new(dns.Msg)
			if err := resp.Unpack(out); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			// A forwarded reply's RA is the upstream's.
			if resp.Id != tt.req.Id || !resp.Response || (!tt.forwarded && !resp.RecursionAvailable) {
				t.Errorf("header: id %d response %v ra %v", resp.Id, resp.Response, resp.RecursionAvailable)
			}
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
			}
			if got := answers(resp); !slices.Equal(got, tt.answers) {
				t.Errorf("answers = %q, want %q", got, tt.answers)
			}
			if got := forwarded.Load() > 0; got != tt.forwarded {
				t.Errorf("forwarded = %v, want %v", got, tt.forwarded)
			}
			if got := resp.IsEdns0() != nil; got != tt.edns {
				t.Errorf("EDNS in the reply = %v, want %v", got, tt.edns)
			}
			for _, rr := range resp.Answer {
				if rr.Header().Name != tt.req.Question[0].Name {
					t.Errorf("answer for %q, asked %q", rr.Header().Name, tt.req.Question[0].Name)
				}
				if !tt.forwarded && rr.Header().Ttl != 600 {
					t.Errorf("TTL %d, want 600", rr.Header().Ttl)
				}
			}
		})
	}
}

// TestUnanswerable: what is not a query gets FORMERR if it has a query's
// header, nothing otherwise.
func TestUnanswerable(t *testing.T) {
	response := query("web.", dns.TypeA)
	response.Response = true
	tests := []struct {
		name  string
		query []byte
		want  int // rcode, or -1: no reply
	}{
		{"empty", nil, -1},
		{"short of a header", []byte{1, 2, 3, 4, 5}, -1},
		{"a response", mustPack(t, response), -1},
		{"header and garbage", []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff}, dns.RcodeFormatError},
		{"header counting records it lacks", []byte{0x12, 0x34, 0x01, 0x00, 0, 5, 0, 0, 0, 0, 0, 0}, dns.RcodeFormatError},
		{"garbage response", []byte{0x12, 0x34, 0x81, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, forwarded := newTestServer(t, Config{})
			out := s.handle(context.Background(), tt.query, testClient, "udp")
			if tt.want < 0 {
				if out != nil {
					t.Fatalf("replied %x", out)
				}
				return
			}
			resp := new(dns.Msg)
			if err := resp.Unpack(out); err != nil {
				t.Fatalf("reply %x does not parse: %v", out, err)
			}
			if resp.Id != 0x1234 || resp.Rcode != tt.want || !resp.Response {
				t.Errorf("reply: id %#x rcode %s response %v", resp.Id, dns.RcodeToString[resp.Rcode], resp.Response)
			}
			if forwarded.Load() != 0 {
				t.Error("forwarded")
			}
		})
	}
}

// TestTruncation: an answer too long for the client's UDP buffer is cut
// with TC set; over TCP it comes whole.
func TestTruncation(t *testing.T) {
	many := make([]netip.Addr, 100)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{172, 30, 1, byte(i)})
	}
	lookup := func(string) []netip.Addr { return many }
	withEDNS := func(size uint16) *dns.Msg {
		m := query("many.", dns.TypeA)
		m.SetEdns0(size, false)
		return m
	}
	tests := []struct {
		name      string
		req       *dns.Msg
		proto     string
		maxLen    int
		truncated bool
		all       bool
	}{
		{"udp without EDNS", query("many.", dns.TypeA), "udp", 512, true, false},
		{"udp, EDNS 1232", withEDNS(1232), "udp", 1232, true, false},
		{"udp, EDNS 4096", withEDNS(4096), "udp", 4096, false, true},
		{"udp, EDNS below 512", withEDNS(100), "udp", 512, true, false},
		{"tcp", query("many.", dns.TypeA), "tcp", dns.MaxMsgSize, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServer(t, Config{Lookup: lookup})
			out := s.handle(context.Background(), mustPack(t, tt.req), testClient, tt.proto)
			if len(out) > tt.maxLen {
				t.Errorf("%d bytes, more than %d", len(out), tt.maxLen)
			}
			resp := new(dns.Msg)
			if err := resp.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if resp.Truncated != tt.truncated {
				t.Errorf("TC = %v, want %v", resp.Truncated, tt.truncated)
			}
			if got := len(resp.Answer) == len(many); got != tt.all {
				t.Errorf("%d answers of %d", len(resp.Answer), len(many))
			}
		})
	}
}

func TestParseReverseName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for no address
	}{
		{"2.0.30.172.in-addr.arpa", "172.30.0.2"},
		{"255.255.255.255.in-addr.arpa", "255.255.255.255"},
		{"0.0.0.0.in-addr.arpa", "0.0.0.0"},
		{"0.30.172.in-addr.arpa", ""},
		{"1.2.0.30.172.in-addr.arpa", ""},
		{"256.0.30.172.in-addr.arpa", ""},
		{"02.0.30.172.in-addr.arpa", ""},
		{"-1.0.30.172.in-addr.arpa", ""},
		{"+1.0.30.172.in-addr.arpa", ""},
		{"..30.172.in-addr.arpa", ""},
		{"in-addr.arpa", ""},
		{"x.0.30.172.in-addr.arpa", ""},
		{"4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "fd00::4"},
		{"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa", "4321:0:1:2:3:4:567:89ab"},
		{"4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", ""},
		{"40.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", ""},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", ""},
		{"web", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := parseReverseName(tt.name)
		if tt.want == "" {
			if ok {
				t.Errorf("parseReverseName(%q) = %v, want none", tt.name, got)
			}
			continue
		}
		if want := netip.MustParseAddr(tt.want); !ok || got != want {
			t.Errorf("parseReverseName(%q) = %v, %v; want %v", tt.name, got, ok, want)
		}
	}
}

// FuzzHandle: any packet, over either transport, is answered with a
// well-formed reply to its ID, or not at all, and never panics.
func FuzzHandle(f *testing.F) {
	for _, m := range []*dns.Msg{
		query("web.", dns.TypeA), query("db.", dns.TypeAAAA), query("example.com.", dns.TypeMX),
		query("2.0.30.172.in-addr.arpa.", dns.TypePTR), query(".", dns.TypeANY),
	} {
		f.Add(mustPack(f, m), false)
	}
	edns := query("web.", dns.TypeA)
	edns.SetEdns0(1232, true)
	f.Add(mustPack(f, edns), true)
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c}, false)
	s, _ := newTestServer(f, Config{})
	f.Fuzz(func(t *testing.T, packet []byte, tcp bool) {
		proto := "udp"
		if tcp {
			proto = "tcp"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		out := s.handle(ctx, packet, testClient, proto)
		if out == nil {
			return
		}
		if len(packet) < headerLen {
			t.Fatalf("replied to %d bytes", len(packet))
		}
		if req := new(dns.Msg); proto == "udp" && req.Unpack(packet) == nil {
			size := 512
			if opt := req.IsEdns0(); opt != nil {
				size = max(size, int(opt.UDPSize()))
			}
			if len(out) > size {
				t.Fatalf("a reply of %d bytes to a client that takes %d", len(out), size)
			}
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(out); err != nil {
			t.Fatalf("reply %x does not parse: %v", out, err)
		}
		if !resp.Response || resp.Id != uint16(packet[0])<<8|uint16(packet[1]) {
			t.Fatalf("reply: response %v, id %#x", resp.Response, resp.Id)
		}
	})
}
