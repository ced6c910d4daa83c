package networks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmctl/vmctl/engine/boltfile"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/flock"
)

// Store keeps networks, endpoints and address allocations in a bbolt
// database under <data-root>/networks/:
//
//	networks.db       v1/networks/<id> -> Network (JSON), v1/names/<name> -> id,
//	                  v1/endpoints/<container id>/<network id> -> Endpoint (JSON),
//	                  v1/addresses/<network id>/<4-byte address> -> container id
//	                  (and "last-handed-out" -> the address handed out last),
//	                  v1/settings/<container id> -> Settings (JSON),
//	                  v1/config/address-pools -> the daemon's pools (JSON)
//	networks.db.lock  serialises the processes that open networks.db
//	host.lock         serialises the processes that change the host (LockHost)
//
// Every change is one transaction, so an address is handed out once
// across processes, and a name or a subnet is taken once. As the
// container store does (engine/containers), it opens the database per
// operation: several processes share a data root, and bbolt holds an
// flock on the file for as long as it is open.
type Store struct {
	root string
	db   string // and its flock(2) queue, db + ".lock"

	// pools are cut into subnets for networks created without one.
	pools []AddressPool

	// mu keeps this process's goroutines from queueing in flock(2) one
	// thread each; the flock then only orders processes.
	mu sync.RWMutex
}

var (
	bucketV1        = []byte("v1")
	bucketNetworks  = []byte("networks")
	bucketNames     = []byte("names")
	bucketEndpoints = []byte("endpoints")
	bucketAddresses = []byte("addresses")
	bucketSettings  = []byte("settings")
	bucketConfig    = []byte("config")
	keyPools        = []byte("address-pools")
	keyLast         = []byte("last-handed-out") // never 4 bytes long, unlike an address
)

