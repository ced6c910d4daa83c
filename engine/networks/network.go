// Package networks is the host side of container networking: networks and
// their endpoints (the domain types), the addresses handed out on them
// (IPAM), their persistent store, and what a network is on the host: a
// Linux bridge with the gateway address, one tap per endpoint for the VM's
// virtio-net device, and one nftables table of our own ("vmctl") for
// masquerading, forwarding, isolation between networks and published
// ports.
//
// It does not know containers beyond their IDs and names, starts no VM,
// runs no proxy or DNS server and reports no events: the network service
// (engine/services/networksvc) drives it, and the container service drives
// that. Everything here is IPv4.
//
// Host changes act on the network namespace of the calling process: taps
// are created by opening /dev/net/tun, which always makes them in the
// opener's namespace, so a handle on another namespace could not keep them
// together with the bridges.
package networks

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"regexp"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// DriverBridge is the only network driver: a Linux bridge on this host.
const DriverBridge = "bridge"

// The default network, which exists from first use and cannot be removed.
const (
	DefaultName   = "bridge"
	DefaultBridge = "vmctl0"
)

// DefaultSubnet is the default network's subnet unless the daemon is told
// otherwise (--bip); its gateway is the first address.
var DefaultSubnet = netip.MustParsePrefix("172.30.0.0/16")

// Driver options a network understands (docker network create -o), under
// docker's names. Other options are kept and shown, as dockerd does.
const (
	OptionBridgeName = "com.docker.network.bridge.name"
	OptionMTU        = "com.docker.network.driver.mtu"
)

// DefaultMTU is a network's MTU unless it or the daemon says otherwise.
const DefaultMTU = 1500

// Network is one network: a bridge on the host with an IPv4 subnet.
type Network struct {
	// ID is 64 hex digits.
	ID     string `json:"id"`
	Name   string `json:"name"`
	Driver string `json:"driver"`
	// Bridge is the host interface: DefaultBridge for the default network,
	// "br-" and 12 hex digits of the ID otherwise, unless the bridge name
	// option chose one.
	Bridge  string       `json:"bridge"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	// IPRange, when set, is the part of Subnet that addresses are handed
	// out from (--ip-range, --fixed-cidr); a requested address may be
	// anywhere in Subnet.
	IPRange netip.Prefix `json:"ipRange,omitzero"`
	// Internal networks have no way out: no masquerade, and nothing is
	// forwarded between their bridge and any other interface.
	Internal bool              `json:"internal,omitempty"`
	MTU      int               `json:"mtu"`
	Labels   map[string]string `json:"labels,omitempty"`
	Options  map[string]string `json:"options,omitempty"`
	Created  time.Time         `json:"created"`
	// Default marks the default network ("bridge").
	Default bool `json:"default,omitempty"`
}

// ShortID is the first 12 hex digits of the ID.
func (n *Network) ShortID() string { return short(n.ID) }

// Pool is where the network's automatic addresses come from.
func (n *Network) Pool() netip.Prefix {
	if n.IPRange.IsValid() {
		return n.IPRange
	}
	return n.Subnet
}

// Endpoint is a container's attachment to a network: its address, made at
// create or connect and kept until the container is removed or
// disconnected, and, while the container runs, its tap.
type Endpoint struct {
	NetworkID     string
	ContainerID   string
	ContainerName string
	// Aliases are the extra DNS names of the container on this network.
	Aliases []string
	IP      netip.Addr
	MAC     net.HardwareAddr
	// StaticIP and StaticMAC say that the user asked for IP (--ip) and MAC
	// (--mac-address), rather than the engine choosing them.
	StaticIP, StaticMAC bool
	// Slot numbers the container's endpoints from 0, lowest free first: it
	// orders the guest's interfaces (eth<n> in slot order) and names the
	// tap.
	Slot int
	// Tap is the host tap while the container runs ("plumbed"); empty
	// otherwise.
	Tap string
	// Ports are the published ports with their host ports resolved, while
	// the container runs and this endpoint carries them (the container's
	// first endpoint on a network with a way out).
	Ports []PortBinding
}

// Plumbed reports whether the endpoint has its tap (the container runs).
func (e *Endpoint) Plumbed() bool { return e.Tap != "" }

// PortBinding publishes a container port on the host.
type PortBinding struct {
	// Proto is "tcp" or "udp".
	Proto string
	// HostIP is the host address to publish on; the zero Addr means every
	// address (0.0.0.0).
	HostIP netip.Addr
	// HostPort is the host port; 0 asks for an ephemeral one, chosen when
	// the container starts.
	HostPort      uint16
	ContainerPort uint16
}

// NewID returns a random 64-hex-digit network ID.
func NewID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // impossible on Linux
	}
	return hex.EncodeToString(b[:])
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// validName is a network name: what docker allows for container names,
// which keeps names usable in filters and as DNS labels' neighbours.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// predefined are docker's predefined network names; only "bridge" exists
// here, and none of them can be created or removed by a user.
var predefined = map[string]bool{"bridge": true, "host": true, "none": true}

// IsPredefined reports whether name is one of docker's predefined
// networks (bridge, host, none).
func IsPredefined(name string) bool { return predefined[name] }

// ValidateName checks the name of a network to create.
func ValidateName(name string) error {
	if predefined[name] {
		return errs.New(errdefs.ErrPermissionDenied, "operation is not permitted on predefined %s network", name)
	}
	if !validName.MatchString(name) {
		return errs.New(errdefs.ErrInvalidArgument, "invalid network name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 128 characters", name)
	}
	return nil
}

// validate checks a published port's protocol, ports and host address.
func (p PortBinding) validate() error {
	if p.Proto != "tcp" && p.Proto != "udp" {
		return errs.New(errdefs.ErrInvalidArgument, "invalid port protocol %q: want tcp or udp", p.Proto)
	}
	if p.ContainerPort == 0 {
		return errs.New(errdefs.ErrInvalidArgument, "invalid container port 0 in a port binding")
	}
	if p.HostIP.IsValid() && !p.HostIP.Unmap().Is4() {
		return errs.New(errdefs.ErrInvalidArgument, "invalid host address %s in a port binding: only IPv4 addresses can be published", p.HostIP)
	}
	return nil
}

// ValidatePorts checks port bindings: protocols, ports and host addresses.
func ValidatePorts(ports []PortBinding) error {
	for _, p := range ports {
		if err := p.validate(); err != nil {
			return err
		}
	}
	return nil
}
