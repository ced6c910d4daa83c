package server

// The /networks endpoints: docker network ls, inspect, create, rm, prune,
// connect and disconnect, in API 1.41's shapes.

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
)

func (s *Server) networkRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /networks", s.networkList)
	m.HandleFunc("POST /networks/create", s.networkCreate)
	m.HandleFunc("POST /networks/prune", s.networkPrune)
	m.HandleFunc("GET /networks/{id}", s.networkInspect)
	m.HandleFunc("DELETE /networks/{id}", s.networkDelete)
	m.HandleFunc("POST /networks/{id}/connect", s.networkConnect)
	m.HandleFunc("POST /networks/{id}/disconnect", s.networkDisconnect)
}

// errNoNetworks answers for a server built without a network service.
var errNoNetworks = errs.New(errdefs.ErrNotImplemented, "networks are not available: this engine runs without its network service")

// networkJSON converts a network to its wire form; containers is the
// Containers map of inspect, empty in a list as dockerd sends it from API
// 1.28 on.
func networkJSON(n networksvc.Network, containers map[string]network.EndpointResource) network.Inspect {
	cfg := network.IPAMConfig{Subnet: n.Subnet, Gateway: n.Gateway, IPRange: n.IPRange}
	ipam := network.IPAM{Driver: "default", Config: []network.IPAMConfig{cfg}, Options: map[string]string{}}
	options := labelsOrEmpty(n.Options)
	if n.Default {
		// dockerd shows the default bridge's options this way and sends no
		// IPAM options for it.
		ipam.Options = nil
		options = map[string]string{}
		for k, v := range n.Options {
			options[k] = v
		}
		options["com.docker.network.bridge.default_bridge"] = "true"
		options["com.docker.network.bridge.name"] = n.Bridge
		options["com.docker.network.driver.mtu"] = strconv.Itoa(n.MTU)
	}
	if containers == nil {
		containers = map[string]network.EndpointResource{}
	}
	return network.Inspect{
		Network: network.Network{
			Name: n.Name, ID: n.ID, Created: n.Created, Scope: "local", Driver: n.Driver,
			EnableIPv4: true, IPAM: ipam, Internal: n.Internal,
			Options: options, Labels: labelsOrEmpty(n.Labels),
		},
		Containers: containers,
	}
}

// endpointID names a container's endpoint on a network: the engine keeps
// one endpoint per pair, so the pair names it.
func endpointID(networkID, containerID string) string {
	sum := sha256.Sum256([]byte(networkID + "/" + containerID))
	return hex.EncodeToString(sum[:])
}

// networkList is GET /networks: docker network ls. The network service
// checks and matches the filters (name, id, label, driver, type, dangling,
// scope), with dockerd's messages.
func (s *Server) networkList(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	list, err := s.networks.List(r.Context(), terms)
	if err != nil {
		writeError(w, err)
		return
	}
	// dockerd's list entries are inspect's, with Containers empty.
	out := []network.Inspect{}
	for _, n := range list {
		out = append(out, networkJSON(n, nil))
	}
	writeJSON(w, http.StatusOK, out)
}

// networkInspect is GET /networks/{id}, with the containers on the
// network. verbose is for swarm networks and changes nothing here; a scope
// other than local finds nothing, as every network is local.
func (s *Server) networkInspect(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	ref := r.PathValue("id")
	if _, err := boolParam(r, "verbose"); err != nil {
		writeError(w, err)
		return
	}
	if scope := r.URL.Query().Get("scope"); scope != "" && scope != "local" {
		writeError(w, errs.New(errdefs.ErrNotFound, "network %s not found", ref))
		return
	}
	n, err := s.networks.Get(r.Context(), ref)
	if err != nil {
		writeError(w, err)
		return
	}
	containers, err := s.networkContainers(r, n)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, networkJSON(n, containers))
}

// networkContainers is inspect's Containers: the containers with an
// endpoint on n, by container ID.
func (s *Server) networkContainers(r *http.Request, n networksvc.Network) (map[string]network.EndpointResource, error) {
	eps, err := s.networks.NetworkEndpoints(r.Context(), n.ID)
	if err != nil {
		return nil, err
	}
	out := map[string]network.EndpointResource{}
	for _, e := range eps {
		res := network.EndpointResource{Name: e.ContainerName, EndpointID: endpointID(n.ID, e.ContainerID), MacAddress: network.HardwareAddr(e.MAC)}
		if e.IP.IsValid() {
			res.IPv4Address = netip.PrefixFrom(e.IP, n.Subnet.Bits())
		}
		out[e.ContainerID] = res
	}
	return out, nil
}