// Open opens (creating if needed) the store under root and makes sure the
// default network exists, as opts describe it. Options left empty keep
// what is stored, so that a process started without the daemon's flags
// (vmctl serving itself) does not undo them; options that change the
// default network while containers are connected to it are refused.
func Open(root string, opts DaemonOptions) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("network store: %w", err)
	}
	s := &Store{root: root, db: filepath.Join(root, "networks.db")}
	def, err := defaultNetwork(opts)
	if err != nil {
		return nil, err
	}
	explicit := opts.BIP != "" || opts.FixedCIDR != "" || opts.MTU != 0
	err = s.update(func(t *txn) error {
		if err := s.loadPools(t, opts.AddressPools); err != nil {
			return err
		}
		old, err := t.getByName(DefaultName)
		if errdefs.IsNotFound(err) {
			def.ID, def.Created = NewID(), time.Now().UTC()
			return t.putNetwork(&def)
		}
		if err != nil || !explicit {
			return err
		}
		if old.Subnet == def.Subnet && old.Gateway == def.Gateway && old.IPRange == def.IPRange && old.MTU == def.MTU {
			return nil
		}
		if n := t.countEndpoints(old.ID); n > 0 {
			return errs.New(errdefs.ErrFailedPrecondition,
				"the default network (%s, gateway %s) has %d container(s): remove them before changing --bip, --fixed-cidr or --mtu", old.Subnet, old.Gateway, n)
		}
		def.ID, def.Created = old.ID, old.Created
		if err := t.checkOverlap(def.Subnet, def.ID); err != nil {
			return err
		}
		return t.putNetwork(&def)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// loadPools records the daemon's address pools when it names some, so
// that every process on the data root cuts subnets from the same ones, and
// reads the recorded ones otherwise.
func (s *Store) loadPools(t *txn, pools []AddressPool) error {
	if len(pools) > 0 {
		b, err := json.Marshal(pools)
		if err != nil {
			return err
		}
		s.pools = pools
		return t.config.Put(keyPools, b)
	}
	s.pools = DefaultAddressPools
	if b := t.config.Get(keyPools); b != nil {
		var stored []AddressPool
		if err := json.Unmarshal(b, &stored); err != nil {
			return fmt.Errorf("network store: corrupt address pools: %w", err)
		}
		s.pools = stored
	}
	return nil
}

// defaultNetwork is the default network as the daemon's options make it.
func defaultNetwork(opts DaemonOptions) (Network, error) {
	n := Network{Name: DefaultName, Driver: DriverBridge, Bridge: DefaultBridge, Default: true,
		Subnet: DefaultSubnet, Gateway: DefaultSubnet.Addr().Next(), MTU: DefaultMTU,
		Options: map[string]string{OptionBridgeName: DefaultBridge}}
	if opts.MTU != 0 {
		if opts.MTU < 68 || opts.MTU > 65535 {
			return n, errs.New(errdefs.ErrInvalidArgument, "invalid --mtu %d: want 68 to 65535", opts.MTU)
		}
		n.MTU = opts.MTU
	}
	if opts.BIP != "" {
		p, err := netip.ParsePrefix(opts.BIP)
		if err != nil || !p.Addr().Is4() {
			return n, errs.New(errdefs.ErrInvalidArgument, "invalid --bip %q: want the gateway address and prefix, such as 172.30.0.1/16", opts.BIP)
		}
		a, err := parseAddressing(p.Masked().String(), p.Addr().String(), "")
		if err != nil {
			return n, fmt.Errorf("--bip %s: %w", opts.BIP, err)
		}
		n.Subnet, n.Gateway = a.subnet, a.gateway
	}
	if opts.FixedCIDR != "" {
		a, err := parseAddressing(n.Subnet.String(), n.Gateway.String(), opts.FixedCIDR)
		if err != nil {
			return n, fmt.Errorf("--fixed-cidr %s: %w", opts.FixedCIDR, err)
		}
		n.IPRange = a.ipRange
	}
	return n, nil
}

// LockHost takes the lock that serialises changes to the host's
// networking (bridges, taps, the nftables table) across processes. The
// caller releases it.
func (s *Store) LockHost(ctx context.Context) (*flock.Lock, error) {
	return flock.Acquire(ctx, filepath.Join(s.root, "host.lock"))
}

// txn is one transaction's view of the v1 buckets.
type txn struct {
	networks, names, endpoints, addresses, settings, config *bolt.Bucket
}

func (s *Store) update(fn func(*txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.withDB(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			v1, err := tx.CreateBucketIfNotExists(bucketV1)
			if err != nil {
				return err
			}
			var t txn
			for _, b := range []struct {
				name []byte
				to   **bolt.Bucket
			}{{bucketNetworks, &t.networks}, {bucketNames, &t.names}, {bucketEndpoints, &t.endpoints}, {bucketAddresses, &t.addresses}, {bucketSettings, &t.settings}, {bucketConfig, &t.config}} {
				if *b.to, err = v1.CreateBucketIfNotExists(b.name); err != nil {
					return err
				}
			}
			return fn(&t)
		})
	})
}

func (s *Store) view(fn func(*txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.withDB(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			v1 := tx.Bucket(bucketV1)
			if v1 == nil {
				return fmt.Errorf("network store %s: no v1 bucket: the database is not a vmctl store", s.db)
			}
			t := txn{networks: v1.Bucket(bucketNetworks), names: v1.Bucket(bucketNames), endpoints: v1.Bucket(bucketEndpoints),
				addresses: v1.Bucket(bucketAddresses), settings: v1.Bucket(bucketSettings), config: v1.Bucket(bucketConfig)}
			if t.networks == nil || t.names == nil || t.endpoints == nil || t.addresses == nil || t.settings == nil || t.config == nil {
				return fmt.Errorf("network store %s: incomplete v1 bucket", s.db)
			}
			return fn(&t)
		})
	})
}

// withDB opens the database for one operation (boltfile.Use).
func (s *Store) withDB(readOnly bool, fn func(*bolt.DB) error) error {
	return boltfile.Use(s.db, "network store", readOnly, fn)
}

func notFound(ref string) error {
	return errs.New(errdefs.ErrNotFound, "network %s not found", ref)
}

