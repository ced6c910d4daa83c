package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
)

// fakeNetworks is a network service over fixed networks and endpoints
// that records what the server asked of it. It matches no filters and
// checks no rules (the network service's own tests do): what the server
// passes is checked instead, and err, when set, is what every call
// returns.
type fakeNetworks struct {
	networks  []networksvc.Network
	endpoints map[string][]networksvc.Endpoint // by container ID
	err       error

	created     []networksvc.CreateOptions
	removed     []string
	listTerms   map[string][]string
	pruneTerms  map[string][]string
	connected   []string // "network container ip aliases mac"
	disconnects []string // "network container force"
}

func (f *fakeNetworks) find(ref string) (networksvc.Network, error) {
	for _, n := range f.networks {
		if n.ID == ref || n.Name == ref || strings.HasPrefix(n.ID, ref) {
			return n, nil
		}
	}
	return networksvc.Network{}, errs.New(errdefs.ErrNotFound, "network %s not found", ref)
}

func (f *fakeNetworks) Create(_ context.Context, o networksvc.CreateOptions) (networksvc.Network, error) {
	if f.err != nil {
		return networksvc.Network{}, f.err
	}
	f.created = append(f.created, o)
	return networksvc.Network{ID: strings.Repeat("f", 64), Name: o.Name}, nil
}
func (f *fakeNetworks) Get(_ context.Context, ref string) (networksvc.Network, error) {
	return f.find(ref)
}
func (f *fakeNetworks) NetworkEndpoints(_ context.Context, ref string) ([]networksvc.Endpoint, error) {
	n, err := f.find(ref)
	if err != nil {
		return nil, err
	}
	var out []networksvc.Endpoint
	for _, eps := range f.endpoints {
		for _, e := range eps {
			if e.NetworkID == n.ID {
				out = append(out, e)
			}
		}
	}
	return out, nil
}
func (f *fakeNetworks) List(_ context.Context, terms map[string][]string) ([]networksvc.Network, error) {
	f.listTerms = terms
	return f.networks, f.err
}
func (f *fakeNetworks) Remove(_ context.Context, ref string) error {
	if _, err := f.find(ref); err != nil {
		return err
	}
	f.removed = append(f.removed, ref)
	return f.err
}
func (f *fakeNetworks) Prune(_ context.Context, terms map[string][]string) ([]string, error) {
	f.pruneTerms = terms
	if f.err != nil {
		return nil, f.err
	}
	return []string{"old"}, nil
}
func (f *fakeNetworks) Connect(_ context.Context, ref string, c networksvc.ContainerRef, o networksvc.EndpointOptions) (networksvc.Endpoint, error) {
	if f.err != nil {
		return networksvc.Endpoint{}, f.err
	}
	f.connected = append(f.connected, fmt.Sprintf("%s %s/%s %v %v %v", ref, c.ID, c.Name, o.IP, o.Aliases, o.MAC))
	return networksvc.Endpoint{NetworkID: ref, ContainerID: c.ID}, nil
}
func (f *fakeNetworks) Disconnect(_ context.Context, ref, containerID string, force bool) error {
	if f.err != nil {
		return f.err
	}
	f.disconnects = append(f.disconnects, fmt.Sprintf("%s %s %v", ref, containerID, force))
	return nil
}
func (f *fakeNetworks) Endpoints(_ context.Context, containerID string) ([]networksvc.Endpoint, error) {
	return f.endpoints[containerID], nil
}

// fakeContainers serves fixed container records and records creates; the
// server's other calls are not made by the handlers tested with it.
type fakeContainers struct {
	ContainerService
	list    []*containersvc.Container
	created []containersvc.CreateOptions
}

