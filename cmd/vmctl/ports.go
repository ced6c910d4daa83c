package main

// Published and exposed ports: docker run's -p, -P and --expose, and
// docker port. -p is parsed by go-connections' nat.ParsePortSpecs, as the
// docker CLI parses it, so that every form docker takes means the same
// here: 8080:80, 127.0.0.1:8080:80, 8080:80/udp, 80, 127.0.0.1::80,
// 8000-8001:80-81, and the long form published=8080,target=80.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/docker/go-connections/nat"
	"github.com/fvbommel/sortorder"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

// parsePublish turns -p and --expose flags into the create request's
// exposed ports and port bindings. Published ports are exposed too, as
// docker run makes them.
func parsePublish(publish, expose []string) (network.PortSet, network.PortMap, error) {
	specs := make([]string, 0, len(publish))
	for _, p := range publish {
		spec, err := longPublishSpec(p)
		if err != nil {
			return nil, nil, err
		}
		specs = append(specs, spec)
	}
	natExposed, natBindings, err := nat.ParsePortSpecs(specs)
	if err != nil {
		return nil, nil, err
	}
	exposed := network.PortSet{}
	bindings := network.PortMap{}
	for p := range natExposed {
		port, err := network.ParsePort(string(p))
		if err != nil {
			return nil, nil, err
		}
		exposed[port] = struct{}{}
	}
	for p, bs := range natBindings {
		port, err := network.ParsePort(string(p))
		if err != nil {
			return nil, nil, err
		}
		for _, b := range bs {
			var ip netip.Addr
			if b.HostIP != "" {
				// nat has checked it with net.ParseIP, which also takes
				// the forms netip does not (a zone-less IPv4-in-IPv6).
				if ip, err = netip.ParseAddr(b.HostIP); err != nil {
					return nil, nil, fmt.Errorf("invalid IP address: %s", b.HostIP)
				}
			}
			bindings[port] = append(bindings[port], network.PortBinding{HostIP: ip, HostPort: b.HostPort})
		}
	}
	for _, e := range expose {
		r, err := network.ParsePortRange(e)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid range format for --expose: %w", err)
		}
		for p := range r.All() {
			exposed[p] = struct{}{}
		}
	}
	return exposed, bindings, nil
}

// longPublishSpec turns docker's long -p form (published=8080,target=80,
// protocol=udp) into the short one; other specs are returned as they are.
func longPublishSpec(spec string) (string, error) {
	if !strings.Contains(spec, "=") {
		return spec, nil
	}
	params := map[string]string{"protocol": "tcp"}
	for _, field := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(field, "=")
		if !ok || k == "" {
			return "", fmt.Errorf("invalid publish opts format (should be name=value but got '%s')", field)
		}
		switch k {
		case "published", "target", "protocol":
			params[k] = v
		case "mode":
			if v != "ingress" && v != "host" {
				return "", fmt.Errorf("invalid publish mode %q: want host", v)
			}
		default:
			return "", fmt.Errorf("invalid field key %q in publish option %q", k, spec)
		}
	}
	if params["target"] == "" {
		return "", fmt.Errorf("missing mandatory field \"target\" in publish option %q", spec)
	}
	return params["published"] + ":" + params["target"] + "/" + params["protocol"], nil
}

func newPortCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "port CONTAINER [PRIVATE_PORT[/PROTO]]",
		Short: "List a container's published ports, or the host address of one",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			private := ""
			if len(args) == 2 {
				private = args[1]
			}
			return g.onEngine("port", false, func(r *remote) error {
				return r.port(cmd.Context(), os.Stdout, args[0], private)
			})
		},
	}
}

func (r *remote) port(ctx context.Context, w io.Writer, ref, private string) error {
	c, err := r.api.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return r.fail(err)
	}
	var ports network.PortMap
	if c.Container.NetworkSettings != nil {
		ports = c.Container.NetworkSettings.Ports
	}
	return writePorts(w, ports, ref, private)
}

// writePorts prints docker port's output: every published port as
// "80/tcp -> 0.0.0.0:8080" in natural order, or the host addresses of
// one container port. A port that is not published is an error, as in
// docker.
func writePorts(w io.Writer, ports network.PortMap, ref, private string) error {
	if private != "" {
		port, proto, _ := strings.Cut(private, "/")
		if proto == "" {
			proto = "tcp"
		}
		want, err := nat.NewPort(proto, port)
		if err != nil {
			return &statusError{code: 1, err: err}
		}
		for p, bindings := range ports {
			if p.String() != string(want) || bindings == nil {
				continue
			}
			for _, b := range bindings {
				fmt.Fprintln(w, hostAddress(b))
			}
			return nil
		}
		return &statusError{code: 1, err: fmt.Errorf("no public port '%s' published for %s", want, ref)}
	}
	var lines []string
	for p, bindings := range ports {
		for _, b := range bindings {
			lines = append(lines, fmt.Sprintf("%s -> %s", p, hostAddress(b)))
		}
	}
	sort.Slice(lines, func(i, j int) bool { return sortorder.NaturalLess(lines[i], lines[j]) })
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return nil
}

// hostAddress is a binding as docker port shows it: 0.0.0.0:8080, [::]:8080.
func hostAddress(b network.PortBinding) string {
	ip := ""
	if b.HostIP.IsValid() {
		ip = b.HostIP.String()
	}
	return net.JoinHostPort(ip, b.HostPort)
}
