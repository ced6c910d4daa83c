package networks

// Addresses: checking what a user asks for (docker network create's
// --subnet, --gateway, --ip-range; the daemon's --bip, --fixed-cidr,
// --default-address-pool), choosing a subnet for a network created
// without one, and handing out container addresses. These are pure
// functions; the store runs them inside its transactions.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// AddressPool is a range that subnets of Size bits are cut from for
// networks created without --subnet (dockerd's --default-address-pool).
type AddressPool struct {
	Base netip.Prefix
	Size int
}

// DefaultAddressPools are dockerd's: 172.17.0.0/16 to 172.31.0.0/16, then
// /20s of 192.168.0.0/16. Subnets that overlap another network or a route
// of the host are skipped, so a docker on the same host keeps its own and
// the default network's 172.30.0.0/16 is never handed out twice.
var DefaultAddressPools = defaultAddressPools()

func defaultAddressPools() []AddressPool {
	var pools []AddressPool
	for b := 17; b <= 31; b++ {
		pools = append(pools, AddressPool{Base: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(b), 0, 0}), 16), Size: 16})
	}
	return append(pools, AddressPool{Base: netip.MustParsePrefix("192.168.0.0/16"), Size: 20})
}

// ParseAddressPool parses dockerd's --default-address-pool value,
// "base=10.10.0.0/16,size=24".
func ParseAddressPool(s string) (AddressPool, error) {
	var p AddressPool
	var haveBase, haveSize bool
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "base":
			b, err := netip.ParsePrefix(v)
			if err != nil || !b.Addr().Is4() || b != b.Masked() {
				return p, errs.New(errdefs.ErrInvalidArgument, "invalid default address pool %q: base must be an IPv4 subnet such as 10.10.0.0/16", s)
			}
			p.Base, haveBase = b, true
		case "size":
			n, err := strconv.Atoi(v)
			if err != nil {
				return p, errs.New(errdefs.ErrInvalidArgument, "invalid default address pool %q: size must be a prefix length such as 24", s)
			}
			p.Size, haveSize = n, true
		default:
			return p, errs.New(errdefs.ErrInvalidArgument, "invalid default address pool %q: want base=SUBNET,size=BITS", s)
		}
	}
	if !haveBase || !haveSize {
		return p, errs.New(errdefs.ErrInvalidArgument, "invalid default address pool %q: want base=SUBNET,size=BITS", s)
	}
	if p.Size < p.Base.Bits() || p.Size > maxSubnetBits {
		return p, errs.New(errdefs.ErrInvalidArgument, "invalid default address pool %q: size must be from %d to %d", s, p.Base.Bits(), maxSubnetBits)
	}
	return p, nil
}

// maxSubnetBits is the smallest subnet a network can have: a network
// address, a gateway, one container and a broadcast address.
const maxSubnetBits = 30

// DaemonOptions are the daemon's networking flags, as dockerd's.
type DaemonOptions struct {
	// BIP is the default network's gateway address and prefix
	// ("172.30.0.1/16"); empty keeps the stored one (DefaultSubnet at
	// first use).
	BIP string
	// FixedCIDR limits the default network's automatic addresses to a
	// part of its subnet.
	FixedCIDR string
	// AddressPools are cut into subnets for networks created without one;
	// nil means DefaultAddressPools.
	AddressPools []AddressPool
	// MTU is the default network's MTU, and every network's unless its
	// own option says otherwise; 0 means DefaultMTU.
	MTU int
	// KernelPorts is dockerd's --userland-proxy=false: published ports are
	// carried by DNAT alone (RuleOptions.KernelPorts).
	KernelPorts bool
}

// CreateOptions is what a user asks for (docker network create), as typed.
type CreateOptions struct {
	Name   string
	Driver string
	// Subnet, Gateway and IPRange are empty unless given.
	Subnet, Gateway, IPRange string
	Internal                 bool
	Labels                   map[string]string
	Options                  map[string]string
}

// addressing is a checked subnet, gateway and range.
type addressing struct {
	subnet  netip.Prefix
	gateway netip.Addr
	ipRange netip.Prefix
}

