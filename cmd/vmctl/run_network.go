package main

// run's and create's network flags, turned into the create request the
// docker CLI sends for the same flags. The values are checked here with
// the docker CLI's own validators (github.com/docker/cli/opts), so that a
// typo gets docker's message before anything is created; the engine
// checks them again.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/docker/cli/opts"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/spf13/pflag"
)

type networkOptions struct {
	network, net []string // --network and its old name --net
	ip           string
	aliases      []string
	publish      []string
	publishAll   bool
	expose       []string
	dns          []string
	dnsSearch    []string
	dnsOptions   []string
	dnsOpt       []string // --dns-opt, docker's old name of --dns-option
	addHosts     []string
	mac          string
}

func (n *networkOptions) addFlags(f *pflag.FlagSet) {
	f.StringArrayVar(&n.network, "network", nil, `connect the container to a network: "bridge" (the default network), "none" (loopback only), or a network's name or ID`)
	f.StringArrayVar(&n.net, "net", nil, "same as --network")
	f.StringVar(&n.ip, "ip", "", "IPv4 address on the network (e.g. 172.30.100.104); user-defined networks only")
	f.StringArrayVar(&n.aliases, "network-alias", nil, "add a DNS name for the container on its network; user-defined networks only")
	f.StringArrayVarP(&n.publish, "publish", "p", nil, "publish a container port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], or ranges (8000-8001:80-81)")
	f.BoolVarP(&n.publishAll, "publish-all", "P", false, "publish every exposed port on a host port the engine chooses")
	f.StringArrayVar(&n.expose, "expose", nil, "expose a port or a range of ports: PORT[-PORT][/PROTO]")
	f.StringArrayVar(&n.dns, "dns", nil, "set a DNS server for the container")
	f.StringArrayVar(&n.dnsSearch, "dns-search", nil, "set a DNS search domain")
	f.StringArrayVar(&n.dnsOptions, "dns-option", nil, "set a DNS resolver option (e.g. ndots:2)")
	f.StringArrayVar(&n.dnsOpt, "dns-opt", nil, "same as --dns-option")
	f.StringArrayVar(&n.addHosts, "add-host", nil, "add a line to the container's /etc/hosts: HOST:IP (IP may be host-gateway)")
	f.StringVar(&n.mac, "mac-address", "", "MAC address of the container's interface (e.g. 92:d0:c6:0a:29:33)")
	// docker hides the old names too.
	f.MarkHidden("net")
	f.MarkHidden("dns-opt")
}

// apply sets the network fields of a create request: HostConfig's
// NetworkMode, PortBindings, PublishAllPorts, Dns, DnsSearch, DnsOptions
// and ExtraHosts, Config's ExposedPorts, and the endpoint settings of the
// container's network for --ip, --network-alias and --mac-address.
func (n *networkOptions) apply(req *client.ContainerCreateOptions) error {
	cfg, hc := req.Config, req.HostConfig
	// docker clients send "default" when no network is named.
	mode := network.NetworkDefault
	switch nets := append(append([]string(nil), n.network...), n.net...); len(nets) {
	case 0:
	case 1:
		if nets[0] == "" {
			return errors.New("invalid --network \"\": name a network, bridge or none")
		}
		mode = nets[0]
	default:
		return errors.New("a container joins one network when it is created: connect it to others with vmctl network connect")
	}
	hc.NetworkMode = container.NetworkMode(mode)

	exposed, bindings, err := parsePublish(n.publish, n.expose)
	if err != nil {
		return err
	}
	if len(exposed) > 0 {
		cfg.ExposedPorts = exposed
	}
	if len(bindings) > 0 {
		hc.PortBindings = bindings
	}
	hc.PublishAllPorts = n.publishAll

	for _, d := range n.dns {
		if _, err := opts.ValidateIPAddress(d); err != nil {
			return fmt.Errorf("invalid --dns %q: %w", d, err)
		}
		addr, err := netip.ParseAddr(strings.TrimSpace(d))
		if err != nil {
			return fmt.Errorf("invalid --dns %q: %w", d, err)
		}
		hc.DNS = append(hc.DNS, addr)
	}
	for _, s := range n.dnsSearch {
		v, err := opts.ValidateDNSSearch(s)
		if err != nil {
			return err
		}
		hc.DNSSearch = append(hc.DNSSearch, v)
	}
	hc.DNSOptions = append(append([]string(nil), n.dnsOptions...), n.dnsOpt...)
	for _, h := range n.addHosts {
		v, err := opts.ValidateExtraHost(h)
		if err != nil {
			return err
		}
		hc.ExtraHosts = append(hc.ExtraHosts, v)
	}

	var ep network.EndpointSettings
	if n.ip != "" {
		ip, err := netip.ParseAddr(n.ip)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("invalid IPv4 address: %s", n.ip)
		}
		ep.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: ip}
	}
	ep.Aliases = n.aliases
	if n.mac != "" {
		mac, err := net.ParseMAC(strings.TrimSpace(n.mac))
		if err != nil {
			return fmt.Errorf("%s is not a valid mac address", n.mac)
		}
		ep.MacAddress = network.HardwareAddr(mac)
	}
	if ep.IPAMConfig != nil || len(ep.Aliases) > 0 || ep.MacAddress != nil {
		req.NetworkingConfig = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{mode: &ep}}
	}
	return nil
}
