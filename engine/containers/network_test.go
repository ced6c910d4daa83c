package containers

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A create's network options survive the store; a record written before
// networking loads with no network options and mode none, as it ran.
func TestStoreKeepsNetworkConfig(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := newContainer("web", time.Now().UTC())
	c.Config.Network = &NetworkConfig{
		Mode: "backend",
		PortBindings: []PortBinding{
			{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, ContainerPort: 80},
			{Proto: "udp", ContainerPort: 53},
		},
		PublishAll:   true,
		ExposedPorts: []Port{{Port: 53, Proto: "udp"}, {Port: 80, Proto: "tcp"}},
		DNS:          []string{"10.0.0.53"}, DNSSearch: []string{"example.org"}, DNSOptions: []string{"ndots:2"},
		ExtraHosts: []string{"db:10.0.0.5", "host.docker.internal:host-gateway"},
		MacAddress: "02:42:ac:11:00:09",
	}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("web")
	if err != nil || !reflect.DeepEqual(got.Config.Network, c.Config.Network) {
		t.Fatalf("Get(web).Config.Network = %+v, %v; want %+v", got.Config.Network, err, c.Config.Network)
	}
	if m := got.Config.NetworkMode(); m != "backend" {
		t.Errorf("NetworkMode() = %q, want backend", m)
	}

	id := NewID()
	old := `{"id":"` + id + `","name":"old","created":"2025-01-02T03:04:05Z",` +
		`"config":{"image":"busybox","imageId":"sha256:0123","args":["sh"],"hypervisor":"kvm","accel":"kvm","autoRemove":false},` +
		`"state":{"status":"exited","exitCode":0,"oomKilled":false}}`
	err = s.update(func(recs, names *bolt.Bucket) error {
		if err := names.Put([]byte("old"), []byte(id)); err != nil {
			return err
		}
		return recs.Put([]byte(id), []byte(old))
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Get("old")
	if err != nil || got.Config.Network != nil || got.Config.NetworkMode() != NetworkNone {
		t.Fatalf("Get(old) = network %+v mode %q, %v; want none", got.Config.Network, got.Config.NetworkMode(), err)
	}
}
