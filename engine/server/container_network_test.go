package server

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// dockerCLICreate is the body docker 20.10's CLI sends for
//
//	docker run -p 8080:80 -p 127.0.0.1::53/udp --expose 9000 --network backend --ip 10.7.0.20
//	  --network-alias db --dns 10.0.0.53 --dns-search example.org --dns-option ndots:2
//	  --add-host gw:host-gateway --mac-address 02:42:0A:07:00:14 nginx
//
// with the fields that do not concern the network cut down.
const dockerCLICreate = `{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,
 "ExposedPorts":{"53/udp":{},"80/tcp":{},"9000/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":[],"Cmd":null,
 "Image":"nginx","Volumes":{},"WorkingDir":"","Entrypoint":null,"MacAddress":"02:42:0A:07:00:14","OnBuild":null,"Labels":{},
 "HostConfig":{"Binds":null,"NetworkMode":"backend",
  "PortBindings":{"53/udp":[{"HostIp":"127.0.0.1","HostPort":""}],"80/tcp":[{"HostIp":"","HostPort":"8080"}]},
  "RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"Dns":["10.0.0.53"],"DnsOptions":["ndots:2"],
  "DnsSearch":["example.org"],"ExtraHosts":["gw:host-gateway"],"Links":null,"PublishAllPorts":false,"ConsoleSize":[0,0]},
 "NetworkingConfig":{"EndpointsConfig":{"backend":{"IPAMConfig":{"IPv4Address":"10.7.0.20"},"Links":null,"Aliases":["db"],
  "NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"",
  "GlobalIPv6PrefixLen":0,"MacAddress":"","DriverOpts":null}}}}`

// networkOptions are the network fields of create options, for comparing.
func networkOptions(o containersvc.CreateOptions) string {
	return fmt.Sprintf("mode=%s nets=%v ports=%v all=%v exposed=%v dns=%q search=%q opts=%q hosts=%q mac=%q",
		o.NetworkMode, o.Networks, o.PortBindings, o.PublishAll, o.ExposedPorts, o.DNS, o.DNSSearch, o.DNSOptions, o.ExtraHosts, o.MacAddress)
}

