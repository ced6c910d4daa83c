package containers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestSelect(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	mk := func(name, id string, age int, st State, image string, labels map[string]string) *Container {
		return &Container{ID: id + strings.Repeat("0", 64-len(id)), Name: name, Created: t0.Add(-time.Duration(age) * time.Minute),
			Config: Config{Image: image, ImageID: "sha256:feedface" + strings.Repeat("1", 56), Labels: labels}, State: st}
	}
	running := State{Status: StatusRunning}
	list := []*Container{
		mk("web", "aaa1", 1, running, "busybox", map[string]string{"tier": "front"}),
		mk("webapp", "aaa2", 2, State{Status: StatusExited, ExitCode: 0}, "busybox:latest", nil),
		mk("db", "bbb1", 3, State{Status: StatusExited, ExitCode: 3}, "postgres:16", map[string]string{"tier": "back"}),
		mk("fresh", "ccc1", 4, State{Status: StatusCreated}, "alpine", nil),
	}
	list[2].Config.Mounts = []Mount{{Name: "pgdata", Destination: "/var/lib/postgresql/data"}}
	// web publishes 8080:80 and exposes 443 (image); webapp publishes
	// every exposed port (-P: 5432/tcp, 53/udp); db has no networking.
	list[0].Config.Network = &NetworkConfig{Mode: "app", PortBindings: []PortBinding{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}},
		ExposedPorts: []Port{{Port: 443, Proto: "tcp"}}}
	list[1].Config.Network = &NetworkConfig{Mode: "default", PublishAll: true, ExposedPorts: []Port{{Port: 53, Proto: "udp"}, {Port: 5432, Proto: "tcp"}}}
	onNetworks := func(c *Container) []string {
		switch c.Name {
		case "web":
			return []string{"n1id", "app"}
		case "webapp", "fresh":
			return []string{"b0id", "bridge"}
		}
		return nil
	}
	for _, tc := range []struct {
		opts ListOptions
		want string
	}{
		{ListOptions{}, "[web]"},
		{ListOptions{All: true}, "[web webapp db fresh]"},
		{ListOptions{Limit: 2}, "[web webapp]"},
		{ListOptions{Filters: map[string][]string{"status": {"exited"}}}, "[webapp db]"},
		{ListOptions{Filters: map[string][]string{"status": {"exited", "created"}}}, "[webapp db fresh]"},
		{ListOptions{All: true, Filters: map[string][]string{"name": {"web"}}}, "[web webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"name": {"^web$"}}}, "[web]"},
		{ListOptions{All: true, Filters: map[string][]string{"name": {"^/db$"}}}, "[db]"},
		{ListOptions{All: true, Filters: map[string][]string{"name": {"web"}, "status": {"exited"}}}, "[webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"id": {"^aaa"}}}, "[web webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"exited": {"3"}}}, "[db]"},
		{ListOptions{All: true, Filters: map[string][]string{"exited": {"0", "3"}}}, "[webapp db]"},
		{ListOptions{All: true, Filters: map[string][]string{"label": {"tier"}}}, "[web db]"},
		{ListOptions{All: true, Filters: map[string][]string{"label": {"tier=back"}}}, "[db]"},
		// Docker requires every label term (MatchKVList), not any one.
		{ListOptions{All: true, Filters: map[string][]string{"label": {"tier", "tier=back"}}}, "[db]"},
		{ListOptions{All: true, Filters: map[string][]string{"label": {"tier=front", "tier=back"}}}, "[]"},
		{ListOptions{All: true, Filters: map[string][]string{"ancestor": {"busybox"}}}, "[web webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"ancestor": {"busybox:latest"}}}, "[web webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"ancestor": {"feedface"}}}, "[web webapp db fresh]"},
		{ListOptions{All: true, Filters: map[string][]string{"ancestor": {"postgres"}}}, "[]"},
		{ListOptions{All: true, Filters: map[string][]string{"volume": {"pgdata"}}}, "[db]"},
		{ListOptions{All: true, Filters: map[string][]string{"volume": {"/var/lib/postgresql/data"}}}, "[db]"},
		{ListOptions{All: true, Filters: map[string][]string{"volume": {"other"}}}, "[]"},
		{ListOptions{All: true, Filters: map[string][]string{"before": {"webapp"}}}, "[db fresh]"},
		{ListOptions{All: true, Filters: map[string][]string{"publish": {"80"}}}, "[web]"},
		{ListOptions{All: true, Filters: map[string][]string{"publish": {"80/udp"}}}, "[]"},
		{ListOptions{All: true, Filters: map[string][]string{"publish": {"443"}}}, "[]"},
		{ListOptions{All: true, Filters: map[string][]string{"publish": {"50-100/udp"}}}, "[webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"publish": {"1-65535"}}}, "[web webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"expose": {"443/tcp"}}}, "[web]"},
		{ListOptions{All: true, Filters: map[string][]string{"expose": {"80"}}}, "[web]"},
		{ListOptions{All: true, Filters: map[string][]string{"expose": {"5432"}}}, "[webapp]"},
		{ListOptions{All: true, Networks: onNetworks, Filters: map[string][]string{"network": {"bridge"}}}, "[webapp fresh]"},
		{ListOptions{All: true, Networks: onNetworks, Filters: map[string][]string{"network": {"n1id", "nosuch"}}}, "[web]"},
		{ListOptions{Networks: onNetworks, Filters: map[string][]string{"network": {"app"}, "publish": {"80"}}}, "[web]"},
		{ListOptions{All: true, Filters: map[string][]string{"since": {"db"}}}, "[web webapp]"},
		{ListOptions{All: true, Filters: map[string][]string{"since": {"bbb1"}, "before": {"web"}}}, "[webapp]"},
	} {
		got, err := Select(list, tc.opts)
		if err != nil {
			t.Errorf("Select(%+v) = %v", tc.opts, err)
			continue
		}
		var names []string
		for _, c := range got {
			names = append(names, c.Name)
		}
		if s := fmt.Sprint(names); s != tc.want {
			t.Errorf("Select(%+v) = %s, want %s", tc.opts, s, tc.want)
		}
	}
}

