package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// The network flags of run and create make the request the docker CLI
// sends for them; bad values fail with docker's messages.
func TestNetworkOptionsApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    networkOptions
		want    string // JSON of the request's network fields
		wantErr string
	}{
		{name: "none given", want: `{"mode":"default","ports":null,"exposed":null,"all":false,"dns":null,"search":null,"dnsopts":null,"hosts":null,"endpoints":null}`},
		{name: "everything", opts: networkOptions{
			network: []string{"backend"}, ip: "10.1.0.9", aliases: []string{"db"}, mac: "92:d0:c6:0a:29:33",
			publish: []string{"127.0.0.1:5432:5432"}, publishAll: true, expose: []string{"9000"},
			dns: []string{"10.0.0.53"}, dnsSearch: []string{"example.org"}, dnsOptions: []string{"ndots:2"}, dnsOpt: []string{"timeout:1"},
			addHosts: []string{"gw:host-gateway", "v6=[::1]"},
		}, want: `{"mode":"backend","ports":{"5432/tcp":[{"HostIp":"127.0.0.1","HostPort":"5432"}]},` +
			`"exposed":{"5432/tcp":{},"9000/tcp":{}},"all":true,"dns":["10.0.0.53"],"search":["example.org"],` +
			`"dnsopts":["ndots:2","timeout:1"],"hosts":["gw:host-gateway","v6:::1"],` +
			`"endpoints":{"backend":{"IPAMConfig":{"IPv4Address":"10.1.0.9"},"Links":null,"Aliases":["db"],"DriverOpts":null,` +
			`"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","MacAddress":"92:d0:c6:0a:29:33",` +
			`"IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}`},
		{name: "old flag name", opts: networkOptions{net: []string{"none"}}, want: `{"mode":"none","ports":null,"exposed":null,"all":false,"dns":null,"search":null,"dnsopts":null,"hosts":null,"endpoints":null}`},
		{name: "two networks", opts: networkOptions{network: []string{"a"}, net: []string{"b"}}, wantErr: "joins one network"},
		{name: "empty network", opts: networkOptions{network: []string{""}}, wantErr: `invalid --network ""`},
		{name: "bad port", opts: networkOptions{publish: []string{"80:http"}}, wantErr: "invalid containerPort: http"},
		{name: "bad dns", opts: networkOptions{dns: []string{"dns.example"}}, wantErr: "IP address is not correctly formatted: dns.example"},
		{name: "bad search", opts: networkOptions{dnsSearch: []string{"-bad-"}}, wantErr: "-bad- is not a valid domain"},
		{name: "bad host", opts: networkOptions{addHosts: []string{"nohost"}}, wantErr: `bad format for add-host: "nohost"`},
		{name: "bad host ip", opts: networkOptions{addHosts: []string{"h:1.2.3"}}, wantErr: `invalid IP address in add-host: "1.2.3"`},
		{name: "bad ip", opts: networkOptions{ip: "fe80::1"}, wantErr: "invalid IPv4 address: fe80::1"},
		{name: "bad mac", opts: networkOptions{mac: "92:d0"}, wantErr: "92:d0 is not a valid mac address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := client.ContainerCreateOptions{Config: &container.Config{Image: "busybox"}, HostConfig: &container.HostConfig{}}
			err := tc.opts.apply(&req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("apply = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var eps map[string]*network.EndpointSettings
			if req.NetworkingConfig != nil {
				eps = req.NetworkingConfig.EndpointsConfig
			}
			hc := req.HostConfig
			got, _ := json.Marshal(struct {
				Mode      container.NetworkMode                `json:"mode"`
				Ports     network.PortMap                      `json:"ports"`
				Exposed   network.PortSet                      `json:"exposed"`
				All       bool                                 `json:"all"`
				DNS       any                                  `json:"dns"`
				Search    []string                             `json:"search"`
				DNSOpts   []string                             `json:"dnsopts"`
				Hosts     []string                             `json:"hosts"`
				Endpoints map[string]*network.EndpointSettings `json:"endpoints"`
			}{hc.NetworkMode, hc.PortBindings, req.Config.ExposedPorts, hc.PublishAllPorts, hc.DNS, hc.DNSSearch, hc.DNSOptions, hc.ExtraHosts, eps})
			if string(got) != tc.want {
				t.Errorf("request network fields =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestIPAMConfig(t *testing.T) {
	for _, tc := range []struct {
		subnets, ranges, gateways []string
		want                      string
		wantErr                   string
	}{
		{want: `[]`},
		{subnets: []string{"172.28.0.0/16"}, ranges: []string{"172.28.5.0/24"}, gateways: []string{"172.28.5.254"},
			want: `[{"Subnet":"172.28.0.0/16","IPRange":"172.28.5.0/24","Gateway":"172.28.5.254"}]`},
		{subnets: []string{"10.1.0.0/24", "10.2.0.0/24"}, gateways: []string{"10.2.0.1"},
			want: `[{"Subnet":"10.1.0.0/24"},{"Subnet":"10.2.0.0/24","Gateway":"10.2.0.1"}]`},
		{gateways: []string{"10.0.0.1"}, wantErr: "every ip-range or gateway must have a corresponding subnet"},
		{subnets: []string{"10.0.0.0"}, wantErr: "invalid subnet 10.0.0.0"},
		{subnets: []string{"10.0.0.0/8", "10.1.0.0/16"}, wantErr: "multiple overlapping subnet configuration is not supported"},
		{subnets: []string{"10.0.0.0/24"}, gateways: []string{"10.0.1.1"}, wantErr: "no matching subnet for gateway 10.0.1.1"},
		{subnets: []string{"10.0.0.0/24"}, ranges: []string{"10.0.1.0/28"}, wantErr: "no matching subnet for range 10.0.1.0/28"},
		{subnets: []string{"10.0.0.0/24"}, gateways: []string{"10.0.0.1", "10.0.0.2"}, wantErr: "every ip-range or gateway"},
		{subnets: []string{"10.0.0.0/24", "10.1.0.0/24"}, gateways: []string{"10.0.0.1", "10.0.0.2"},
			wantErr: "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet (10.0.0.0/24)"},
		{subnets: []string{"10.0.0.0/24"}, gateways: []string{"gw"}, wantErr: "invalid gateway gw"},
	} {
		got, err := ipamConfig(tc.subnets, tc.ranges, tc.gateways)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ipamConfig(%q, %q, %q) = %v, want an error containing %q", tc.subnets, tc.ranges, tc.gateways, err, tc.wantErr)
			}
			continue
		}
		b, _ := json.Marshal(got)
		if err != nil || string(b) != tc.want {
			t.Errorf("ipamConfig(%q, %q, %q) = %s, %v; want %s", tc.subnets, tc.ranges, tc.gateways, b, err, tc.want)
		}
	}
}

func TestWriteNetworks(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	net := func(id, name string, labels map[string]string) network.Summary {
		return network.Summary{Network: network.Network{ID: strings.Repeat(id, 64), Name: name, Driver: "bridge", Scope: "local", Created: created, Labels: labels}}
	}
	list := []network.Summary{net("c", "net10", nil), net("a", "bridge", nil), net("b", "net2", map[string]string{"tier": "db", "env": "prod"})}
	for _, tc := range []struct {
		name, format   string
		quiet, noTrunc bool
		want           []string // lines, runs of spaces collapsed
	}{
		{name: "default", want: []string{"NETWORK ID NAME DRIVER SCOPE", "aaaaaaaaaaaa bridge bridge local",
			"bbbbbbbbbbbb net2 bridge local", "cccccccccccc net10 bridge local"}},
		{name: "quiet", quiet: true, want: []string{"aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"}},
		{name: "no-trunc", quiet: true, noTrunc: true, want: []string{strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)}},
		{name: "template", format: "{{.Name}} {{.Labels}} {{.Label \"tier\"}}", want: []string{"bridge", "net2 env=prod,tier=db db", "net10"}},
		{name: "table", format: "table {{.Name}}\t{{.Internal}}\t{{.IPv6}}", want: []string{"NAME INTERNAL IPV6", "bridge false false", "net2 false false", "net10 false false"}},
	} {
		var out bytes.Buffer
		if err := writeNetworks(&out, list, tc.format, tc.quiet, tc.noTrunc); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		for i := range got {
			got[i] = strings.Join(strings.Fields(got[i]), " ")
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s: output\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
	var out bytes.Buffer
	if err := writeNetworks(&out, list[:1], "json", false, false); err != nil {
		t.Fatal(err)
	}
	var row map[string]any
	if err := json.Unmarshal(out.Bytes(), &row); err != nil || row["Name"] != "bridge" || row["ID"] != "aaaaaaaaaaaa" || row["Scope"] != "local" {
		t.Errorf("json output %s (%v): want one object with Name bridge", out.String(), err)
	}
	if err := writeNetworks(&out, list, "{{.Nope", false, false); err == nil {
		t.Error("a bad template was accepted")
	}
}

// run and create pull a missing image, not one that is there when the
// network the container names is missing.
func TestIsMissingImage(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{cerrdefs.ErrNotFound.WithMessage("No such image: busybox:latest"), true},
		{cerrdefs.ErrNotFound.WithMessage("network nope not found"), false},
		{cerrdefs.ErrInvalidArgument.WithMessage("No such image: x"), false},
		{nil, false},
	} {
		if got := isMissingImage(tc.err); got != tc.want {
			t.Errorf("isMissingImage(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