func TestContainerCreateNetwork(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name, path, body string
		code             int
		msg              string
		want             containersvc.CreateOptions
	}{
		{name: "docker cli", body: dockerCLICreate, code: 201, want: containersvc.CreateOptions{
			NetworkMode: "backend",
			Networks: map[string]containersvc.EndpointOptions{"backend": {
				IP: netip.MustParseAddr("10.7.0.20"), Aliases: []string{"db"}, MAC: mac("02:42:0a:07:00:14")}},
			PortBindings: []containersvc.PortBinding{{Proto: "udp", HostIP: lo, ContainerPort: 53}, {Proto: "tcp", HostPort: 8080, ContainerPort: 80}},
			ExposedPorts: []containersvc.Port{{Port: 53, Proto: "udp"}, {Port: 80, Proto: "tcp"}, {Port: 9000, Proto: "tcp"}},
			DNS:          []string{"10.0.0.53"}, DNSSearch: []string{"example.org"}, DNSOptions: []string{"ndots:2"},
			ExtraHosts: []string{"gw:host-gateway"}, MacAddress: "02:42:0a:07:00:14",
		}},
		// A plain docker run: "default" is the default network, which
		// the container joins by its name.
		{name: "default", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"default","PublishAllPorts":true}}`, code: 201,
			want: containersvc.CreateOptions{NetworkMode: "default", Networks: map[string]containersvc.EndpointOptions{"bridge": {}}, PublishAll: true}},
		// docker-py sends no NetworkMode at all.
		{name: "no mode", body: `{"Image":"nginx"}`, code: 201,
			want: containersvc.CreateOptions{NetworkMode: "default", Networks: map[string]containersvc.EndpointOptions{"bridge": {}}}},
		{name: "by ID", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"aaaaaaaaaaaa"}}`, code: 201,
			want: containersvc.CreateOptions{NetworkMode: "aaaaaaaaaaaa", Networks: map[string]containersvc.EndpointOptions{"backend": {}}}},
		{name: "none", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"none","Dns":["1.1.1.1"]}}`, code: 201,
			want: containersvc.CreateOptions{NetworkMode: "none", DNS: []string{"1.1.1.1"}}},
		// What the vmctl CLI (a newer client) sends for --mac-address on
		// the default network, and a second network at API 1.44.
		{name: "endpoint mac", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"default"},
			"NetworkingConfig":{"EndpointsConfig":{"default":{"MacAddress":"02:42:ac:1e:00:09"}}}}`, code: 201,
			want: containersvc.CreateOptions{NetworkMode: "default", Networks: map[string]containersvc.EndpointOptions{"bridge": {MAC: mac("02:42:ac:1e:00:09")}},
				MacAddress: "02:42:ac:1e:00:09"}},
		{name: "two networks, 1.44", path: "/v1.44/containers/create", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"bridge"},
			"NetworkingConfig":{"EndpointsConfig":{"bridge":{},"backend":{"Aliases":["api"]}}}}`, code: 201,
			want: containersvc.CreateOptions{NetworkMode: "bridge", Networks: map[string]containersvc.EndpointOptions{"bridge": {}, "backend": {Aliases: []string{"api"}}}}},

		{name: "two networks, 1.41", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"bridge"},
			"NetworkingConfig":{"EndpointsConfig":{"bridge":{},"backend":{}}}}`, code: 400, msg: "Container cannot be connected to network endpoints: backend, bridge"},
		{name: "host", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"host"}}`, code: 400, msg: "network mode host is not supported"},
		{name: "container", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"container:web"}}`, code: 400, msg: "network mode container:web is not supported"},
		{name: "unknown network", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"nope"}}`, code: 404, msg: "network nope not found"},
		{name: "unknown endpoint network", path: "/v1.44/containers/create", body: `{"Image":"nginx","NetworkingConfig":{"EndpointsConfig":{"nope":{}}}}`, code: 404, msg: "network nope not found"},
		{name: "bad ip", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"backend"},"NetworkingConfig":{"EndpointsConfig":{"backend":{"IPAMConfig":{"IPv4Address":"10.7.0.300"}}}}}`,
			code: 400, msg: "invalid IPv4 address: 10.7.0.300"},
		{name: "bad port", body: `{"Image":"nginx","HostConfig":{"PortBindings":{"http/tcp":[{"HostPort":"80"}]}}}`, code: 400, msg: `invalid port specification: "http"`},
		{name: "bad host port", body: `{"Image":"nginx","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"eighty"}]}}}`, code: 400, msg: `invalid port specification: "eighty"`},
		{name: "host port range", body: `{"Image":"nginx","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8000-8010"}]}}}`, code: 400, msg: "host port range 8000-8010 for port 80/tcp is not supported"},
		{name: "sctp", body: `{"Image":"nginx","HostConfig":{"PortBindings":{"80/sctp":[{"HostPort":"80"}]}}}`, code: 400, msg: "protocol sctp is not supported"},
		{name: "bad host ip", body: `{"Image":"nginx","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"1.2.3","HostPort":"80"}]}}}`, code: 400, msg: "invalid IP address: 1.2.3"},
		{name: "ipv6 host ip", body: `{"Image":"nginx","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"::1","HostPort":"80"}]}}}`, code: 400, msg: "only IPv4 addresses can be published"},
		{name: "bad exposed", body: `{"Image":"nginx","ExposedPorts":{"0/tcp":{}}}`, code: 400, msg: `invalid port specification: "0"`},
		{name: "ports with none", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"none","PortBindings":{"80/tcp":[{"HostPort":"80"}]}}}`, code: 400, msg: "published ports need a network"},
		{name: "second network with none", path: "/v1.44/containers/create", body: `{"Image":"nginx","HostConfig":{"NetworkMode":"none"},"NetworkingConfig":{"EndpointsConfig":{"backend":{}}}}`,
			code: 400, msg: "private (none) mode"},
		{name: "bad dns", body: `{"Image":"nginx","HostConfig":{"Dns":["dns.example"]}}`, code: 400, msg: "IP address is not correctly formatted: dns.example"},
		{name: "bad search", body: `{"Image":"nginx","HostConfig":{"DnsSearch":["a b"]}}`, code: 400, msg: `"a b" is not a valid domain`},
		{name: "bad dns option", body: `{"Image":"nginx","HostConfig":{"DnsOptions":["ndots:2\nnameserver 1.1.1.1"]}}`, code: 400, msg: "invalid DNS option"},
		{name: "bad extra host", body: `{"Image":"nginx","HostConfig":{"ExtraHosts":["gw"]}}`, code: 400, msg: `bad format for add-host: "gw"`},
		{name: "bad extra host ip", body: `{"Image":"nginx","HostConfig":{"ExtraHosts":["gw:10.0.0"]}}`, code: 400, msg: `invalid IP address in add-host: "10.0.0"`},
		{name: "bad mac", body: `{"Image":"nginx","MacAddress":"02:42"}`, code: 400, msg: "invalid MAC address: 02:42"},
		{name: "links", body: `{"Image":"nginx","HostConfig":{"Links":["db:db"]}}`, code: 400, msg: "container links are not supported"},
		{name: "two macs", body: `{"Image":"nginx","MacAddress":"02:42:ac:1e:00:01","HostConfig":{"NetworkMode":"backend"},
			"NetworkingConfig":{"EndpointsConfig":{"backend":{"MacAddress":"02:42:ac:1e:00:02"}}}}`, code: 400, msg: "conflicting MAC addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, ctrs := newNetworkTestServer()
			path := tc.path
			if path == "" {
				path = "/v1.41/containers/create"
			}
			rec := request(s, "POST", path, tc.body)
			if rec.Code != tc.code || !strings.Contains(replyText(rec), tc.msg) {
				t.Fatalf("create = %d %s, want %d with %q", rec.Code, rec.Body, tc.code, tc.msg)
			}
			if tc.code != 201 {
				if len(ctrs.created) != 0 {
					t.Errorf("a refused create reached the container service")
				}
				return
			}
			if len(ctrs.created) != 1 {
				t.Fatalf("%d creates reached the container service, want 1", len(ctrs.created))
			}
			if got, want := networkOptions(ctrs.created[0]), networkOptions(tc.want); got != want {
				t.Errorf("create options\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// Without a network service, a create that names no network runs with
// loopback only, as before networking, and says so; one that names a
// network is refused.
func TestContainerCreateWithoutNetworks(t *testing.T) {
	ctrs := &fakeContainers{}
	s := newServer(ctrs, nil, nil, nil, fakeSystem{}, nil)
	if rec := request(s, "POST", "/containers/create", `{"Image":"nginx","HostConfig":{"NetworkMode":"default"}}`); rec.Code != 201 {
		t.Fatalf("create = %d %s", rec.Code, rec.Body)
	}
	if len(ctrs.created) != 1 || ctrs.created[0].NetworkMode != "none" || ctrs.created[0].Networks != nil {
		t.Errorf("create options %+v, want mode none and no networks", ctrs.created)
	}
	for _, body := range []string{
		`{"Image":"nginx","HostConfig":{"NetworkMode":"backend"}}`,
		`{"Image":"nginx","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"80"}]}}}`,
		`{"Image":"nginx","HostConfig":{"PublishAllPorts":true}}`,
		`{"Image":"nginx","MacAddress":"02:42:ac:1e:00:09"}`,
	} {
		if rec := request(s, "POST", "/containers/create", body); rec.Code != 501 || !strings.Contains(replyText(rec), "networks are not available") {
			t.Errorf("create %s = %d %s, want 501", body, rec.Code, rec.Body)
		}
	}
	if rec := request(s, "POST", "/containers/create", `{"Image":"nginx","HostConfig":{"NetworkMode":"none","PublishAllPorts":true}}`); rec.Code != 400 {
		t.Errorf("create in mode none with -P = %d %s, want 400", rec.Code, rec.Body)
	}
	for _, path := range []string{"/networks", "/networks/bridge"} {
		if rec := request(s, "GET", path, ""); rec.Code != 501 || !strings.Contains(replyText(rec), "networks are not available") {
			t.Errorf("GET %s = %d %s, want 501", path, rec.Code, rec.Body)
		}
	}
}

