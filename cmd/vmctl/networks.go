package main

// docker network: create, ls, inspect, rm, prune, connect and disconnect,
// with docker's flags and output, over the engine's /networks endpoints.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/docker/cli/cli/command/formatter"
	"github.com/fvbommel/sortorder"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func newNetworkCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network COMMAND",
		Short: "Manage networks (host bridges the containers' VMs are attached to)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newNetworkCreateCommand(g), newNetworkLsCommand(g), newNetworkInspectCommand(g),
		newNetworkRmCommand(g), newNetworkPruneCommand(g), newNetworkConnectCommand(g), newNetworkDisconnectCommand(g))
	return cmd
}

// parseLabels parses repeated KEY=VALUE flags as docker's --label and -o
// do: a KEY alone has the empty value.
func parseLabels(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		if strings.TrimSpace(k) == "" {
			return nil, &statusError{code: 125, err: fmt.Errorf("invalid --%s %q: want KEY=VALUE", flag, kv)}
		}
		out[k] = v
	}
	return out, nil
}

type networkCreateOptions struct {
	driver                     string
	subnets, gateways, ipRange []string
	internal                   bool
	labels, opts               []string
}

func newNetworkCreateCommand(g *globalOptions) *cobra.Command {
	var o networkCreateOptions
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] NETWORK",
		Short: "Create a network: a host bridge with its own subnet and DNS names for its containers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := o.request()
			if err != nil {
				return &statusError{code: 125, err: err}
			}
			return g.onEngine("network create", false, func(r *remote) error {
				res, err := r.api.NetworkCreate(cmd.Context(), args[0], req)
				if err != nil {
					return r.fail(err)
				}
				for _, w := range res.Warning {
					fmt.Fprintln(os.Stderr, w)
				}
				fmt.Println(res.ID)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.driver, "driver", "d", "bridge", "network driver (only bridge)")
	f.StringArrayVar(&o.subnets, "subnet", nil, "IPv4 subnet in CIDR form (e.g. 172.28.0.0/16); default: a free one")
	f.StringArrayVar(&o.gateways, "gateway", nil, "gateway address in the subnet; default: its first address")
	f.StringArrayVar(&o.ipRange, "ip-range", nil, "hand out container addresses from this part of the subnet (CIDR)")
	f.BoolVar(&o.internal, "internal", false, "no way out: containers reach only each other")
	f.StringArrayVar(&o.labels, "label", nil, "set a label on the network: KEY=VALUE")
	f.StringArrayVarP(&o.opts, "opt", "o", nil, "driver option: com.docker.network.bridge.name=IFNAME, com.docker.network.driver.mtu=MTU")
	return cmd
}

// request checks the addresses as the docker CLI does (each gateway and
// range inside a subnet) and builds the create request.
func (o networkCreateOptions) request() (client.NetworkCreateOptions, error) {
	ipam, err := ipamConfig(o.subnets, o.ipRange, o.gateways)
	if err != nil {
		return client.NetworkCreateOptions{}, err
	}
	req := client.NetworkCreateOptions{
		Driver: o.driver, Internal: o.internal,
		IPAM: &network.IPAM{Driver: "default", Config: ipam, Options: map[string]string{}},
	}
	if req.Labels, err = parseLabels("label", o.labels); err != nil {
		return client.NetworkCreateOptions{}, err
	}
	if req.Options, err = parseLabels("opt", o.opts); err != nil {
		return client.NetworkCreateOptions{}, err
	}
	return req, nil
}