func (f *fakeContainers) Get(ref string) (*containersvc.Container, error) {
	for _, c := range f.list {
		if c.ID == ref || c.Name == ref {
			cp := *c
			return &cp, nil
		}
	}
	return nil, errs.New(errdefs.ErrNotFound, "No such container: %s", ref)
}
func (f *fakeContainers) List() ([]*containersvc.Container, error) { return f.list, nil }
func (f *fakeContainers) Restarting(string) bool                   { return false }
func (f *fakeContainers) WritableSize(string) int64                { return 0 }
func (f *fakeContainers) Select(containersvc.ListOptions) ([]*containersvc.Container, error) {
	return f.list, nil
}
func (f *fakeContainers) Create(_ context.Context, o containersvc.CreateOptions) (*containersvc.Container, error) {
	f.created = append(f.created, o)
	return &containersvc.Container{ID: strings.Repeat("c", 64)}, nil
}

var (
	created = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	defNet  = networksvc.Network{
		ID: strings.Repeat("d", 64), Name: "bridge", Driver: "bridge", Bridge: "vmctl0",
		Subnet: netip.MustParsePrefix("172.30.0.0/16"), Gateway: netip.MustParseAddr("172.30.0.1"),
		MTU: 1500, Created: created, Default: true,
	}
	userNet = networksvc.Network{
		ID: strings.Repeat("a", 64), Name: "backend", Driver: "bridge", Bridge: "br-aaaaaaaaaaaa",
		Subnet: netip.MustParsePrefix("10.7.0.0/24"), Gateway: netip.MustParseAddr("10.7.0.1"),
		IPRange: netip.MustParsePrefix("10.7.0.128/25"), Internal: true, MTU: 1500,
		Labels: map[string]string{"tier": "db"}, Created: created,
	}
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// newNetworkTestServer serves two networks and three containers: web,
// running on the default network with published ports; db, stopped, on
// the user network with a static address and an alias; and lo, in mode
// none.
func newNetworkTestServer() (*Server, *fakeNetworks, *fakeContainers) {
	web := &containersvc.Container{ID: strings.Repeat("1", 64), Name: "web", Created: created,
		Config: containersvc.Container{}.Config,
		State:  containersvc.Container{}.State}
	web.Config.Image, web.Config.Args = "nginx", []string{"nginx"}
	web.Config.Network = &containersvc.NetworkConfig{
		Mode: "default",
		PortBindings: []containersvc.PortBinding{
			{Proto: "tcp", HostPort: 8080, ContainerPort: 80},
			{Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), ContainerPort: 53},
		},
		ExposedPorts: []containersvc.Port{{Port: 53, Proto: "udp"}, {Port: 80, Proto: "tcp"}, {Port: 443, Proto: "tcp"}},
		DNS:          []string{"10.0.0.53"}, DNSSearch: []string{"example.org"},
		ExtraHosts: []string{"gw:host-gateway"}, MacAddress: "02:42:ac:1e:00:05",
	}
	web.State.Status = containersvc.StatusRunning
	db := &containersvc.Container{ID: strings.Repeat("2", 64), Name: "db", Created: created}
	db.Config.Network = &containersvc.NetworkConfig{Mode: "backend"}
	db.State.Status = containersvc.StatusExited
	lo := &containersvc.Container{ID: strings.Repeat("3", 64), Name: "lo", Created: created}
	lo.Config.Network = &containersvc.NetworkConfig{Mode: "none"}
	lo.State.Status = containersvc.StatusRunning

	nets := &fakeNetworks{
		networks: []networksvc.Network{defNet, userNet},
		endpoints: map[string][]networksvc.Endpoint{
			web.ID: {{NetworkID: defNet.ID, ContainerID: web.ID, ContainerName: "web", IP: netip.MustParseAddr("172.30.0.5"),
				MAC: mac("02:42:ac:1e:00:05"), StaticMAC: true, Tap: "vt111111111111",
				Ports: []networksvc.PortBinding{
					{Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 32768, ContainerPort: 53},
					{Proto: "tcp", HostPort: 8080, ContainerPort: 80},
				}}},
			db.ID: {{NetworkID: userNet.ID, ContainerID: db.ID, ContainerName: "db", Aliases: []string{"database"},
				IP: netip.MustParseAddr("10.7.0.9"), MAC: mac("02:42:0a:07:00:09"), StaticIP: true}},
		},
	}
	ctrs := &fakeContainers{list: []*containersvc.Container{web, db, lo}}
	return newServer(ctrs, nil, nil, nets, fakeSystem{}, nil), nets, ctrs
}

