package networks

// The nftables table "vmctl" (family inet): one table of our own, built
// whole from the store's networks and plumbed endpoints and replaced in one
// netlink batch (add, delete, add again, fill), so that no packet ever
// sees half a ruleset and other tables are never touched.
//
//	chain prerouting  nat    hook prerouting  priority dstnat: jump published
//	chain output      nat    hook output      priority dstnat: jump published
//	chain published   (regular): from our bridges, return (the userland
//	                  proxy answers containers); DNAT of each published
//	                  port to its container: on the host address it names,
//	                  or on every local address but 127.0.0.0/8 (never
//	                  reachable from outside through a DNAT, moby#45610)
//	chain postrouting nat    hook postrouting priority srcnat:
//	                  masquerade what leaves a network's subnet by another
//	                  interface (not for internal networks)
//	chain forward     filter hook forward     priority filter, policy accept:
//	                  same-bridge accept; from one of our bridges to
//	                  another drop (isolation); internal networks drop in
//	                  and out; established accept; out of a network
//	                  accept; to a published port accept
//	chain isolation   (regular): to any of our bridges, drop
//
// Without the userland proxy (RuleOptions.KernelPorts, dockerd's
// --userland-proxy=false) the kernel carries what the proxy would:
//
//	chain published   no return for our bridges: a container reaching a
//	                  published port through the host is DNATed too
//	chain output      also jump loopback
//	chain loopback    (regular, from output only): DNAT of the ports
//	                  published on 127.0.0.0/8 (all addresses, or a
//	                  loopback one): the host's own connections, which
//	                  leave by a bridge with a loopback source, allowed by
//	                  route_localnet on the bridges (Host.EnsureBridge)
//	chain postrouting also masquerade a DNATed connection that leaves by
//	                  a bridge from a loopback source, or from the
//	                  bridge's own subnet (hairpin; the input interface is
//	                  not known on this hook): the reply must come back
//	                  through the host to be translated back
//	chain forward     before isolation: a DNATed connection from a
//	                  non-internal bridge is accepted both ways (a
//	                  container reaching another network's published port)
//	chain guard       filter hook prerouting priority raw: from our
//	                  bridges, to 127.0.0.0/8, drop. route_localnet would
//	                  otherwise let a container reach the host's loopback
//	                  services (CVE-2020-8558 hit kube-proxy the same way);
//	                  replies to the host's DNATed connections come
//	                  addressed to the gateway and are untranslated after
//	                  this hook, so they pass
//
// An accept here ends the packet's walk through this table only: another
// table's base chain on the same hook (a FORWARD policy drop, as docker
// sets) still drops it. ForwardBlockers reports such chains.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table the engine owns (family inet).
const TableName = "vmctl"

// table is the engine's table.
var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// Rule is one rule of a chain as built, with the comment that names its
// purpose (kept in the rule's user data, as nft shows comments).
type Rule struct {
	Comment string
	Exprs   []expr.Any
}

// Chain is one chain of the table as built.
type Chain struct {
	Name     string
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
	Rules    []Rule
}

// RuleOptions are the daemon's choices the ruleset follows.
type RuleOptions struct {
	// KernelPorts is dockerd's --userland-proxy=false: published ports are
	// carried by DNAT alone, from the host's loopback and between
	// containers too (see the table's description above).
	KernelPorts bool
}

// loopbackNet is 127.0.0.0/8.
var loopbackNet = netip.MustParsePrefix("127.0.0.0/8")