// ipamConfig pairs --subnet, --ip-range and --gateway: each range and
// gateway belongs to the subnet that contains it, one of each per subnet.
func ipamConfig(subnets, ranges, gateways []string) ([]network.IPAMConfig, error) {
	if len(subnets) < len(ranges) || len(subnets) < len(gateways) {
		return nil, errors.New("every ip-range or gateway must have a corresponding subnet")
	}
	out := make([]network.IPAMConfig, 0, len(subnets))
	for _, s := range subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("invalid subnet %s: want an address and a prefix length, as in 172.28.0.0/16", s)
		}
		for _, prev := range out {
			if prev.Subnet.Overlaps(p) {
				return nil, errors.New("multiple overlapping subnet configuration is not supported")
			}
		}
		out = append(out, network.IPAMConfig{Subnet: p})
	}
	for _, r := range ranges {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return nil, fmt.Errorf("invalid ip-range %s: want an address and a prefix length, as in 172.28.5.0/24", r)
		}
		i := slot(out, p.Addr())
		if i < 0 {
			return nil, fmt.Errorf("no matching subnet for range %s", r)
		}
		if out[i].IPRange.IsValid() {
			return nil, fmt.Errorf("cannot configure multiple ranges (%s, %s) on the same subnet (%s)", r, out[i].IPRange, out[i].Subnet)
		}
		out[i].IPRange = p
	}
	for _, g := range gateways {
		a, err := netip.ParseAddr(g)
		if err != nil {
			return nil, fmt.Errorf("invalid gateway %s: want an IP address", g)
		}
		i := slot(out, a)
		if i < 0 {
			return nil, fmt.Errorf("no matching subnet for gateway %s", g)
		}
		if out[i].Gateway.IsValid() {
			return nil, fmt.Errorf("cannot configure multiple gateways (%s, %s) for the same subnet (%s)", g, out[i].Gateway, out[i].Subnet)
		}
		out[i].Gateway = a
	}
	return out, nil
}

// slot is the index of the subnet that contains a, or -1.
func slot(cfgs []network.IPAMConfig, a netip.Addr) int {
	for i, c := range cfgs {
		if c.Subnet.Contains(a) {
			return i
		}
	}
	return -1
}

