package volumes

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/events"
)

// Every way a volume comes or goes reports it: Create, a container's Use
// (an implicit create), Remove and Prune; a create of an existing volume
// does not, nor does a Use whose record failed (its volumes are undone).
func TestVolumeEvents(t *testing.T) {
	ctx := context.Background()
	bus := events.NewBus(64)
	s, err := New(Config{Root: filepath.Join(t.TempDir(), "volumes"), NewDisk: fakeDisk, Events: bus})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Second)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.Create(ctx, CreateOptions{Name: "aa"})
	must(err)
	_, err = s.Create(ctx, CreateOptions{Name: "aa"})
	must(err)
	if err := s.Use(ctx, []CreateOptions{{Name: "aa"}, {Name: "cc"}}, func(map[string]*Volume) error { return errors.New("no record") }); err == nil {
		t.Fatal("Use with a failing record succeeded")
	}
	must(s.Use(ctx, []CreateOptions{{Name: "aa"}, {Name: "bb"}}, func(map[string]*Volume) error { return nil }))
	must(s.Remove(ctx, "aa", false))
	_, _, err = s.Prune(ctx, nil)
	must(err)
	past, sub := bus.Subscribe(start, nil)
	sub.Close()
	var got []string
	for _, e := range past {
		got = append(got, string(e.Type)+" "+e.Action+" "+e.ID+" "+e.Attributes["driver"])
	}
	want := []string{"volume create aa local", "volume create bb local", "volume destroy aa local", "volume destroy bb local"}
	if !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}