// networkCreateRequest is POST /networks/create's body as API 1.41
// clients send it (CheckDuplicate; EnableIPv6 a plain boolean) and as
// newer ones do (EnableIPv4). Addresses stay strings here, so that a
// malformed one gets the network service's message, not a JSON error.
type networkCreateRequest struct {
	Name           string
	CheckDuplicate bool
	Driver         string
	Scope          string
	EnableIPv4     *bool
	EnableIPv6     *bool
	IPAM           *struct {
		Driver  string
		Options map[string]string
		Config  []struct {
			Subnet, IPRange, Gateway string
			AuxAddress               map[string]string `json:"AuxiliaryAddresses"`
		}
	}
	Internal   bool
	Attachable bool
	Ingress    bool
	ConfigOnly bool
	ConfigFrom *struct{ Network string }
	Options    map[string]string
	Labels     map[string]string
}

// createOptions refuses what the API can ask of a network that only swarm
// or IPv6 networks are, and returns the rest for the network service,
// which checks the name, the driver and the addresses with dockerd's
// messages. CheckDuplicate changes nothing: names are unique whatever it
// says, as in dockerd since API 1.44.
func (req *networkCreateRequest) createOptions() (networksvc.CreateOptions, error) {
	bad := func(format string, args ...any) (networksvc.CreateOptions, error) {
		return networksvc.CreateOptions{}, errs.New(errdefs.ErrInvalidArgument, format, args...)
	}
	switch {
	case req.Scope != "" && req.Scope != "local":
		return bad("network scope %q is not supported: vmctl networks are local", req.Scope)
	case req.Attachable:
		return bad("attachable networks are swarm networks, which vmctl does not have")
	case req.Ingress:
		return bad("ingress networks are swarm networks, which vmctl does not have")
	case req.ConfigOnly || req.ConfigFrom != nil && req.ConfigFrom.Network != "":
		return bad("config-only networks are not supported: give the network's options when creating it")
	case req.EnableIPv6 != nil && *req.EnableIPv6:
		return bad("IPv6 networks are not supported: vmctl networks are IPv4")
	case req.EnableIPv4 != nil && !*req.EnableIPv4:
		return bad("networks without IPv4 are not supported")
	}
	o := networksvc.CreateOptions{Name: req.Name, Driver: req.Driver, Internal: req.Internal, Labels: req.Labels, Options: req.Options}
	if ipam := req.IPAM; ipam != nil {
		switch {
		case ipam.Driver != "" && ipam.Driver != "default":
			return bad("IPAM driver %q is not supported: only the default one", ipam.Driver)
		case len(ipam.Options) > 0:
			return bad("IPAM driver options are not supported")
		case len(ipam.Config) > 1:
			return bad("a network has one IPv4 subnet: give one --subnet, not %d", len(ipam.Config))
		}
		if len(ipam.Config) == 1 {
			c := ipam.Config[0]
			if len(c.AuxAddress) > 0 {
				return bad("auxiliary addresses are not supported")
			}
			o.Subnet, o.Gateway, o.IPRange = c.Subnet, c.Gateway, c.IPRange
		}
	}
	return o, nil
}

// networkCreate is POST /networks/create: docker network create.
func (s *Server) networkCreate(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	var req networkCreateRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	o, err := req.createOptions()
	if err != nil {
		writeError(w, err)
		return
	}
	n, err := s.networks.Create(r.Context(), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, network.CreateResponse{ID: n.ID})
}

