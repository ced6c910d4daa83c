package main

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"
)

// bindingStrings renders a port map as sorted "80/tcp=IP:PORT" strings.
func bindingStrings(m network.PortMap) []string {
	var out []string
	for p, bs := range m {
		for _, b := range bs {
			ip := ""
			if b.HostIP.IsValid() {
				ip = b.HostIP.String()
			}
			out = append(out, fmt.Sprintf("%s=%s:%s", p, ip, b.HostPort))
		}
	}
	slices.Sort(out)
	return out
}

func portStrings(s network.PortSet) []string {
	var out []string
	for p := range maps.Keys(s) {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

func TestParsePublish(t *testing.T) {
	for _, tc := range []struct {
		publish, expose []string
		exposed         []string
		bindings        []string
		wantErr         string
	}{
		{publish: []string{"8080:80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=:8080"}},
		{publish: []string{"127.0.0.1:8080:80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=127.0.0.1:8080"}},
		{publish: []string{"8080:80/udp"}, exposed: []string{"80/udp"}, bindings: []string{"80/udp=:8080"}},
		{publish: []string{"80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=:"}},
		{publish: []string{"127.0.0.1::80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=127.0.0.1:"}},
		{publish: []string{"8000-8001:80-81"}, exposed: []string{"80/tcp", "81/tcp"},
			bindings: []string{"80/tcp=:8000", "81/tcp=:8001"}},
		// One container port on a range of host ports: the range is kept
		// for the engine to choose from (and refuse, if it must).
		{publish: []string{"8000-8010:80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=:8000-8010"}},
		{publish: []string{"8080:80", "8081:80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=:8080", "80/tcp=:8081"}},
		{publish: []string{"published=8080,target=80,protocol=udp"}, exposed: []string{"80/udp"}, bindings: []string{"80/udp=:8080"}},
		{publish: []string{"[::1]:8080:80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=::1:8080"}},
		{expose: []string{"90", "7000-7001/udp"}, exposed: []string{"7000/udp", "7001/udp", "90/tcp"}},
		{publish: []string{"8080:80"}, expose: []string{"80"}, exposed: []string{"80/tcp"}, bindings: []string{"80/tcp=:8080"}},

		{publish: []string{"8080:"}, wantErr: "no port specified: 8080:<empty>"},
		{publish: []string{"8080:http"}, wantErr: "invalid containerPort: http"},
		{publish: []string{"1.2.3:8080:80"}, wantErr: "invalid IP address: 1.2.3"},
		{publish: []string{"x:80"}, wantErr: "invalid hostPort: x"},
		{publish: []string{"8080:80/icmp"}, wantErr: "invalid proto: icmp"},
		{publish: []string{"8000-8002:80-81"}, wantErr: "invalid ranges specified for container and host Ports"},
		{publish: []string{"target=80,bogus=1"}, wantErr: `invalid field key "bogus"`},
		{publish: []string{"published=80"}, wantErr: `missing mandatory field "target"`},
		{expose: []string{"http"}, wantErr: "invalid range format for --expose"},
	} {
		exposed, bindings, err := parsePublish(tc.publish, tc.expose)
		name := fmt.Sprintf("parsePublish(%q, %q)", tc.publish, tc.expose)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s = %v, want an error containing %q", name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := portStrings(exposed); !slices.Equal(got, tc.exposed) {
			t.Errorf("%s exposed = %q, want %q", name, got, tc.exposed)
		}
		if got := bindingStrings(bindings); !slices.Equal(got, tc.bindings) {
			t.Errorf("%s bindings = %q, want %q", name, got, tc.bindings)
		}
	}
}

func TestWritePorts(t *testing.T) {
	any4 := netip.MustParseAddr("0.0.0.0")
	ports := network.PortMap{
		network.MustParsePort("80/tcp"):  {{HostIP: any4, HostPort: "8080"}, {HostIP: netip.MustParseAddr("::"), HostPort: "8080"}},
		network.MustParsePort("9/tcp"):   {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "32768"}},
		network.MustParsePort("53/udp"):  {{HostIP: any4, HostPort: "5353"}},
		network.MustParsePort("443/tcp"): nil, // exposed, not published
	}
	for _, tc := range []struct {
		private string
		want    string
		wantErr string
	}{
		{"", "9/tcp -> 127.0.0.1:32768\n53/udp -> 0.0.0.0:5353\n80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n", ""},
		{"80", "0.0.0.0:8080\n[::]:8080\n", ""},
		{"80/tcp", "0.0.0.0:8080\n[::]:8080\n", ""},
		{"53/udp", "0.0.0.0:5353\n", ""},
		{"53", "", "no public port '53/tcp' published for web"},
		{"443", "", "no public port '443/tcp' published for web"},
		{"http", "", "invalid start port 'http'"},
	} {
		var out bytes.Buffer
		err := writePorts(&out, ports, "web", tc.private)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("port web %s = %v, want an error containing %q", tc.private, err, tc.wantErr)
			}
			continue
		}
		if err != nil || out.String() != tc.want {
			t.Errorf("port web %s = %q, %v; want %q", tc.private, out.String(), err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := writePorts(&out, nil, "stopped", ""); err != nil || out.Len() != 0 {
		t.Errorf("port of a container without ports = %q, %v; want nothing", out.String(), err)
	}
}