// replyText is a reply's body, with an error's message unquoted.
func replyText(rec *httptest.ResponseRecorder) string {
	var e struct{ Message string }
	if rec.Code >= 400 && json.Unmarshal(rec.Body.Bytes(), &e) == nil {
		return e.Message
	}
	return rec.Body.String()
}

func request(s *Server, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// jsonEqual compares a reply's JSON with what dockerd sends, as values:
// key order aside, field names, null, {} and [] must match.
func jsonEqual(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v in %s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: the test's JSON: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		t.Errorf("%s =\n%s\nwant\n%s", what, gb, wb)
	}
}

// field returns one top-level field of a JSON object, re-encoded.
func field(t *testing.T, body []byte, path ...string) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %q in %s", p, body)
		}
		v = m[p]
	}
	b, _ := json.Marshal(v)
	return b
}

// The network list and inspect have dockerd's shape: docker network ls
// and inspect, and docker-py's Network.attrs, read these fields.
func TestNetworkShapes(t *testing.T) {
	s, nets, _ := newNetworkTestServer()
	rec := request(s, "GET", "/v1.41/networks", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /networks = %d %s", rec.Code, rec.Body)
	}
	jsonEqual(t, "GET /networks", rec.Body.Bytes(), `[
	 {"Name":"bridge","Id":"`+defNet.ID+`","Created":"2025-03-04T05:06:07Z","Scope":"local","Driver":"bridge",
	  "EnableIPv4":true,"EnableIPv6":false,
	  "IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.30.0.0/16","Gateway":"172.30.0.1"}]},
	  "Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,
	  "Containers":{},
	  "Options":{"com.docker.network.bridge.default_bridge":"true","com.docker.network.bridge.name":"vmctl0","com.docker.network.driver.mtu":"1500"},
	  "Labels":{}},
	 {"Name":"backend","Id":"`+userNet.ID+`","Created":"2025-03-04T05:06:07Z","Scope":"local","Driver":"bridge",
	  "EnableIPv4":true,"EnableIPv6":false,
	  "IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.7.0.0/24","IPRange":"10.7.0.128/25","Gateway":"10.7.0.1"}]},
	  "Internal":true,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,
	  "Containers":{},"Options":{},"Labels":{"tier":"db"}}]`)
	if nets.listTerms != nil {
		t.Errorf("list without filters passed %v", nets.listTerms)
	}

	rec = request(s, "GET", "/v1.41/networks/backend?verbose=true&scope=local", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /networks/backend = %d %s", rec.Code, rec.Body)
	}
	jsonEqual(t, "inspect backend's Containers", field(t, rec.Body.Bytes(), "Containers"), `{"`+strings.Repeat("2", 64)+`":
	 {"Name":"db","EndpointID":"`+endpointID(userNet.ID, strings.Repeat("2", 64))+`","MacAddress":"02:42:0a:07:00:09",
	  "IPv4Address":"10.7.0.9/24","IPv6Address":""}}`)
	rec = request(s, "GET", "/v1.41/networks/bridge", "")
	jsonEqual(t, "inspect bridge's Containers", field(t, rec.Body.Bytes(), "Containers"), `{"`+strings.Repeat("1", 64)+`":
	 {"Name":"web","EndpointID":"`+endpointID(defNet.ID, strings.Repeat("1", 64))+`","MacAddress":"02:42:ac:1e:00:05",
	  "IPv4Address":"172.30.0.5/16","IPv6Address":""}}`)

	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/networks/nope", 404, "network nope not found"},
		{"/networks/backend?scope=swarm", 404, "network backend not found"},
		{"/networks/backend?verbose=maybe", 400, "invalid value"},
	} {
		rec := request(s, "GET", tc.path, "")
		if rec.Code != tc.code || !strings.Contains(replyText(rec), tc.msg) {
			t.Errorf("GET %s = %d %s, want %d with %q", tc.path, rec.Code, rec.Body, tc.code, tc.msg)
		}
	}
}