// Ruleset builds the table's chains for the networks and endpoints (only
// the plumbed endpoints' published ports count). It is a pure function of
// its input; ApplyRules loads its result.
func Ruleset(nets []Network, eps []Endpoint, o RuleOptions) []Chain {
	nets = append([]Network(nil), nets...)
	sort.Slice(nets, func(i, j int) bool { return nets[i].Bridge < nets[j].Bridge })
	byID := map[string]*Network{}
	for i := range nets {
		byID[nets[i].ID] = &nets[i]
	}
	type published struct {
		bridge string
		ip     netip.Addr
		p      PortBinding
		who    string
	}
	var pub []published
	for _, e := range eps {
		n := byID[e.NetworkID]
		if n == nil || !e.Plumbed() || n.Internal {
			continue
		}
		for _, p := range e.Ports {
			pub = append(pub, published{n.Bridge, e.IP, p, short(e.ContainerID)})
		}
	}
	sort.SliceStable(pub, func(i, j int) bool {
		a, b := pub[i], pub[j]
		if a.p.HostPort != b.p.HostPort {
			return a.p.HostPort < b.p.HostPort
		}
		return a.p.Proto < b.p.Proto
	})

	var publishedRules, loopback, post, fwd, iso, guard []Rule
	for _, n := range nets {
		if !o.KernelPorts {
			publishedRules = append(publishedRules, Rule{"from " + n.Bridge + ": proxied", exprs(iifname(n.Bridge), verdict(expr.VerdictReturn))})
		}
		iso = append(iso, Rule{"to " + n.Bridge, exprs(oifname(n.Bridge), verdict(expr.VerdictDrop))})
		if !n.Internal {
			post = append(post, Rule{"masquerade " + n.Name, exprs(ipv4(), saddrIn(n.Subnet), oifnameNot(n.Bridge), []expr.Any{&expr.Masq{}})})
		}
		if o.KernelPorts {
			guard = append(guard, Rule{"from " + n.Bridge + ": not to loopback", exprs(ipv4(), iifname(n.Bridge), daddrIn(loopbackNet), verdict(expr.VerdictDrop))})
			post = append(post,
				Rule{"published, from loopback, to " + n.Bridge, exprs(ipv4(), oifname(n.Bridge), ctDNAT(), saddrIn(loopbackNet), []expr.Any{&expr.Masq{}})},
				Rule{"published, hairpin on " + n.Bridge, exprs(ipv4(), saddrIn(n.Subnet), oifname(n.Bridge), ctDNAT(), []expr.Any{&expr.Masq{}})})
		}
	}
	for _, n := range nets {
		fwd = append(fwd, Rule{"within " + n.Bridge, exprs(iifname(n.Bridge), oifname(n.Bridge), verdict(expr.VerdictAccept))})
	}
	for _, n := range nets {
		if n.Internal {
			fwd = append(fwd,
				Rule{"internal " + n.Name + ": nothing out", exprs(iifname(n.Bridge), verdict(expr.VerdictDrop))},
				Rule{"internal " + n.Name + ": nothing in", exprs(oifname(n.Bridge), verdict(expr.VerdictDrop))})
		}
	}
	if o.KernelPorts {
		for _, n := range nets {
			if !n.Internal {
				fwd = append(fwd, Rule{"published, from " + n.Bridge + " through the host", exprs(iifname(n.Bridge), ctDNAT(), verdict(expr.VerdictAccept))})
			}
		}
	}
	for _, n := range nets {
		fwd = append(fwd, Rule{"isolate " + n.Bridge, exprs(iifname(n.Bridge), jump("isolation"))})
	}
	fwd = append(fwd, Rule{"established", exprs(ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))})
	for _, n := range nets {
		if !n.Internal {
			fwd = append(fwd, Rule{"out of " + n.Bridge, exprs(iifname(n.Bridge), verdict(expr.VerdictAccept))})
		}
	}
	for _, b := range pub {
		what := fmt.Sprintf("%s %s:%d for %s", b.p.Proto, b.ip, b.p.ContainerPort, b.who)
		fwd = append(fwd, Rule{"published " + what, exprs(ipv4(), oifname(b.bridge), daddrIs(b.ip), l4proto(b.p.Proto), dport(b.p.ContainerPort), verdict(expr.VerdictAccept))})
		host := "0.0.0.0"
		if b.p.HostIP.IsValid() {
			host = b.p.HostIP.String()
		}
		tail := [][]expr.Any{l4proto(b.p.Proto), dport(b.p.HostPort), dnat(b.ip, b.p.ContainerPort)}
		comment := fmt.Sprintf("%s:%d -> %s", host, b.p.HostPort, what)
		switch {
		case b.p.HostIP.IsValid() && b.p.HostIP.IsLoopback():
			// Only the host itself reaches a loopback address: the userland
			// proxy serves it, or the loopback chain, never prerouting.
			if o.KernelPorts {
				loopback = append(loopback, Rule{comment, exprs(append([][]expr.Any{ipv4(), daddrIs(b.p.HostIP)}, tail...)...)})
			}
		case b.p.HostIP.IsValid() && !b.p.HostIP.IsUnspecified():
			publishedRules = append(publishedRules, Rule{comment, exprs(append([][]expr.Any{ipv4(), daddrIs(b.p.HostIP)}, tail...)...)})
		default:
			publishedRules = append(publishedRules, Rule{comment, exprs(append([][]expr.Any{ipv4(), daddrNotIn(loopbackNet), localDaddr()}, tail...)...)})
			if o.KernelPorts {
				loopback = append(loopback, Rule{fmt.Sprintf("127.0.0.0/8:%d -> %s", b.p.HostPort, what), exprs(append([][]expr.Any{ipv4(), daddrIn(loopbackNet)}, tail...)...)})
			}
		}
	}
	output := []Rule{{"published ports", exprs(jump("published"))}}
	chains := []Chain{
		{Name: "published", Rules: publishedRules},
		{Name: "isolation", Rules: iso},
	}
	if o.KernelPorts {
		output = append(output, Rule{"published ports on loopback", exprs(jump("loopback"))})
		chains = append(chains, Chain{Name: "loopback", Rules: loopback},
			Chain{Name: "guard", Type: nftables.ChainTypeFilter, Hook: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Rules: guard})
	}
	return append(chains,
		Chain{Name: "prerouting", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
			Rules: []Rule{{"published ports", exprs(jump("published"))}}},
		Chain{Name: "output", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Rules: output},
		Chain{Name: "postrouting", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Rules: post},
		Chain{Name: "forward", Type: nftables.ChainTypeFilter, Hook: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Rules: fwd},
	)
}