func (t *txn) putNetwork(n *Network) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := t.names.Put([]byte(n.Name), []byte(n.ID)); err != nil {
		return err
	}
	return t.networks.Put([]byte(n.ID), b)
}

func (t *txn) getNetwork(id string) (Network, error) {
	var n Network
	b := t.networks.Get([]byte(id))
	if b == nil {
		return n, notFound(id)
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("network %s: corrupt record: %w", short(id), err)
	}
	if n.ID != id {
		return n, fmt.Errorf("network %s: corrupt record: it names network %q", short(id), n.ID)
	}
	return n, nil
}

func (t *txn) getByName(name string) (Network, error) {
	id := t.names.Get([]byte(name))
	if id == nil {
		return Network{}, notFound(name)
	}
	return t.getNetwork(string(id))
}

// resolve finds a network as dockerd does: by full ID, by name, then by a
// unique ID prefix.
func (t *txn) resolve(ref string) (Network, error) {
	if ref == "" {
		return Network{}, errs.New(errdefs.ErrInvalidArgument, "network name or ID is empty")
	}
	if t.networks.Get([]byte(ref)) != nil {
		return t.getNetwork(ref)
	}
	if id := t.names.Get([]byte(ref)); id != nil {
		return t.getNetwork(string(id))
	}
	var found []string
	c := t.networks.Cursor()
	for k, _ := c.Seek([]byte(ref)); k != nil && strings.HasPrefix(string(k), ref); k, _ = c.Next() {
		found = append(found, string(k))
	}
	switch len(found) {
	case 0:
		return Network{}, notFound(ref)
	case 1:
		return t.getNetwork(found[0])
	}
	return Network{}, errs.New(errdefs.ErrInvalidArgument, "network %s is ambiguous (%d matches found based on ID prefix)", ref, len(found))
}

// checkOverlap refuses a subnet that overlaps another network's.
func (t *txn) checkOverlap(subnet netip.Prefix, self string) error {
	return t.networks.ForEach(func(k, _ []byte) error {
		if string(k) == self {
			return nil
		}
		n, err := t.getNetwork(string(k))
		if err != nil {
			return err
		}
		if n.Subnet.Overlaps(subnet) {
			return errs.New(errdefs.ErrConflict, "invalid pool request: Pool overlaps with other one on this address space (%s overlaps %s of network %s)", subnet, n.Subnet, n.Name)
		}
		return nil
	})
}

func (t *txn) allSubnets() ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := t.networks.ForEach(func(k, _ []byte) error {
		n, err := t.getNetwork(string(k))
		if err != nil {
			return err
		}
		out = append(out, n.Subnet)
		return nil
	})
	return out, err
}

// Create makes a network as o asks. A network without a subnet gets the
// first subnet of the address pools that overlaps no other network and
// nothing in hostTaken (the host's routes and addresses). It changes
// nothing on the host: a network's bridge is made when its first
// container starts.
func (s *Store) Create(o CreateOptions, hostTaken []netip.Prefix) (Network, error) {
	if err := ValidateName(o.Name); err != nil {
		return Network{}, err
	}
	if o.Driver == "" {
		o.Driver = DriverBridge
	}
	if o.Driver != DriverBridge {
		return Network{}, errs.New(errdefs.ErrInvalidArgument, "network driver %q is not supported: only %s networks can be created", o.Driver, DriverBridge)
	}
	addr, err := parseAddressing(o.Subnet, o.Gateway, o.IPRange)
	if err != nil {
		return Network{}, err
	}
	n := Network{ID: NewID(), Name: o.Name, Driver: o.Driver, Internal: o.Internal, MTU: DefaultMTU,
		Subnet: addr.subnet, Gateway: addr.gateway, IPRange: addr.ipRange,
		Labels: o.Labels, Options: o.Options, Created: time.Now().UTC()}
	n.Bridge = "br-" + n.ShortID()
	if err := applyOptions(&n); err != nil {
		return Network{}, err
	}
	err = s.update(func(t *txn) error {
		if id := t.names.Get([]byte(n.Name)); id != nil {
			return errs.New(errdefs.ErrConflict, "network with name %s already exists", n.Name)
		}
		if def, err := t.getByName(DefaultName); err == nil && n.MTU == DefaultMTU && o.Options[OptionMTU] == "" {
			n.MTU = def.MTU // the daemon's --mtu
		}
		if err := t.checkBridgeName(n.Bridge); err != nil {
			return err
		}
		if !n.Subnet.IsValid() {
			taken, err := t.allSubnets()
			if err != nil {
				return err
			}
			sub, err := chooseSubnet(s.pools, append(taken, hostTaken...))
			if err != nil {
				return err
			}
			n.Subnet, n.Gateway = sub, sub.Addr().Next()
		} else if err := t.checkOverlap(n.Subnet, n.ID); err != nil {
			return err
		}
		return t.putNetwork(&n)
	})
	if err != nil {
		return Network{}, err
	}
	return n, nil
}