// parseAddressing checks --subnet, --gateway and --ip-range with dockerd's
// messages. An empty subnet is allowed (one is chosen later) only without
// a gateway or range, which need a subnet to belong to.
func parseAddressing(subnet, gateway, ipRange string) (addressing, error) {
	var a addressing
	if subnet == "" {
		if gateway != "" || ipRange != "" {
			return a, errs.New(errdefs.ErrInvalidArgument, "invalid network config: a gateway or ip-range needs a subnet (--subnet)")
		}
		return a, nil
	}
	var problems []string
	s, err := netip.ParsePrefix(subnet)
	if err != nil {
		return a, invalidConfig(fmt.Sprintf("invalid subnet %s: invalid CIDR block notation", subnet))
	}
	if !s.Addr().Is4() {
		return a, invalidConfig(fmt.Sprintf("invalid subnet %s: only IPv4 subnets are supported", subnet))
	}
	if s != s.Masked() {
		problems = append(problems, fmt.Sprintf("invalid subnet %s: it should be %s", s, s.Masked()))
	}
	if s.Bits() > maxSubnetBits {
		problems = append(problems, fmt.Sprintf("invalid subnet %s: it holds no address for a container besides the gateway (at most /%d)", s, maxSubnetBits))
	}
	s = s.Masked()
	a.subnet = s
	if ipRange != "" {
		r, err := netip.ParsePrefix(ipRange)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("invalid ip-range %s: invalid CIDR block notation", ipRange))
		case !r.Addr().Is4():
			problems = append(problems, fmt.Sprintf("invalid ip-range %s: parent subnet is an IPv4 block", ipRange))
		default:
			if r.Bits() < s.Bits() {
				problems = append(problems, fmt.Sprintf("invalid ip-range %s: CIDR block is bigger than its parent subnet %s", ipRange, s))
			}
			if r != r.Masked() {
				problems = append(problems, fmt.Sprintf("invalid ip-range %s: it should be %s", r, r.Masked()))
			}
			if !s.Overlaps(r) {
				problems = append(problems, fmt.Sprintf("invalid ip-range %s: parent subnet %s doesn't contain ip-range", ipRange, s))
			}
			a.ipRange = r.Masked()
		}
	}
	if gateway != "" {
		g, err := netip.ParseAddr(gateway)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("invalid gateway %s: invalid address", gateway))
		case !g.Is4():
			problems = append(problems, fmt.Sprintf("invalid gateway %s: parent subnet is an IPv4 block", gateway))
		case !s.Contains(g):
			problems = append(problems, fmt.Sprintf("invalid gateway %s: parent subnet %s doesn't contain this address", gateway, s))
		case g == s.Addr() || g == lastAddr(s):
			problems = append(problems, fmt.Sprintf("invalid gateway %s: it is the network or broadcast address of %s", gateway, s))
		default:
			a.gateway = g
		}
	}
	if len(problems) > 0 {
		return addressing{}, invalidConfig(problems...)
	}
	if !a.gateway.IsValid() {
		a.gateway = s.Addr().Next()
	}
	if a.ipRange.IsValid() && !hasFree(a.subnet, a.ipRange, a.gateway) {
		return addressing{}, invalidConfig(fmt.Sprintf("invalid ip-range %s: it holds no address for a container besides the network, broadcast and gateway addresses", a.ipRange))
	}
	return a, nil
}

// invalidConfig is dockerd's "invalid network config" error, its problems
// on one line.
func invalidConfig(problems ...string) error {
	return errs.New(errdefs.ErrInvalidArgument, "invalid network config: %s", strings.Join(problems, "; "))
}

// chooseSubnet returns the first subnet of the pools that overlaps none of
// taken (other networks' subnets, the host's routes and addresses).
func chooseSubnet(pools []AddressPool, taken []netip.Prefix) (netip.Prefix, error) {
	for _, p := range pools {
		step := uint64(1) << (32 - p.Size)
		first := uint64(u32(p.Base.Addr()))
		end := first + uint64(1)<<(32-p.Base.Bits())
		for a := first; a < end; a += step {
			cand := netip.PrefixFrom(addrOf(uint32(a)), p.Size)
			if !overlapsAny(cand, taken) {
				return cand, nil
			}
		}
	}
	return netip.Prefix{}, errs.New(errdefs.ErrUnavailable,
		"could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if q.IsValid() && p.Overlaps(q) {
			return true
		}
	}
	return false
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// lastAddr is the broadcast address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	return addrOf(u32(p.Addr()) | (uint32(1)<<(32-p.Bits()) - 1))
}

// reserved reports whether a is never handed to a container on the
// subnet: its network and broadcast addresses and the gateway.
func reserved(subnet netip.Prefix, gateway, a netip.Addr) bool {
	return a == subnet.Addr() || a == lastAddr(subnet) || a == gateway
}

// hasFree reports whether pool holds an address that is not reserved.
func hasFree(subnet, pool netip.Prefix, gateway netip.Addr) bool {
	lo, hi := u32(pool.Addr()), u32(lastAddr(pool))
	for v := uint64(lo); v <= uint64(hi); v++ {
		a := addrOf(uint32(v))
		if subnet.Contains(a) && !reserved(subnet, gateway, a) {
			return true
		}
	}
	return false
}

// nextFree returns the first address of the network's pool after last (in
// the pool's order, wrapping around) that is neither reserved nor taken:
// next fit, so that an address just released is not handed out again at
// once while a peer may still have its old MAC in its ARP cache.
func nextFree(n *Network, last netip.Addr, taken func(netip.Addr) bool) (netip.Addr, bool) {
	pool := n.Pool()
	lo, hi := uint64(u32(pool.Addr())), uint64(u32(lastAddr(pool)))
	size := hi - lo + 1
	start := uint64(0)
	if last.IsValid() && last.Is4() && pool.Contains(last) {
		start = uint64(u32(last)) - lo + 1
	}
	for i := uint64(0); i < size; i++ {
		a := addrOf(uint32(lo + (start+i)%size))
		if !n.Subnet.Contains(a) || reserved(n.Subnet, n.Gateway, a) || taken(a) {
			continue
		}
		return a, true
	}
	return netip.Addr{}, false
}

// checkRequested checks an address the user asked for (--ip): it must be
// in the subnet (anywhere, not only the range, as dockerd allows) and not
// reserved.
func checkRequested(n *Network, a netip.Addr) error {
	if !a.Is4() || !n.Subnet.Contains(a) {
		return errs.New(errdefs.ErrInvalidArgument, "no configured subnet or ip-range contain the IP address %s", a)
	}
	if a == n.Gateway {
		return errs.New(errdefs.ErrConflict, "Address already in use: %s is the gateway of network %s", a, n.Name)
	}
	if reserved(n.Subnet, n.Gateway, a) {
		return errs.New(errdefs.ErrInvalidArgument, "invalid address %s: it is the network or broadcast address of %s", a, n.Subnet)
	}
	return nil
}

// MACFor is the MAC an endpoint gets unless the user chose one: dockerd's
// scheme, 02:42 (locally administered) followed by the IPv4 address, so
// that it is unique wherever the address is.
func MACFor(ip netip.Addr) []byte {
	b := ip.As4()
	return []byte{0x02, 0x42, b[0], b[1], b[2], b[3]}
}