// Inspect shows a container's network as dockerd's API 1.41 does: the
// create's options echoed in HostConfig and Config, and NetworkSettings
// with the top-level fields of the default network, Ports with null for
// an exposed port that is not published (docker port reads it), and the
// endpoint of each network.
func TestContainerInspectNetwork(t *testing.T) {
	s, _, _ := newNetworkTestServer()
	web, db := strings.Repeat("1", 64), strings.Repeat("2", 64)
	webEP, dbEP := endpointID(defNet.ID, web), endpointID(userNet.ID, db)

	rec := request(s, "GET", "/v1.41/containers/web/json", "")
	if rec.Code != 200 {
		t.Fatalf("inspect web = %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.Bytes()
	jsonEqual(t, "web's NetworkSettings", field(t, body, "NetworkSettings"), `{
	 "Bridge":"","SandboxID":"","HairpinMode":false,"LinkLocalIPv6Address":"","LinkLocalIPv6PrefixLen":0,
	 "Ports":{"443/tcp":null,"53/udp":[{"HostIp":"127.0.0.1","HostPort":"32768"}],"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]},
	 "SandboxKey":"","SecondaryIPAddresses":null,"SecondaryIPv6Addresses":null,
	 "EndpointID":"`+webEP+`","Gateway":"172.30.0.1","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,
	 "IPAddress":"172.30.0.5","IPPrefixLen":16,"IPv6Gateway":"","MacAddress":"02:42:ac:1e:00:05",
	 "Networks":{"bridge":{"IPAMConfig":null,"Links":null,"Aliases":null,"NetworkID":"`+defNet.ID+`",
	  "EndpointID":"`+webEP+`","Gateway":"172.30.0.1","IPAddress":"172.30.0.5","IPPrefixLen":16,"IPv6Gateway":"",
	  "GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"02:42:ac:1e:00:05","DriverOpts":null}}}`)
	for name, want := range map[string]string{
		"NetworkMode": `"default"`, "PortBindings": `{"53/udp":[{"HostIp":"127.0.0.1","HostPort":""}],"80/tcp":[{"HostIp":"","HostPort":"8080"}]}`,
		"PublishAllPorts": `false`, "Dns": `["10.0.0.53"]`, "DnsSearch": `["example.org"]`, "DnsOptions": `[]`,
		"ExtraHosts": `["gw:host-gateway"]`,
	} {
		jsonEqual(t, "web's HostConfig."+name, field(t, body, "HostConfig", name), want)
	}
	jsonEqual(t, "web's Config.ExposedPorts", field(t, body, "Config", "ExposedPorts"), `{"443/tcp":{},"53/udp":{},"80/tcp":{}}`)
	jsonEqual(t, "web's Config.MacAddress", field(t, body, "Config", "MacAddress"), `"02:42:ac:1e:00:05"`)
	jsonEqual(t, "web's Config.Image", field(t, body, "Config", "Image"), `"nginx"`)

	// Stopped, on a user network with an address it asked for: no ports,
	// and nothing at the top level, which is the default network's.
	rec = request(s, "GET", "/v1.41/containers/db/json", "")
	body = rec.Body.Bytes()
	jsonEqual(t, "db's NetworkSettings", field(t, body, "NetworkSettings"), `{
	 "Bridge":"","SandboxID":"","HairpinMode":false,"LinkLocalIPv6Address":"","LinkLocalIPv6PrefixLen":0,
	 "Ports":{},"SandboxKey":"","SecondaryIPAddresses":null,"SecondaryIPv6Addresses":null,
	 "EndpointID":"","Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,
	 "IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","MacAddress":"",
	 "Networks":{"backend":{"IPAMConfig":{"IPv4Address":"10.7.0.9"},"Links":null,"Aliases":["database","222222222222"],"NetworkID":"`+userNet.ID+`",
	  "EndpointID":"`+dbEP+`","Gateway":"10.7.0.1","IPAddress":"10.7.0.9","IPPrefixLen":24,"IPv6Gateway":"",
	  "GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"02:42:0a:07:00:09","DriverOpts":null}}}`)
	jsonEqual(t, "db's HostConfig.PortBindings", field(t, body, "HostConfig", "PortBindings"), `{}`)
	jsonEqual(t, "db's HostConfig.ExtraHosts", field(t, body, "HostConfig", "ExtraHosts"), `null`)
	if strings.Contains(string(field(t, body, "Config")), "MacAddress") {
		t.Errorf("db's Config has a MacAddress it never asked for: %s", field(t, body, "Config"))
	}

	rec = request(s, "GET", "/v1.41/containers/lo/json", "")
	body = rec.Body.Bytes()
	jsonEqual(t, "lo's Networks", field(t, body, "NetworkSettings", "Networks"), `{"none":{"IPAMConfig":null,"Links":null,"Aliases":null,
	 "NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"",
	 "GlobalIPv6PrefixLen":0,"MacAddress":"","DriverOpts":null}}`)
	jsonEqual(t, "lo's NetworkMode", field(t, body, "HostConfig", "NetworkMode"), `"none"`)
	jsonEqual(t, "lo's Ports", field(t, body, "NetworkSettings", "Ports"), `{}`)
}

// ps shows ports in the list's shape (IP and PublicPort left out of an
// exposed port that is not published, as docker ps and docker-py read
// it) and each container's networks.
func TestContainerListNetwork(t *testing.T) {
	s, _, _ := newNetworkTestServer()
	rec := request(s, "GET", "/v1.41/containers/json?all=1", "")
	if rec.Code != 200 {
		t.Fatalf("ps = %d %s", rec.Code, rec.Body)
	}
	var list []map[string]any
	if err := jsonUnmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 3 {
		t.Fatalf("ps = %s (%v), want 3 containers", rec.Body, err)
	}
	want := map[string][3]string{
		"/web": {`[{"IP":"127.0.0.1","PrivatePort":53,"PublicPort":32768,"Type":"udp"},{"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8080,"Type":"tcp"},{"PrivatePort":443,"Type":"tcp"}]`,
			`{"NetworkMode":"default"}`, `["bridge"]`},
		"/db": {`[]`, `{"NetworkMode":"backend"}`, `["backend"]`},
		"/lo": {`[]`, `{"NetworkMode":"none"}`, `["none"]`},
	}
	for _, c := range list {
		b, _ := jsonMarshal(c)
		name := c["Names"].([]any)[0].(string)
		w := want[name]
		jsonEqual(t, name+" Ports", field(t, b, "Ports"), w[0])
		jsonEqual(t, name+" HostConfig", field(t, b, "HostConfig"), w[1])
		var nets map[string]any
		if err := jsonUnmarshal(field(t, b, "NetworkSettings", "Networks"), &nets); err != nil {
			t.Fatal(err)
		}
		var names []string
		for n := range nets {
			names = append(names, n)
		}
		got, _ := jsonMarshal(names)
		jsonEqual(t, name+" networks", got, w[2])
	}
	// The entry on the default network is inspect's.
	var first []struct {
		NetworkSettings struct{ Networks map[string]endpointSettings }
	}
	jsonUnmarshal(rec.Body.Bytes(), &first)
	if ep := first[0].NetworkSettings.Networks["bridge"]; ep.IPAddress != "172.30.0.5" || ep.IPPrefixLen != 16 || !reflect.DeepEqual(ep.Aliases, []string(nil)) {
		t.Errorf("ps web's bridge endpoint = %+v", ep)
	}
}

// FuzzNetworkRequests feeds request bodies to the handlers that parse a
// client's network options: whatever they hold, the answer is a success
// or a 4xx with a message, never a panic (a 500) or a create that reached
// the container service with options the server refused.
func FuzzNetworkRequests(f *testing.F) {
	f.Add(dockerCLICreate, `{"Name":"n","IPAM":{"Config":[{"Subnet":"10.0.0.0/24"}]}}`, `{"Container":"db","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.7.0.2"}}}`)
	f.Add(`{"Image":"x","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"[::1]","HostPort":"1-2"}]},"ExtraHosts":[":"]}}`, `{"Name":"n","EnableIPv6":true}`, `{"Container":"lo"}`)
	f.Add(`{"Image":"x","ExposedPorts":{"65536/udp":{}},"MacAddress":"zz","NetworkingConfig":{"EndpointsConfig":{"a":null}}}`, `{}`, `{"EndpointConfig":{"MacAddress":"01:00:5e:00:00:01"}}`)
	f.Fuzz(func(t *testing.T, create, netCreate, connect string) {
		s, _, ctrs := newNetworkTestServer()
		for _, req := range []struct{ path, body string }{
			{"/v1.41/containers/create", create}, {"/v1.44/containers/create", create},
			{"/v1.41/networks/create", netCreate}, {"/v1.41/networks/backend/connect", connect},
		} {
			rec := request(s, "POST", req.path, req.body)
			if rec.Code >= 500 {
				t.Fatalf("POST %s %q = %d %s", req.path, req.body, rec.Code, rec.Body)
			}
			if rec.Code >= 400 && replyText(rec) == "" {
				t.Fatalf("POST %s %q = %d without a message", req.path, req.body, rec.Code)
			}
		}
		for _, o := range ctrs.created {
			for _, b := range o.PortBindings {
				if b.ContainerPort == 0 || (b.Proto != "tcp" && b.Proto != "udp") || (b.HostIP.IsValid() && !b.HostIP.Is4()) {
					t.Fatalf("create passed a port binding the server should refuse: %+v", b)
				}
			}
			if o.NetworkMode == "host" || strings.HasPrefix(o.NetworkMode, "container:") {
				t.Fatalf("create passed network mode %q", o.NetworkMode)
			}
		}
	})
}