// A before/since reference resolves as Store.Get does: ID, then name, then
// a unique ID prefix, whatever the order of the list.
func TestSelectReferenceOrder(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	list := []*Container{
		{ID: "abc1" + strings.Repeat("0", 60), Name: "x", Created: t0.Add(3 * time.Minute)},
		{ID: "abc2" + strings.Repeat("0", 60), Name: "y", Created: t0.Add(2 * time.Minute)},
		{ID: "f" + strings.Repeat("0", 63), Name: "abc", Created: t0.Add(time.Minute)},
	}
	got, err := Select(list, ListOptions{All: true, Filters: map[string][]string{"since": {"abc"}}})
	if err != nil || len(got) != 2 {
		t.Fatalf("Select(since=abc) = %v, %v; want x and y, newer than the container named abc", got, err)
	}
}

func TestSelectRejects(t *testing.T) {
	list := []*Container{{ID: strings.Repeat("a", 64), Name: "web"}, {ID: "ab" + strings.Repeat("0", 62), Name: "db"}}
	for _, tc := range []struct {
		terms map[string][]string
		msg   string
		class func(error) bool
	}{
		{map[string][]string{"colour": {"red"}}, "invalid filter 'colour'", errdefs.IsInvalidArgument},
		{map[string][]string{"status": {"sleeping"}}, "invalid filter 'status=sleeping'", errdefs.IsInvalidArgument},
		{map[string][]string{"exited": {"x"}}, "invalid filter 'exited=x': want an exit code", errdefs.IsInvalidArgument},
		{map[string][]string{"name": {"("}}, "invalid filter 'name=(': error parsing regexp: missing closing ): `(`", errdefs.IsInvalidArgument},
		{map[string][]string{"network": {"bridge"}}, "filter 'network' is not supported without networking", errdefs.IsInvalidArgument},
		{map[string][]string{"health": {"fine"}}, "Unrecognised filter value for health: fine", errdefs.IsInvalidArgument},
		{map[string][]string{"isolation": {"default"}}, "filter 'isolation' is not supported by vmctl", errdefs.IsInvalidArgument},
		{map[string][]string{"publish": {"http"}}, `invalid filter 'publish=http': invalid port "http"`, errdefs.IsInvalidArgument},
		{map[string][]string{"expose": {"80/icmp"}}, `invalid filter 'expose=80/icmp': unknown protocol "icmp"`, errdefs.IsInvalidArgument},
		{map[string][]string{"publish": {"90-80"}}, `invalid filter 'publish=90-80': invalid port range "90-80"`, errdefs.IsInvalidArgument},
		{map[string][]string{"before": {"nosuch"}}, "no such container: nosuch", errdefs.IsNotFound},
		{map[string][]string{"before": {"a"}}, "no such container: a", errdefs.IsNotFound}, // ambiguous prefix
	} {
		_, err := Select(list, ListOptions{Filters: tc.terms})
		if err == nil || !tc.class(err) || err.Error() != tc.msg {
			t.Errorf("Select(%v) = %v, want %q", tc.terms, err, tc.msg)
		}
	}
}
