package containers

import "net/netip"

// Network modes a container record can hold besides a network's name or
// ID (HostConfig.NetworkMode).
const (
	// NetworkDefault and NetworkBridge put the container on the default
	// network; docker clients send "default" when the user named none.
	NetworkDefault = "default"
	NetworkBridge  = "bridge"
	// NetworkNone gives the container loopback only.
	NetworkNone = "none"
)

// NetworkConfig is what a container asked of the network at create: the
// API's HostConfig and Config fields that inspect shows back as they were
// asked. Which networks the container is on, with which addresses, is the
// network service's to know (its endpoints), since connect and disconnect
// change it after create.
type NetworkConfig struct {
	// Mode is HostConfig.NetworkMode as the user gave it: NetworkDefault,
	// NetworkBridge, NetworkNone, or a network's name or ID.
	Mode string `json:"mode"`
	// PortBindings are the ports published on the host (docker run -p), in
	// the order asked; HostPort 0 is a port the engine chooses at start.
	PortBindings []PortBinding `json:"portBindings,omitempty"`
	// PublishAll publishes every exposed port on a port the engine chooses
	// (docker run -P).
	PublishAll bool `json:"publishAll,omitempty"`
	// ExposedPorts are the container's exposed ports, the create's and the
	// image's (EXPOSE) together, sorted by port and protocol.
	ExposedPorts []Port `json:"exposedPorts,omitempty"`
	// DNS, DNSSearch and DNSOptions make the container's resolv.conf
	// (docker run --dns, --dns-search, --dns-option).
	DNS        []string `json:"dns,omitempty"`
	DNSSearch  []string `json:"dnsSearch,omitempty"`
	DNSOptions []string `json:"dnsOptions,omitempty"`
	// ExtraHosts are "name:address" lines added to the container's
	// /etc/hosts (docker run --add-host); the address "host-gateway" means
	// the gateway of the container's first network.
	ExtraHosts []string `json:"extraHosts,omitempty"`
	// MacAddress is the address asked for the first network's interface
	// (Config.MacAddress), empty when the engine chose it.
	MacAddress string `json:"macAddress,omitempty"`
}

// NetworkMode is the container's HostConfig.NetworkMode: the mode it was
// created with, or NetworkNone for records of versions before networking,
// whose containers had loopback only.
func (c *Config) NetworkMode() string {
	if c.Network == nil || c.Network.Mode == "" {
		return NetworkNone
	}
	return c.Network.Mode
}

// Port is a container port with its protocol, "tcp" or "udp".
type Port struct {
	Port  uint16 `json:"port"`
	Proto string `json:"proto"`
}

// PortBinding publishes a container port on the host. Its fields are the
// network domain's (networks.PortBinding), in the same order, so that one
// converts to the other.
type PortBinding struct {
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
	// HostIP is the host address to publish on; the zero Addr means every
	// address.
	HostIP netip.Addr `json:"hostIp,omitzero"`
	// HostPort is the host port; 0 asks for one chosen at start.
	HostPort      uint16 `json:"hostPort,omitempty"`
	ContainerPort uint16 `json:"containerPort"`
}