// nft opens an nftables connection on the calling process's namespace.
func nft() (*nftables.Conn, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// ApplyRules replaces the engine's table with chains, atomically.
func (h *Host) ApplyRules(chains []Chain) error {
	c, err := nft()
	if err != nil {
		return err
	}
	// Adding first makes the delete valid whether or not the table
	// exists; the kernel applies the batch as one transaction.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	accept := nftables.ChainPolicyAccept
	made := map[string]*nftables.Chain{}
	for _, ch := range chains {
		nc := &nftables.Chain{Name: ch.Name, Table: table, Type: ch.Type, Hooknum: ch.Hook, Priority: ch.Priority}
		if ch.Hook != nil {
			nc.Policy = &accept
		}
		made[ch.Name] = c.AddChain(nc)
	}
	for _, ch := range chains {
		for _, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: made[ch.Name], Exprs: r.Exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("loading nftables table %s: %w", TableName, err)
	}
	return nil
}

// DeleteRules removes the engine's table, if it exists.
func (h *Host) DeleteRules() error {
	c, err := nft()
	if err != nil {
		return err
	}
	c.AddTable(table)
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing nftables table %s: %w", TableName, err)
	}
	return nil
}

// LoadedRule is a rule as the kernel has it.
type LoadedRule struct {
	Chain   string
	Comment string
	Exprs   []expr.Any
}

// LoadedRules reads the engine's table back from the kernel, chain by
// chain (in the kernel's order); nil if there is no table.
func (h *Host) LoadedRules() ([]LoadedRule, error) {
	c, err := nft()
	if err != nil {
		return nil, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var out []LoadedRule
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != TableName {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return nil, fmt.Errorf("listing rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			out = append(out, LoadedRule{Chain: ch.Name, Comment: comment, Exprs: r.Exprs})
		}
	}
	return out, nil
}

// HasTable reports whether the engine's table exists.
func (h *Host) HasTable() (bool, error) {
	c, err := nft()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("listing nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

// ForwardBlocker is a base chain of another table, on the forward hook,
// whose policy drops: packets our table accepts are still dropped there
// unless that chain accepts them.
type ForwardBlocker struct {
	Family string
	Table  string
	Chain  string
}

func (b ForwardBlocker) String() string {
	return fmt.Sprintf("table %s %s, chain %s: policy drop", b.Family, b.Table, b.Chain)
}

// ForwardBlockers finds other tables' forward chains with policy drop
// (docker's "filter" table sets one; so do many host firewalls). Rules
// made by iptables-legacy are not nftables and are not seen.
func (h *Host) ForwardBlockers() ([]ForwardBlocker, error) {
	c, err := nft()
	if err != nil {
		return nil, err
	}
	var out []ForwardBlocker
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyINet} {
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return nil, fmt.Errorf("listing nftables chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table == nil || (fam == nftables.TableFamilyINet && ch.Table.Name == TableName) {
				continue
			}
			if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
				continue
			}
			out = append(out, ForwardBlocker{Family: familyName(fam), Table: ch.Table.Name, Chain: ch.Name})
		}
	}
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprint(f)
}

// IsPermission reports whether err is the kernel refusing a change to a
// process without CAP_NET_ADMIN.
func IsPermission(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// Expressions. Register 1 holds what is compared; NAT uses 1 and 2.

// exprs joins matches and statements into one rule's expressions.
func exprs(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ifnameData(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func metaCmp(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: data}}
}

func iifname(n string) []expr.Any { return metaCmp(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameData(n)) }
func oifname(n string) []expr.Any { return metaCmp(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameData(n)) }

func oifnameNot(n string) []expr.Any {
	return metaCmp(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifnameData(n))
}

func ipv4() []expr.Any {
	return metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
}

func l4proto(proto string) []expr.Any {
	p := byte(unix.IPPROTO_TCP)
	if proto == "udp" {
		p = unix.IPPROTO_UDP
	}
	return metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{p})
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(p)},
	}
}

func ipField(offset uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}
}

func prefixMatch(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	a := p.Masked().Addr().As4()
	return []expr.Any{
		ipField(offset),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: a[:]},
	}
}

func saddrIn(p netip.Prefix) []expr.Any    { return prefixMatch(12, p, expr.CmpOpEq) }
func daddrIn(p netip.Prefix) []expr.Any    { return prefixMatch(16, p, expr.CmpOpEq) }
func daddrNotIn(p netip.Prefix) []expr.Any { return prefixMatch(16, p, expr.CmpOpNeq) }

func daddrIs(a netip.Addr) []expr.Any {
	b := a.Unmap().As4()
	return []expr.Any{ipField(16), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]}}
}

// localDaddr: the destination is an address of this host (fib daddr
// type local).
func localDaddr() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)},
	}
}

func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is IPS_DST_NAT of enum ip_conntrack_status.
const ipsDstNAT = 1 << 5

// ctDNAT: the packet's connection was DNATed (ct status dnat), in either
// direction.
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func dnat(ip netip.Addr, port uint16) []expr.Any {
	b := ip.Unmap().As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.Immediate{Register: 2, Data: be16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}