// networkDelete is DELETE /networks/{id}: docker network rm. The network
// service refuses the default network, and a network containers are
// connected to.
func (s *Server) networkDelete(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	if err := s.networks.Remove(r.Context(), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// networkPrune is POST /networks/prune: docker network prune. The network
// service checks and applies the filters (until, label, label!).
func (s *Server) networkPrune(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	removed, err := s.networks.Prune(r.Context(), terms)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, network.PruneReport{NetworksDeleted: removed})
}

// endpointConfig is an endpoint's settings as a client sends them, in
// NetworkingConfig.EndpointsConfig and in connect: addresses stay strings
// so that a malformed one gets dockerd's message. The operational fields
// a client may echo back from inspect are ignored, as dockerd ignores
// them.
type endpointConfig struct {
	IPAMConfig *struct {
		IPv4Address  string
		IPv6Address  string
		LinkLocalIPs []string
	}
	Links      []string
	Aliases    []string
	DriverOpts map[string]string
	MacAddress string
}

// endpointOptions checks an endpoint's settings and returns what the
// engine asks of the endpoint. Whether the network takes them (the
// default network takes neither addresses nor aliases) is the network
// service's to say.
func endpointOptions(ec *endpointConfig) (containersvc.EndpointOptions, error) {
	var o containersvc.EndpointOptions
	if ec == nil {
		return o, nil
	}
	bad := func(format string, args ...any) (containersvc.EndpointOptions, error) {
		return containersvc.EndpointOptions{}, errs.New(errdefs.ErrInvalidArgument, format, args...)
	}
	if c := ec.IPAMConfig; c != nil {
		switch {
		case c.IPv6Address != "":
			return bad("IPv6 addresses are not supported: vmctl networks are IPv4")
		case len(c.LinkLocalIPs) > 0:
			return bad("link-local addresses are not supported")
		}
		if c.IPv4Address != "" {
			ip, err := parseIPv4(c.IPv4Address)
			if err != nil {
				return bad("invalid IPv4 address: %s", c.IPv4Address)
			}
			o.IP = ip
		}
	}
	switch {
	case len(ec.Links) > 0:
		return bad("container links are not supported: use a user-defined network, where containers find each other by name")
	case len(ec.DriverOpts) > 0:
		return bad("endpoint driver options are not supported")
	}
	if ec.MacAddress != "" {
		mac, err := parseMAC(ec.MacAddress)
		if err != nil {
			return bad("invalid MAC address: %s", ec.MacAddress)
		}
		o.MAC = mac
	}
	o.Aliases = ec.Aliases
	return o, nil
}

// connectRequest is POST /networks/{id}/connect's body.
type connectRequest struct {
	Container      string
	EndpointConfig *endpointConfig
}

// networkConnect is POST /networks/{id}/connect: docker network connect.
// The network service refuses a running container: its VM cannot take
// another network device while it runs.
func (s *Server) networkConnect(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	var req connectRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if req.Container == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "no container given: Container is required"))
		return
	}
	o, err := endpointOptions(req.EndpointConfig)
	if err != nil {
		writeError(w, err)
		return
	}
	c, err := s.containers.Get(req.Container)
	if err != nil {
		writeError(w, err)
		return
	}
	if c.Config.NetworkMode() == containersvc.NetworkNone {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "container cannot be connected to multiple networks with one of the networks in private (none) mode"))
		return
	}
	_, err = s.networks.Connect(r.Context(), r.PathValue("id"), networksvc.ContainerRef{ID: c.ID, Name: c.Name},
		networksvc.EndpointOptions{IP: o.IP, Aliases: o.Aliases, MAC: o.MAC})
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// disconnectRequest is POST /networks/{id}/disconnect's body.
type disconnectRequest struct {
	Container string
	Force     bool
}

// networkDisconnect is POST /networks/{id}/disconnect: docker network
// disconnect. The network service refuses a running container unless
// Force, which cuts its interface at once; Force also lets a container
// that no longer exists be disconnected by its ID, as dockerd does for a
// stale endpoint.
func (s *Server) networkDisconnect(w http.ResponseWriter, r *http.Request) {
	if s.networks == nil {
		writeError(w, errNoNetworks)
		return
	}
	var req disconnectRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if req.Container == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "no container given: Container is required"))
		return
	}
	id := req.Container
	c, err := s.containers.Get(req.Container)
	switch {
	case err == nil:
		id = c.ID
	case !req.Force || !errdefs.IsNotFound(err):
		writeError(w, err)
		return
	}
	if err := s.networks.Disconnect(r.Context(), r.PathValue("id"), id, req.Force); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