// The filters reach the network service as docker sends them (both of
// its encodings), and its refusal is the client's 400 with its message.
func TestNetworkListFilters(t *testing.T) {
	s, nets, _ := newNetworkTestServer()
	for _, tc := range []struct {
		filters string
		want    map[string][]string
	}{
		{`{"name":{"back":true},"driver":{"bridge":true},"label":{"tier=db":true},"type":{"custom":true},"dangling":{"false":true}}`,
			map[string][]string{"name": {"back"}, "driver": {"bridge"}, "label": {"tier=db"}, "type": {"custom"}, "dangling": {"false"}}},
		{`{"id":["aaaa"],"type":["custom","builtin"]}`, map[string][]string{"id": {"aaaa"}, "type": {"builtin", "custom"}}},
	} {
		nets.listTerms = nil
		rec := request(s, "GET", "/v1.41/networks?filters="+tc.filters, "")
		if rec.Code != 200 || !reflect.DeepEqual(nets.listTerms, tc.want) {
			t.Errorf("filters %s = %d, the service got %v; want 200 and %v", tc.filters, rec.Code, nets.listTerms, tc.want)
		}
	}
	if rec := request(s, "GET", "/v1.41/networks?filters=not-json", ""); rec.Code != 400 || !strings.Contains(replyText(rec), "invalid filters") {
		t.Errorf("malformed filters = %d %s, want 400", rec.Code, rec.Body)
	}
	nets.err = errs.New(errdefs.ErrInvalidArgument, "invalid filter 'color'")
	if rec := request(s, "GET", `/v1.41/networks?filters={"color":{"red":true}}`, ""); rec.Code != 400 || replyText(rec) != "invalid filter 'color'" {
		t.Errorf("a filter the service refuses = %d %s, want 400 with its message", rec.Code, rec.Body)
	}
}

