package networks

// Endpoints and the per-container settings: what connects a container to
// networks, from its create (or docker network connect) to its removal
// (or disconnect), and the addresses handed out for it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// ContainerRef names the container an endpoint belongs to.
type ContainerRef struct {
	ID   string
	Name string
}

// EndpointOptions is what a user may ask of an endpoint (docker run --ip,
// --network-alias, --mac-address; docker network connect's flags).
type EndpointOptions struct {
	// IP is a requested address; the zero Addr lets the engine choose.
	IP      netip.Addr
	Aliases []string
	// MAC is a requested MAC; nil derives it from the address.
	MAC net.HardwareAddr
}

// MaxEndpoints is how many networks one container can join: its taps are
// named by slot, in one character.
const MaxEndpoints = 36

// endpointRecord is an Endpoint as stored.
type endpointRecord struct {
	NetworkID     string        `json:"networkId"`
	ContainerID   string        `json:"containerId"`
	ContainerName string        `json:"containerName"`
	Aliases       []string      `json:"aliases,omitempty"`
	IP            netip.Addr    `json:"ip"`
	MAC           string        `json:"mac"`
	StaticIP      bool          `json:"staticIp,omitempty"`
	StaticMAC     bool          `json:"staticMac,omitempty"`
	Slot          int           `json:"slot"`
	Tap           string        `json:"tap,omitempty"`
	Ports         []PortBinding `json:"ports,omitempty"`
}

func endpointKey(containerID, networkID string) []byte {
	return []byte(containerID + "/" + networkID)
}

func (t *txn) putEndpoint(e *Endpoint) error {
	b, err := json.Marshal(endpointRecord{NetworkID: e.NetworkID, ContainerID: e.ContainerID, ContainerName: e.ContainerName,
		Aliases: e.Aliases, IP: e.IP, MAC: e.MAC.String(), StaticIP: e.StaticIP, StaticMAC: e.StaticMAC,
		Slot: e.Slot, Tap: e.Tap, Ports: e.Ports})
	if err != nil {
		return err
	}
	return t.endpoints.Put(endpointKey(e.ContainerID, e.NetworkID), b)
}

func decodeEndpoint(k, v []byte) (Endpoint, error) {
	var r endpointRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %s: corrupt record: %w", k, err)
	}
	if !bytes.Equal(k, endpointKey(r.ContainerID, r.NetworkID)) {
		return Endpoint{}, fmt.Errorf("endpoint %s: corrupt record: it names %s/%s", k, r.ContainerID, r.NetworkID)
	}
	mac, err := net.ParseMAC(r.MAC)
	if err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %s: corrupt record: %w", k, err)
	}
	return Endpoint{NetworkID: r.NetworkID, ContainerID: r.ContainerID, ContainerName: r.ContainerName, Aliases: r.Aliases,
		IP: r.IP, MAC: mac, StaticIP: r.StaticIP, StaticMAC: r.StaticMAC, Slot: r.Slot, Tap: r.Tap, Ports: r.Ports}, nil
}

