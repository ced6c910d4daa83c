package volumesvc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/volumes"
)

// newTestService is a Service over a store in a temp directory whose disks
// are empty files, with users as the containers referencing volumes.
func newTestService(t testing.TB, users map[string][]string, bus events.Publisher) *Service {
	t.Helper()
	store, err := volumes.Open(volumes.Config{
		Root: filepath.Join(t.TempDir(), "volumes"),
		NewDisk: func(_ context.Context, p string, _ int64) error {
			return os.WriteFile(p, nil, 0o600)
		},
		Users: func() (map[string][]string, error) { return users, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Store: store, Events: bus})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Every way a volume comes or goes reports it: Create, a container's Use
// (an implicit create), Remove and Prune; a create of an existing volume
// does not, nor does a Use whose record failed (its volumes are undone),
// nor a refused or forced removal of a volume that is not there.
func TestVolumeEvents(t *testing.T) {
	ctx := context.Background()
	bus := events.NewBus(64)
	s := newTestService(t, map[string][]string{"used": {"web"}}, bus)
	start := time.Now().Add(-time.Second)
	_, err := s.Create(ctx, CreateOptions{Name: "aa"})
	must(t, err)
	_, err = s.Create(ctx, CreateOptions{Name: "aa"})
	must(t, err)
	if err := s.Use(ctx, []CreateOptions{{Name: "aa"}, {Name: "cc"}}, func(map[string]*Volume) error { return errors.New("no record") }); err == nil {
		t.Fatal("Use with a failing record succeeded")
	}
	must(t, s.Use(ctx, []CreateOptions{{Name: "aa"}, {Name: "bb"}, {Name: "used"}}, func(map[string]*Volume) error { return nil }))
	must(t, s.Remove(ctx, "aa", false))
	must(t, s.Remove(ctx, "aa", true))
	if err := s.Remove(ctx, "used", true); !errdefs.IsConflict(err) {
		t.Fatalf("Remove of a volume in use = %v, want a conflict", err)
	}
	_, _, err = s.Prune(ctx, PruneOptions{All: true})
	must(t, err)
	past, sub := bus.Subscribe(start, nil)
	sub.Close()
	var got []string
	for _, e := range past {
		got = append(got, string(e.Type)+" "+e.Action+" "+e.ID+" "+e.Attributes["driver"])
	}
	want := []string{"volume create aa local", "volume create bb local", "volume create used local",
		"volume destroy aa local", "volume destroy bb local"}
	if !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func names(list []*Volume) []string {
	out := []string{}
	for _, v := range list {
		out = append(out, v.Name)
	}
	return out
}

func TestList(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, map[string][]string{"web-data": {"web"}}, nil)
	for _, o := range []CreateOptions{
		{Name: "web-data", Labels: map[string]string{"app": "web", "tier": "front"}},
		{Name: "db-data", Labels: map[string]string{"app": "db"}},
		{Name: "scratch"},
	} {
		_, err := s.Create(ctx, o)
		must(t, err)
	}
	for _, tc := range []struct {
		filters map[string][]string
		want    []string
	}{
		{nil, []string{"db-data", "scratch", "web-data"}},
		{map[string][]string{"name": {"data"}}, []string{"db-data", "web-data"}},
		{map[string][]string{"name": {"scr", "db"}}, []string{"db-data", "scratch"}},
		{map[string][]string{"label": {"app"}}, []string{"db-data", "web-data"}},
		{map[string][]string{"label": {"app=web"}}, []string{"web-data"}},
		{map[string][]string{"label": {"app", "tier"}}, []string{"web-data"}},
		{map[string][]string{"dangling": {"true"}}, []string{"db-data", "scratch"}},
		{map[string][]string{"dangling": {"0"}}, []string{"web-data"}},
		{map[string][]string{"dangling": {"1"}, "name": {"data"}}, []string{"db-data"}},
	} {
		list, err := s.List(ListOptions{Filters: tc.filters})
		if err != nil || !slices.Equal(names(list), tc.want) {
			t.Errorf("List(%v) = %v, %v; want %v", tc.filters, names(list), err, tc.want)
		}
	}
	for _, bad := range []map[string][]string{{"driver": {"local"}}, {"dangling": {"maybe"}}} {
		if _, err := s.List(ListOptions{Filters: bad}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("List(%v) = %v, want invalid argument", bad, err)
		}
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		o    PruneOptions
		want []string
	}{
		{"anonymous only", PruneOptions{}, []string{"anon"}},
		{"all", PruneOptions{All: true}, []string{"anon", "keep", "named"}},
		{"all filter", PruneOptions{Filters: map[string][]string{"all": {"true"}}}, []string{"anon", "keep", "named"}},
		{"all filter off", PruneOptions{All: true, Filters: map[string][]string{"all": {"0"}}}, []string{"anon"}},
		{"label", PruneOptions{All: true, Filters: map[string][]string{"label": {"tmp"}}}, []string{"named"}},
		{"not label", PruneOptions{All: true, Filters: map[string][]string{"label!": {"keep=yes"}}}, []string{"anon", "named"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestService(t, map[string][]string{"used": {"web"}}, nil)
			for _, o := range []CreateOptions{
				{Name: "used"}, {Name: "anon", Anonymous: true},
				{Name: "named", Labels: map[string]string{"tmp": ""}},
				{Name: "keep", Labels: map[string]string{"keep": "yes"}},
			} {
				_, err := s.Create(ctx, o)
				must(t, err)
			}
			removed, _, err := s.Prune(ctx, tc.o)
			if err != nil || !slices.Equal(removed, tc.want) {
				t.Errorf("Prune(%+v) = %v, %v; want %v", tc.o, removed, err, tc.want)
			}
		})
	}
	s := newTestService(t, nil, nil)
	for _, bad := range []map[string][]string{{"until": {"1h"}}, {"all": {"yes please"}}} {
		if _, _, err := s.Prune(ctx, PruneOptions{Filters: bad}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Prune(%v) = %v, want invalid argument", bad, err)
		}
	}
}

// FuzzFilters: any filter terms are chosen by or refused as bad input,
// never a panic.
func FuzzFilters(f *testing.F) {
	f.Add("name", "a", "label", "a=b")
	f.Add("dangling", "true", "label!", "x")
	f.Add("all", "1", "until", "")
	s := newTestService(f, nil, nil)
	ctx := context.Background()
	if _, err := s.Create(ctx, CreateOptions{Name: "v1", Labels: map[string]string{"a": "b"}}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		filters := map[string][]string{k1: {v1}, k2: {v2}}
		if _, err := s.List(ListOptions{Filters: filters}); err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("List(%v) = %v, not bad input", filters, err)
		}
		// Prune only a volume that is not there: the filters are what
		// is under test.
		keepAll := map[string][]string{k1: {v1}, k2: {v2}, "label": {"no-such-label"}}
		if _, _, err := s.Prune(ctx, PruneOptions{Filters: keepAll}); err != nil && !errdefs.IsInvalidArgument(err) {
			t.Fatalf("Prune(%v) = %v, not bad input", keepAll, err)
		}
	})
}