// applyOptions reads the driver options a network understands.
func applyOptions(n *Network) error {
	if name, ok := n.Options[OptionBridgeName]; ok {
		if err := validIfName(name); err != nil {
			return errs.New(errdefs.ErrInvalidArgument, "invalid %s %q: %v", OptionBridgeName, name, err)
		}
		n.Bridge = name
	}
	if v, ok := n.Options[OptionMTU]; ok {
		var mtu int
		if _, err := fmt.Sscanf(v, "%d", &mtu); err != nil || fmt.Sprint(mtu) != v || mtu < 68 || mtu > 65535 {
			return errs.New(errdefs.ErrInvalidArgument, "invalid %s %q: want 68 to 65535", OptionMTU, v)
		}
		n.MTU = mtu
	}
	return nil
}

// validIfName checks a Linux interface name.
func validIfName(name string) error {
	if name == "" || len(name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("an interface name has 1 to %d characters", unix.IFNAMSIZ-1)
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return errors.New("an interface name has no '/', ':' or white space")
	}
	if strings.HasPrefix(name, tapPrefix) {
		return fmt.Errorf("names starting with %q are the engine's taps", tapPrefix)
	}
	return nil
}

func (t *txn) checkBridgeName(bridge string) error {
	return t.networks.ForEach(func(k, _ []byte) error {
		n, err := t.getNetwork(string(k))
		if err != nil {
			return err
		}
		if n.Bridge == bridge {
			return errs.New(errdefs.ErrConflict, "bridge %s is already the bridge of network %s", bridge, n.Name)
		}
		return nil
	})
}

// Get finds a network by ID, name or unique ID prefix.
func (s *Store) Get(ref string) (Network, error) {
	var n Network
	err := s.view(func(t *txn) error {
		var err error
		n, err = t.resolve(ref)
		return err
	})
	return n, err
}

// List returns every network, the default one first, then by name.
func (s *Store) List() ([]Network, error) {
	var out []Network
	err := s.view(func(t *txn) error {
		return t.networks.ForEach(func(k, _ []byte) error {
			n, err := t.getNetwork(string(k))
			if err != nil {
				return err
			}
			out = append(out, n)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Default != out[j].Default {
			return out[i].Default
		}
		return out[i].Name < out[j].Name
	})
	return out, err
}

// Remove deletes a network that has no endpoints, with its addresses'
// bookkeeping. The default network cannot be removed.
func (s *Store) Remove(ref string) (Network, error) {
	var n Network
	err := s.update(func(t *txn) error {
		var err error
		if n, err = t.resolve(ref); err != nil {
			return err
		}
		if n.Default {
			return errs.New(errdefs.ErrPermissionDenied, "%s is a pre-defined network and cannot be removed", n.Name)
		}
		if c := t.countEndpoints(n.ID); c > 0 {
			return errs.New(errdefs.ErrConflict, "error while removing network: network %s id %s has active endpoints (%d container(s))", n.Name, n.ID, c)
		}
		if err := t.addresses.DeleteBucket([]byte(n.ID)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		if err := t.names.Delete([]byte(n.Name)); err != nil {
			return err
		}
		return t.networks.Delete([]byte(n.ID))
	})
	return n, err
}