func newNetworkLsCommand(g *globalOptions) *cobra.Command {
	var quiet, noTrunc bool
	var filters []string
	var format string
	cmd := &cobra.Command{
		Use:     "ls [-q] [--filter KEY=VALUE] [--format TEMPLATE] [--no-trunc]",
		Aliases: []string{"list"},
		Short:   "List networks",
		Long: `List networks.

--filter takes docker's keys: name, id, label, driver, type (builtin or
custom), dangling (true or false). --format takes a Go template over
docker's fields (.ID, .Name, .Driver, .Scope, .IPv6, .Internal, .Labels,
.Label "key", .CreatedAt), "table TEMPLATE" for columns with headers, or
json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFilters(filters)
			if err != nil {
				return err
			}
			return g.onEngine("network ls", false, func(r *remote) error {
				res, err := r.api.NetworkList(cmd.Context(), client.NetworkListOptions{Filters: f})
				if err != nil {
					return r.fail(err)
				}
				return writeNetworks(os.Stdout, res.Items, format, quiet, noTrunc)
			})
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&quiet, "quiet", "q", false, "only display network IDs")
	fl.BoolVar(&noTrunc, "no-trunc", false, "do not truncate the output")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter output by KEY=VALUE (repeatable)")
	fl.StringVar(&format, "format", "", "format output with a Go template, \"table TEMPLATE\" or json")
	return cmd
}

func newNetworkInspectCommand(g *globalOptions) *cobra.Command {
	var format string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "inspect [-f TEMPLATE] NETWORK [NETWORK...]",
		Short: "Show networks' records as JSON, with the containers on them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.connect("network inspect", false)
			if err != nil {
				return err
			}
			defer r.Close()
			var objs []inspected
			failed := forEach(args, func(ref string) error {
				res, err := r.api.NetworkInspect(cmd.Context(), ref, client.NetworkInspectOptions{Verbose: verbose})
				if err != nil {
					return r.fail(err)
				}
				objs = append(objs, inspected{typed: res.Network, raw: res.Raw})
				return nil
			})
			if failed != nil && len(objs) == 0 && client.IsErrConnectionFailed(failed) {
				return failed
			}
			if err := writeInspect(os.Stdout, objs, format); err != nil {
				return err
			}
			return failed
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format each network with a Go template, or json")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "verbose output (accepted for docker's sake: a local network has nothing more to show)")
	return cmd
}

func newNetworkRmCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NETWORK [NETWORK...]",
		Aliases: []string{"remove"},
		Short:   "Remove networks (refused while containers are connected)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.connect("network rm", false)
			if err != nil {
				return err
			}
			defer r.Close()
			return forEach(args, func(ref string) error {
				if _, err := r.api.NetworkRemove(cmd.Context(), ref, client.NetworkRemoveOptions{}); err != nil {
					return r.fail(err)
				}
				fmt.Println(ref)
				return nil
			})
		},
	}
}

func newNetworkPruneCommand(g *globalOptions) *cobra.Command {
	var force bool
	var filters []string
	cmd := &cobra.Command{
		Use:   "prune [-f] [--filter KEY=VALUE]",
		Short: "Remove the user-defined networks no container is connected to",
		Long: `Remove the user-defined networks no container is connected to.

--filter takes docker's keys: until (a timestamp or a duration: networks
created before it) and label, label! (KEY or KEY=VALUE).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFilters(filters)
			if err != nil {
				return err
			}
			if !force && !confirm("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue?") {
				return nil
			}
			return g.onEngine("network prune", false, func(r *remote) error {
				res, err := r.api.NetworkPrune(cmd.Context(), client.NetworkPruneOptions{Filters: f})
				if err != nil {
					return r.fail(err)
				}
				if len(res.Report.NetworksDeleted) > 0 {
					fmt.Println("Deleted Networks:")
					for _, name := range res.Report.NetworksDeleted {
						fmt.Println(name)
					}
					fmt.Println()
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter by KEY=VALUE: until, label, label! (repeatable)")
	return cmd
}

// confirm asks a yes/no question on stderr and reads the answer from stdin;
// only y or yes is yes.
func confirm(question string) bool {
	fmt.Fprintf(os.Stderr, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	a := strings.TrimSpace(strings.ToLower(answer))
	return a == "y" || a == "yes"
}

func newNetworkConnectCommand(g *globalOptions) *cobra.Command {
	var ip string
	var aliases []string
	cmd := &cobra.Command{
		Use:   "connect [--ip ADDRESS] [--alias NAME] NETWORK CONTAINER",
		Short: "Connect a container to a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ep := &network.EndpointSettings{Aliases: aliases}
			if ip != "" {
				addr, err := netip.ParseAddr(ip)
				if err != nil || !addr.Is4() {
					return &statusError{code: 125, err: fmt.Errorf("invalid IPv4 address: %s", ip)}
				}
				ep.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: addr}
			}
			return g.onEngine("network connect", false, func(r *remote) error {
				_, err := r.api.NetworkConnect(cmd.Context(), args[0], client.NetworkConnectOptions{Container: args[1], EndpointConfig: ep})
				return r.fail(err)
			})
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "IPv4 address on the network (e.g. 172.30.100.104)")
	cmd.Flags().StringArrayVar(&aliases, "alias", nil, "add a DNS name for the container on the network")
	return cmd
}

func newNetworkDisconnectCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "disconnect [-f] NETWORK CONTAINER",
		Short: "Disconnect a container from a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.onEngine("network disconnect", false, func(r *remote) error {
				_, err := r.api.NetworkDisconnect(cmd.Context(), args[0], client.NetworkDisconnectOptions{Container: args[1], Force: force})
				return r.fail(err)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "force the container to disconnect from the network")
	return cmd
}

// writeNetworks prints docker network ls output, sorted by name in
// natural order as docker sorts it: the default table, a "table ..."
// template with headers, a template per row, or "json".
func writeNetworks(w io.Writer, list []network.Summary, format string, quiet, noTrunc bool) error {
	sort.SliceStable(list, func(i, j int) bool { return sortorder.NaturalLess(list[i].Name, list[j].Name) })
	ctx := formatter.Context{Output: w, Format: networkFormat(format, quiet), Trunc: !noTrunc}
	err := ctx.Write(newNetworkHeader(), func(format func(formatter.SubContext) error) error {
		for _, n := range list {
			if err := format(&networkRow{trunc: !noTrunc, n: n}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return formatError(err)
	}
	return nil
}