func TestNetworkCreate(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		msg        string
		want       networksvc.CreateOptions
	}{
		// What docker 20.10's CLI sends for network create --subnet
		// --gateway --ip-range --internal --label -o.
		{name: "docker cli", body: `{"Name":"backend","CheckDuplicate":true,"Driver":"bridge","Scope":"","EnableIPv6":false,
			"IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.7.0.0/24","IPRange":"10.7.0.128/25","Gateway":"10.7.0.1"}]},
			"Internal":true,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,
			"Options":{"com.docker.network.bridge.name":"br-db"},"Labels":{"tier":"db"}}`, code: 201,
			want: networksvc.CreateOptions{Name: "backend", Driver: "bridge", Subnet: "10.7.0.0/24", Gateway: "10.7.0.1",
				IPRange: "10.7.0.128/25", Internal: true, Labels: map[string]string{"tier": "db"},
				Options: map[string]string{"com.docker.network.bridge.name": "br-db"}}},
		// docker-py's create_network("x") sends little; the addresses are
		// the service's to choose.
		{name: "docker-py", body: `{"Name":"x","Driver":null}`, code: 201, want: networksvc.CreateOptions{Name: "x"}},
		// The name, the driver and the addresses are passed as given: the
		// service checks them, with dockerd's messages.
		{name: "service checks", body: `{"Name":"host","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.0.0.0/33"}]}}`, code: 201,
			want: networksvc.CreateOptions{Name: "host", Driver: "overlay", Subnet: "10.0.0.0/33"}},
		{name: "attachable", body: `{"Name":"x","Attachable":true}`, code: 400, msg: "attachable networks are swarm networks"},
		{name: "ingress", body: `{"Name":"x","Ingress":true}`, code: 400, msg: "ingress networks"},
		{name: "config only", body: `{"Name":"x","ConfigOnly":true}`, code: 400, msg: "config-only networks are not supported"},
		{name: "config from", body: `{"Name":"x","ConfigFrom":{"Network":"y"}}`, code: 400, msg: "config-only networks are not supported"},
		{name: "ipv6", body: `{"Name":"x","EnableIPv6":true}`, code: 400, msg: "IPv6 networks are not supported"},
		{name: "swarm", body: `{"Name":"x","Scope":"swarm"}`, code: 400, msg: `network scope "swarm" is not supported`},
		{name: "ipam driver", body: `{"Name":"x","IPAM":{"Driver":"dhcp"}}`, code: 400, msg: `IPAM driver "dhcp" is not supported`},
		{name: "two subnets", body: `{"Name":"x","IPAM":{"Config":[{"Subnet":"10.1.0.0/24"},{"Subnet":"10.2.0.0/24"}]}}`, code: 400, msg: "a network has one IPv4 subnet"},
		{name: "aux", body: `{"Name":"x","IPAM":{"Config":[{"Subnet":"10.1.0.0/24","AuxiliaryAddresses":{"a":"10.1.0.3"}}]}}`, code: 400, msg: "auxiliary addresses"},
		{name: "empty body", body: ``, code: 400, msg: "request body is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, nets, _ := newNetworkTestServer()
			rec := request(s, "POST", "/v1.41/networks/create", tc.body)
			if rec.Code != tc.code || !strings.Contains(replyText(rec), tc.msg) {
				t.Fatalf("create = %d %s, want %d with %q", rec.Code, rec.Body, tc.code, tc.msg)
			}
			if tc.code != 201 {
				if len(nets.created) != 0 {
					t.Errorf("a refused create reached the service: %+v", nets.created)
				}
				return
			}
			jsonEqual(t, "create reply", rec.Body.Bytes(), `{"Id":"`+strings.Repeat("f", 64)+`","Warning":""}`)
			if len(nets.created) != 1 || !reflect.DeepEqual(nets.created[0], tc.want) {
				t.Errorf("the service got %+v, want %+v", nets.created, tc.want)
			}
		})
	}
}

func TestNetworkDeleteAndPrune(t *testing.T) {
	s, nets, _ := newNetworkTestServer()
	if rec := request(s, "DELETE", "/v1.41/networks/backend", ""); rec.Code != 204 || rec.Body.Len() != 0 {
		t.Errorf("DELETE backend = %d %s, want 204", rec.Code, rec.Body)
	}
	if rec := request(s, "DELETE", "/v1.41/networks/nope", ""); rec.Code != 404 || replyText(rec) != "network nope not found" {
		t.Errorf("DELETE nope = %d %s, want 404", rec.Code, rec.Body)
	}
	if !slices.Equal(nets.removed, []string{"backend"}) {
		t.Errorf("removed %q, want backend", nets.removed)
	}

	rec := request(s, "POST", `/v1.41/networks/prune?filters={"until":{"1h":true},"label":{"tier=db":true}}`, "")
	if rec.Code != 200 {
		t.Fatalf("prune = %d %s", rec.Code, rec.Body)
	}
	jsonEqual(t, "prune reply", rec.Body.Bytes(), `{"NetworksDeleted":["old"]}`)
	if want := map[string][]string{"until": {"1h"}, "label": {"tier=db"}}; !reflect.DeepEqual(nets.pruneTerms, want) {
		t.Errorf("prune passed %v, want %v", nets.pruneTerms, want)
	}

	// The service's refusals keep their class: the default network is
	// not the user's to remove (403, as dockerd), one in use conflicts.
	for _, tc := range []struct {
		err  error
		code int
	}{
		{errs.New(errdefs.ErrPermissionDenied, "bridge is a pre-defined network and cannot be removed"), 403},
		{errs.New(errdefs.ErrConflict, "error while removing network: network backend id aaaa has active endpoints"), 409},
	} {
		nets.err = tc.err
		if rec := request(s, "DELETE", "/v1.41/networks/backend", ""); rec.Code != tc.code || replyText(rec) != tc.err.Error() {
			t.Errorf("DELETE refused with %v = %d %s, want %d", tc.err, rec.Code, rec.Body, tc.code)
		}
	}
	nets.err = errs.New(errdefs.ErrInvalidArgument, "invalid filter 'dangling'")
	if rec := request(s, "POST", `/v1.41/networks/prune?filters={"dangling":{"true":true}}`, ""); rec.Code != 400 || replyText(rec) != "invalid filter 'dangling'" {
		t.Errorf("prune refused = %d %s, want 400", rec.Code, rec.Body)
	}
}

