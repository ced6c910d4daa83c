package dnsserver

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

const headerLen = 12

// ednsSize is the UDP payload size the server offers in its own answers
// (the DNS flag day 2020 value, which avoids IP fragmentation).
const ednsSize = 1232

// handle answers one query, packed, from client over proto ("udp" or
// "tcp"), forwarding it if need be; nil when nothing is to be sent back.
func (s *Server) handle(ctx context.Context, query []byte, client netip.AddrPort, proto string) []byte {
	reply, fwd := s.respond(query, client, proto)
	if fwd != nil {
		return s.respondForwarded(ctx, fwd, client, proto)
	}
	return reply
}

// respond parses a query and answers it, packed, if the server can do so
// without the upstream nameservers; otherwise it returns the parsed query
// to forward, and no reply. Both are nil when nothing is to be sent back.
func (s *Server) respond(query []byte, client netip.AddrPort, proto string) ([]byte, *dns.Msg) {
	req := new(dns.Msg)
	if err := req.Unpack(query); err != nil {
		return formatError(query), nil
	}
	if req.Response {
		// Never answer an answer: two servers would bounce it forever.
		return nil, nil
	}
	resp := s.answer(req, client)
	if resp == nil {
		return nil, req
	}
	return pack(req, resp, proto), nil
}

// respondForwarded forwards req and packs the upstream's answer, or
// SERVFAIL when none came.
func (s *Server) respondForwarded(ctx context.Context, req *dns.Msg, client netip.AddrPort, proto string) []byte {
	resp := s.forward(ctx, req, client, proto)
	if resp == nil {
		resp = reply(req, dns.RcodeServerFailure)
	}
	return pack(req, resp, proto)
}

// pack packs resp, the answer to req, cut to what the client takes over
// proto.
func pack(req, resp *dns.Msg, proto string) []byte {
	size := dns.MaxMsgSize
	if proto == "udp" {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	}
	// Too long for the client's buffer: cut, with the TC bit, and the
	// client asks again over TCP.
	resp.Truncate(size)
	out, err := resp.Pack()
	if err != nil {
		if out, err = reply(req, dns.RcodeServerFailure).Pack(); err != nil {
			return nil
		}
	}
	return out
}

// formatError is the FORMERR answer to a query that does not parse, if its
// header reads as a query's.
func formatError(query []byte) []byte {
	if len(query) < headerLen {
		return nil
	}
	flags := binary.BigEndian.Uint16(query[2:4])
	if flags&(1<<15) != 0 { // QR: a response
		return nil
	}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{
		Id:       binary.BigEndian.Uint16(query[0:2]),
		Response: true,
		Opcode:   int(flags>>11) & 0xf,
		Rcode:    dns.RcodeFormatError,
	}}
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	return out
}

// answer is the reply to a well-formed query that the server gives
// without the upstream nameservers; nil for a query to forward.
func (s *Server) answer(req *dns.Msg, client netip.AddrPort) *dns.Msg {
	if s.cfg.Clients.IsValid() && !s.cfg.Clients.Contains(client.Addr().Unmap()) {
		return reply(req, dns.RcodeRefused)
	}
	if req.Opcode != dns.OpcodeQuery {
		return reply(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return reply(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	if q.Qclass == dns.ClassINET || q.Qclass == dns.ClassANY {
		if resp := s.answerLocal(req, q); resp != nil {
			return resp
		}
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return reply(req, dns.RcodeNotImplemented)
	}
	return nil
}

// reply is an answer without records, with rcode.
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg).SetRcode(req, rcode)
	m.RecursionAvailable = true
	if req.IsEdns0() != nil && rcode != dns.RcodeFormatError {
		m.SetEdns0(ednsSize, false)
	}
	return m
}

// answerLocal answers q from the network's names; nil for a name the
// network does not know.
func (s *Server) answerLocal(req *dns.Msg, q dns.Question) *dns.Msg {
	name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
	if name == "" {
		return nil
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: uint32(s.cfg.TTL.Seconds())}
	if q.Qtype == dns.TypePTR {
		addr, ok := parseReverseName(name)
		if !ok || s.cfg.Reverse == nil {
			return nil
		}
		var answers []dns.RR
		for _, n := range s.cfg.Reverse(addr) {
			if _, ok := dns.IsDomainName(n); !ok || n == "" {
				continue
			}
			hdr.Rrtype = dns.TypePTR
			answers = append(answers, &dns.PTR{Hdr: hdr, Ptr: dns.Fqdn(n)})
		}
		if len(answers) == 0 {
			return nil
		}
		resp := reply(req, dns.RcodeSuccess)
		resp.Answer = answers
		return resp
	}
	addrs := s.cfg.Lookup(name)
	if len(addrs) == 0 {
		return nil
	}
	resp := reply(req, dns.RcodeSuccess)
	for _, a := range addrs {
		switch {
		case a.Is4() || a.Is4In6():
			if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
				hdr.Rrtype = dns.TypeA
				ip := a.Unmap().As4()
				resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr, A: ip[:]})
			}
		case a.Is6():
			if q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY {
				hdr.Rrtype = dns.TypeAAAA
				ip := a.As16()
				resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip[:]})
			}
		}
	}
	// Several containers under one alias: round robin, as docker's.
	rand.Shuffle(len(resp.Answer), func(i, j int) { resp.Answer[i], resp.Answer[j] = resp.Answer[j], resp.Answer[i] })
	return resp
}

// parseReverseName reads the address of a reverse name,
// "4.3.2.1.in-addr.arpa" or the 32 nibbles of an ip6.arpa name (lower
// case, without the final dot); false for anything else, such as the name
// of a whole reverse zone.
func parseReverseName(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var ip [4]byte
		for i, l := range labels {
			if len(l) == 0 || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			ip[3-i] = byte(v)
		}
		return netip.AddrFrom4(ip), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		// 32 one-digit labels: 63 characters.
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var ip [16]byte
		for i := range 32 {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			v, ok := hexNibble(c)
			if !ok {
				return netip.Addr{}, false
			}
			// Nibble i counts from the address's last nibble.
			pos := 31 - i
			if pos%2 == 0 {
				ip[pos/2] |= v << 4
			} else {
				ip[pos/2] |= v
			}
		}
		return netip.AddrFrom16(ip), true
	}
	return netip.Addr{}, false
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