// eachEndpoint calls fn for every endpoint, or those of one container.
func (t *txn) eachEndpoint(containerID string, fn func(Endpoint) error) error {
	c := t.endpoints.Cursor()
	var prefix []byte
	k, v := c.First()
	if containerID != "" {
		prefix = []byte(containerID + "/")
		k, v = c.Seek(prefix)
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		e, err := decodeEndpoint(k, v)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) containerEndpoints(containerID string) ([]Endpoint, error) {
	var out []Endpoint
	err := t.eachEndpoint(containerID, func(e Endpoint) error { out = append(out, e); return nil })
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out, err
}

func (t *txn) countEndpoints(networkID string) int {
	n := 0
	if b := t.addresses.Bucket([]byte(networkID)); b != nil {
		b.ForEach(func(k, _ []byte) error {
			if len(k) == 4 {
				n++
			}
			return nil
		})
	}
	return n
}

// Connect gives a container an endpoint on a network: an address (the one
// asked for, or the next free one), a MAC and a slot. It changes nothing
// on the host.
func (s *Store) Connect(networkRef string, c ContainerRef, o EndpointOptions) (Endpoint, error) {
	if len(c.ID) != 64 {
		return Endpoint{}, errs.New(errdefs.ErrInvalidArgument, "invalid container id %q", c.ID)
	}
	if o.MAC != nil && (len(o.MAC) != 6 || o.MAC[0]&1 != 0) {
		return Endpoint{}, errs.New(errdefs.ErrInvalidArgument, "invalid MAC address %s: want a unicast Ethernet address", o.MAC)
	}
	var e Endpoint
	err := s.update(func(t *txn) error {
		n, err := t.resolve(networkRef)
		if err != nil {
			return err
		}
		if n.Default && o.IP.IsValid() {
			return errs.New(errdefs.ErrInvalidArgument, "user specified IP address is supported on user defined networks only")
		}
		if n.Default && len(o.Aliases) > 0 {
			return errs.New(errdefs.ErrInvalidArgument, "network-scoped alias is supported only for containers in user defined networks")
		}
		if t.endpoints.Get(endpointKey(c.ID, n.ID)) != nil {
			return errs.New(errdefs.ErrConflict, "endpoint with name %s already exists in network %s", c.Name, n.Name)
		}
		mine, err := t.containerEndpoints(c.ID)
		if err != nil {
			return err
		}
		slot, err := freeSlot(mine)
		if err != nil {
			return err
		}
		addrs, err := t.addresses.CreateBucketIfNotExists([]byte(n.ID))
		if err != nil {
			return err
		}
		taken := func(a netip.Addr) bool { b := a.As4(); return addrs.Get(b[:]) != nil }
		ip := o.IP.Unmap()
		if ip.IsValid() {
			if err := checkRequested(&n, ip); err != nil {
				return err
			}
			if taken(ip) {
				return errs.New(errdefs.ErrConflict, "Address already in use: %s on network %s", ip, n.Name)
			}
		} else {
			var last netip.Addr
			if b := addrs.Get(keyLast); len(b) == 4 {
				last = netip.AddrFrom4([4]byte(b))
			}
			var ok bool
			if ip, ok = nextFree(&n, last, taken); !ok {
				return errs.New(errdefs.ErrUnavailable, "no available IPv4 addresses on this network's address pools: %s (%s)", n.Name, n.ID)
			}
			b := ip.As4()
			if err := addrs.Put(keyLast, b[:]); err != nil {
				return err
			}
		}
		b := ip.As4()
		if err := addrs.Put(b[:], []byte(c.ID)); err != nil {
			return err
		}
		e = Endpoint{NetworkID: n.ID, ContainerID: c.ID, ContainerName: c.Name, Aliases: o.Aliases,
			IP: ip, MAC: o.MAC, StaticIP: o.IP.IsValid(), StaticMAC: o.MAC != nil, Slot: slot}
		if e.MAC == nil {
			e.MAC = MACFor(ip)
		}
		return t.putEndpoint(&e)
	})
	return e, err
}

func freeSlot(eps []Endpoint) (int, error) {
	used := map[int]bool{}
	for _, e := range eps {
		used[e.Slot] = true
	}
	for i := 0; i < MaxEndpoints; i++ {
		if !used[i] {
			return i, nil
		}
	}
	return 0, errs.New(errdefs.ErrInvalidArgument, "a container can join at most %d networks", MaxEndpoints)
}

// Disconnect removes a container's endpoint on a network and frees its
// address. It returns the endpoint as it was (still plumbed if it was:
// the caller unplumbs it first).
func (s *Store) Disconnect(networkRef, containerID string) (Endpoint, error) {
	var e Endpoint
	err := s.update(func(t *txn) error {
		n, err := t.resolve(networkRef)
		if err != nil {
			return err
		}
		k := endpointKey(containerID, n.ID)
		v := t.endpoints.Get(k)
		if v == nil {
			return errs.New(errdefs.ErrNotFound, "container %s is not connected to network %s", short(containerID), n.Name)
		}
		if e, err = decodeEndpoint(k, v); err != nil {
			return err
		}
		return t.deleteEndpoint(e)
	})
	return e, err
}

func (t *txn) deleteEndpoint(e Endpoint) error {
	if addrs := t.addresses.Bucket([]byte(e.NetworkID)); addrs != nil {
		b := e.IP.As4()
		if string(addrs.Get(b[:])) == e.ContainerID {
			if err := addrs.Delete(b[:]); err != nil {
				return err
			}
		}
	}
	return t.endpoints.Delete(endpointKey(e.ContainerID, e.NetworkID))
}

// Release removes every endpoint of a container, freeing their addresses,
// and its settings. It returns the endpoints removed.
func (s *Store) Release(containerID string) ([]Endpoint, error) {
	var gone []Endpoint
	err := s.update(func(t *txn) error {
		eps, err := t.containerEndpoints(containerID)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if err := t.deleteEndpoint(e); err != nil {
				return err
			}
		}
		gone = eps
		return t.settings.Delete([]byte(containerID))
	})
	return gone, err
}

// ContainerEndpoints returns a container's endpoints in slot order.
func (s *Store) ContainerEndpoints(containerID string) ([]Endpoint, error) {
	if containerID == "" {
		return nil, errs.New(errdefs.ErrInvalidArgument, "empty container id")
	}
	var out []Endpoint
	err := s.view(func(t *txn) error {
		var err error
		out, err = t.containerEndpoints(containerID)
		return err
	})
	return out, err
}

