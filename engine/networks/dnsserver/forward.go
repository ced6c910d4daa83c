package dnsserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// forwardUpstream asks the client's own nameservers (Config.Upstreams),
// else the host's, in resolv.conf's order, as
// the client asked (UDP or TCP), within ForwardTimeout. A reply cut short
// (TC) over UDP goes back as it is: the client asks again over TCP, and
// that query is forwarded over TCP. SERVFAIL and REFUSED from one
// nameserver move on to the next, as the host's resolver does. nil when no
// nameserver answered.
func (s *Server) forwardUpstream(ctx context.Context, req *dns.Msg, client netip.AddrPort, proto string) *dns.Msg {
	var servers []netip.AddrPort
	if s.cfg.Upstreams != nil {
		for _, a := range s.cfg.Upstreams(client.Addr().Unmap()) {
			if a.Port() == 0 {
				a = netip.AddrPortFrom(a.Addr(), 53)
			}
			if a != s.cfg.Addr { // never to itself
				servers = append(servers, a)
			}
		}
	}
	if len(servers) == 0 {
		servers = s.upstreams.get()
	}
	if len(servers) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
	defer cancel()
	// A fresh ID towards the upstream: the client's is the client's
	// business, and a guessable one helps whoever spoofs answers.
	q := req.Copy()
	q.Id = dns.Id()
	var fallback *dns.Msg
	for _, server := range servers {
		if ctx.Err() != nil {
			break
		}
		r, err := s.exchange(ctx, q, server, proto)
		if err != nil {
			continue
		}
		r.Id = req.Id
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			if fallback == nil {
				fallback = r
			}
			continue
		}
		return r
	}
	return fallback
}

// exchange asks one server, and checks that the answer is to the question
// asked. Stop (ctx) ends it at once.
func (s *Server) exchange(ctx context.Context, q *dns.Msg, server netip.AddrPort, proto string) (*dns.Msg, error) {
	c := &dns.Client{
		Net:     proto,
		Timeout: s.cfg.UpstreamTimeout,
		// Read any datagram whole; handle cuts it to the client's size.
		UDPSize: dns.MaxMsgSize,
	}
	conn, err := c.DialContext(ctx, server.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil {
		return nil, err
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass {
		return nil, errWrongQuestion
	}
	return r, nil
}

var errWrongQuestion = errors.New("the upstream answered another question")

// maxNameservers is glibc's MAXNS: nameserver lines past the third are
// ignored by the host's resolver, and here.
const maxNameservers = 3

// upstreams are the nameservers of the host's resolv.conf, read again
// when it changes: the file is small, so it is read whole at most every
// recheck, and parsed when its bytes differ.
type upstreams struct {
	path string
	self netip.AddrPort // never forwarded to

	mu      sync.Mutex
	recheck time.Duration // guarded by mu, as are the fields below
	checked time.Time
	content []byte
	servers []netip.AddrPort
}

func newUpstreams(path string, self netip.AddrPort) *upstreams {
	u := &upstreams{path: path, self: self, recheck: 2 * time.Second}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked(time.Now())
	return u
}

func (u *upstreams) get() []netip.AddrPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now := time.Now(); now.Sub(u.checked) >= u.recheck {
		u.reloadLocked(now)
	}
	return u.servers
}

func (u *upstreams) reloadLocked(now time.Time) {
	u.checked = now
	content, _ := os.ReadFile(u.path) // missing: as empty
	if u.servers != nil && bytes.Equal(content, u.content) {
		return
	}
	u.content = content
	u.servers = nameservers(content, u.self)
}

// nameservers reads resolv.conf's nameserver lines (at most three, as
// glibc), leaving out self and unspecified addresses; with none, the
// host's resolver asks 127.0.0.1, and so does this. Never nil.
func nameservers(resolvConf []byte, self netip.AddrPort) []netip.AddrPort {
	var found []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(resolvConf))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && len(found) < maxNameservers {
			found = append(found, a)
		}
	}
	if len(found) == 0 {
		found = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	servers := []netip.AddrPort{}
	for _, a := range found {
		ap := netip.AddrPortFrom(a.Unmap(), 53)
		if a.IsUnspecified() || ap == self || slices.Contains(servers, ap) {
			continue
		}
		servers = append(servers, ap)
	}
	return servers
}