func TestNetworkConnectDisconnect(t *testing.T) {
	s, nets, ctrs := newNetworkTestServer()
	db, web := ctrs.list[1], ctrs.list[0]
	for _, tc := range []struct {
		name, path, body string
		code             int
		msg              string
	}{
		{"stopped, with an address and aliases", "/networks/backend/connect",
			`{"Container":"db","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.7.0.20"},"Aliases":["pg","primary"],"MacAddress":"02:42:0a:07:00:14"}}`, 200, ""},
		{"none", "/networks/backend/connect", `{"Container":"lo"}`, 400, "private (none) mode"},
		{"bad address", "/networks/backend/connect", `{"Container":"db","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.7.0"}}}`, 400, "invalid IPv4 address: 10.7.0"},
		{"ipv6", "/networks/backend/connect", `{"Container":"db","EndpointConfig":{"IPAMConfig":{"IPv6Address":"fd00::9"}}}`, 400, "IPv6 addresses are not supported"},
		{"bad mac", "/networks/backend/connect", `{"Container":"db","EndpointConfig":{"MacAddress":"nope"}}`, 400, "invalid MAC address: nope"},
		{"links", "/networks/backend/connect", `{"Container":"db","EndpointConfig":{"Links":["web:w"]}}`, 400, "container links are not supported"},
		{"no container", "/networks/backend/connect", `{}`, 400, "Container is required"},
		{"unknown container", "/networks/backend/connect", `{"Container":"ghost"}`, 404, "No such container: ghost"},

		{"disconnect", "/networks/backend/disconnect", `{"Container":"db"}`, 200, ""},
		{"disconnect by name", "/networks/bridge/disconnect", `{"Container":"web","Force":true}`, 200, ""},
		{"disconnect a gone container", "/networks/backend/disconnect", `{"Container":"ghost"}`, 404, "No such container: ghost"},
		{"force-disconnect a gone container", "/networks/backend/disconnect", `{"Container":"ghost","Force":true}`, 200, ""},
	} {
		rec := request(s, "POST", "/v1.41"+tc.path, tc.body)
		if rec.Code != tc.code || !strings.Contains(replyText(rec), tc.msg) {
			t.Errorf("%s: %s = %d %s, want %d with %q", tc.name, tc.path, rec.Code, rec.Body, tc.code, tc.msg)
		}
	}
	wantConnect := []string{"backend " + db.ID + "/db 10.7.0.20 [pg primary] 02:42:0a:07:00:14"}
	if !slices.Equal(nets.connected, wantConnect) {
		t.Errorf("connects %q, want %q", nets.connected, wantConnect)
	}
	wantDisconnect := []string{"backend " + db.ID + " false", "bridge " + web.ID + " true", "backend ghost true"}
	if !slices.Equal(nets.disconnects, wantDisconnect) {
		t.Errorf("disconnects %q, want %q", nets.disconnects, wantDisconnect)
	}
	// A running container is the service's to refuse: 409, its message.
	nets.err = errs.New(errdefs.ErrFailedPrecondition, "container web is running: its VM cannot take another network interface while it runs")
	if rec := request(s, "POST", "/v1.41/networks/backend/connect", `{"Container":"web"}`); rec.Code != 409 || replyText(rec) != nets.err.Error() {
		t.Errorf("connect refused by the service = %d %s, want 409", rec.Code, rec.Body)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