// Endpoints returns every endpoint, of every container.
func (s *Store) Endpoints() ([]Endpoint, error) {
	var out []Endpoint
	err := s.view(func(t *txn) error {
		return t.eachEndpoint("", func(e Endpoint) error { out = append(out, e); return nil })
	})
	return out, err
}

// RenameContainer records a container's new name on its endpoints, which
// the networks' DNS serves. It returns the endpoints.
func (s *Store) RenameContainer(containerID, name string) ([]Endpoint, error) {
	var out []Endpoint
	err := s.update(func(t *txn) error {
		var eps []Endpoint
		if err := t.eachEndpoint(containerID, func(e Endpoint) error { eps = append(eps, e); return nil }); err != nil {
			return err
		}
		for _, e := range eps {
			e.ContainerName = name
			if err := t.putEndpoint(&e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// SetPlumbing records the taps and resolved ports of a container's
// endpoints (empty when it stops). Each endpoint given must still exist.
func (s *Store) SetPlumbing(eps []Endpoint) error {
	return s.update(func(t *txn) error {
		for _, e := range eps {
			k := endpointKey(e.ContainerID, e.NetworkID)
			v := t.endpoints.Get(k)
			if v == nil {
				return errs.New(errdefs.ErrNotFound, "container %s is not connected to network %s", short(e.ContainerID), short(e.NetworkID))
			}
			cur, err := decodeEndpoint(k, v)
			if err != nil {
				return err
			}
			cur.Tap, cur.Ports = e.Tap, e.Ports
			if err := t.putEndpoint(&cur); err != nil {
				return err
			}
		}
		return nil
	})
}

// Settings are a container's networking settings beyond its endpoints,
// recorded at its create and used at each start.
type Settings struct {
	// Ports are the ports to publish (docker run -p), host ports 0 for
	// ephemeral ones.
	Ports []PortBinding `json:"ports,omitempty"`
	DNS   DNSConfig     `json:"dns"`
}

// DNSConfig is what a container's /etc/hosts and /etc/resolv.conf are made
// from, besides its networks.
type DNSConfig struct {
	// Hostname and Domainname are the container's (docker run -h,
	// --domainname); an empty hostname is the short container ID.
	Hostname   string `json:"hostname,omitempty"`
	Domainname string `json:"domainname,omitempty"`
	// Servers, Search and Options are docker run's --dns, --dns-search and
	// --dns-option.
	Servers []string `json:"servers,omitempty"`
	Search  []string `json:"search,omitempty"`
	Options []string `json:"options,omitempty"`
	// ExtraHosts are docker run's --add-host, "name:address".
	ExtraHosts []string `json:"extraHosts,omitempty"`
}

// UpdateSettings changes a container's settings under the store's lock.
func (s *Store) UpdateSettings(containerID string, fn func(*Settings) error) error {
	if len(containerID) != 64 {
		return errs.New(errdefs.ErrInvalidArgument, "invalid container id %q", containerID)
	}
	return s.update(func(t *txn) error {
		var st Settings
		if b := t.settings.Get([]byte(containerID)); b != nil {
			if err := json.Unmarshal(b, &st); err != nil {
				return fmt.Errorf("container %s: corrupt network settings: %w", short(containerID), err)
			}
		}
		if err := fn(&st); err != nil {
			return err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		return t.settings.Put([]byte(containerID), b)
	})
}

// Settings returns a container's settings (zero if none were recorded).
func (s *Store) Settings(containerID string) (Settings, error) {
	var st Settings
	err := s.view(func(t *txn) error {
		if b := t.settings.Get([]byte(containerID)); b != nil {
			if err := json.Unmarshal(b, &st); err != nil {
				return fmt.Errorf("container %s: corrupt network settings: %w", short(containerID), err)
			}
		}
		return nil
	})
	return st, err
}

// tapPrefix starts the names of the engine's taps.
const tapPrefix = "vt"

// TapName is the tap of a container's endpoint in a slot: "vt", 12 hex
// digits of the container ID, and the slot in base 36 unless it is 0; at
// most 15 characters (IFNAMSIZ - 1).
func TapName(containerID string, slot int) string {
	name := tapPrefix + short(containerID)
	if slot > 0 {
		name += strconv.FormatInt(int64(slot), 36)
	}
	return name
}

// IsTapName reports whether name is one TapName makes.
func IsTapName(name string) bool {
	if len(name) != 14 && len(name) != 15 || name[:2] != tapPrefix {
		return false
	}
	for _, r := range name[2:14] {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	if len(name) == 15 {
		r := name[14]
		return r >= '1' && r <= '9' || r >= 'a' && r <= 'z'
	}
	return true
}
