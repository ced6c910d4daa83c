package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// fakeDisk stands in for the ext4 maker: a sparse file of the size asked,
// refusing to overwrite, as the real one does.
func fakeDisk(_ context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

func newTestStore(t *testing.T, users map[string][]string) *Store {
	t.Helper()
	s, err := Open(Config{
		Root: filepath.Join(t.TempDir(), "volumes"), NewDisk: fakeDisk,
		Users: func() (map[string][]string, error) { return users, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"data", true}, {"a1", true}, {"my_vol.2-x", true}, {"0", false}, {"", false},
		{"-data", false}, {".data", false}, {"_data", false}, {"da/ta", false}, {"da ta", false},
		{"../etc", false}, {"é-vol", false}, {string(make([]byte, 300)), false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("ValidateName(%q) error class = %v, want invalid argument", tc.name, err)
		}
	}
}

func TestCreateOptions(t *testing.T) {
	for _, tc := range []struct {
		opts     CreateOptions
		wantSize int64
		wantErr  bool
	}{
		{CreateOptions{Name: "v1"}, DefaultSize, false},
		{CreateOptions{Name: "v1", Driver: "local"}, DefaultSize, false},
		{CreateOptions{Name: "v1", DriverOpts: map[string]string{"size": "1g"}}, 1 << 30, false},
		{CreateOptions{Name: "v1", DriverOpts: map[string]string{"size": "64MiB"}}, 64 << 20, false},
		{CreateOptions{Name: "v1", DriverOpts: map[string]string{"size": "1k"}}, 0, true},
		{CreateOptions{Name: "v1", DriverOpts: map[string]string{"size": "lots"}}, 0, true},
		{CreateOptions{Name: "v1", DriverOpts: map[string]string{"size": "100t"}}, 0, true},
		{CreateOptions{Name: "v1", DriverOpts: map[string]string{"type": "tmpfs"}}, 0, true},
		{CreateOptions{Name: "x"}, 0, true},
	} {
		s := newTestStore(t, nil)
		v, _, err := s.Create(context.Background(), tc.opts)
		if tc.wantErr {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Create(%+v) = %v, want an invalid-argument error", tc.opts, err)
			}
			if entries, _ := os.ReadDir(s.cfg.Root); len(entries) > 1 { // only the lock may stay
				t.Errorf("Create(%+v) failed but left %d entries", tc.opts, len(entries))
			}
			continue
		}
		if err != nil {
			t.Errorf("Create(%+v) = %v", tc.opts, err)
			continue
		}
		st, err := os.Stat(v.Disk)
		if err != nil || st.Size() != tc.wantSize || v.Size != tc.wantSize {
			t.Errorf("Create(%+v): disk %v size %d, recorded %d, want %d", tc.opts, err, st.Size(), v.Size, tc.wantSize)
		}
	}
	// A driver other than local is one dockerd has no plugin for: 404.
	s := newTestStore(t, nil)
	if _, _, err := s.Create(context.Background(), CreateOptions{Name: "v1", Driver: "nfs"}); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `plugin "nfs" not found`) {
		t.Errorf("Create with driver nfs = %v, want not found naming the plugin", err)
	}
	if entries, _ := os.ReadDir(s.cfg.Root); len(entries) > 1 {
		t.Errorf("Create with driver nfs left %d entries", len(entries))
	}
}

func TestCreateExistingReturnsIt(t *testing.T) {
	s := newTestStore(t, nil)
	ctx := context.Background()
	v1, created, err := s.Create(ctx, CreateOptions{Name: "data", Labels: map[string]string{"a": "b"}})
	if err != nil || !created {
		t.Fatalf("Create = %v, created %v; want a new volume", err, created)
	}
	marker := []byte("keep me")
	if err := os.WriteFile(v1.Disk, marker, 0o600); err != nil {
		t.Fatal(err)
	}
	v2, created, err := s.Create(ctx, CreateOptions{Name: "data", DriverOpts: map[string]string{"size": "1g"}})
	if err != nil || created {
		t.Fatalf("second Create = %v, created %v; want the existing volume", err, created)
	}
	if v2.Size != v1.Size || v2.Labels["a"] != "b" || !v2.CreatedAt.Equal(v1.CreatedAt) {
		t.Errorf("second Create = %+v, want the first volume %+v", v2, v1)
	}
	if b, _ := os.ReadFile(v1.Disk); string(b) != string(marker) {
		t.Errorf("second Create rewrote the disk")
	}
}

func TestGetListRemove(t *testing.T) {
	s := newTestStore(t, map[string][]string{"used": {"web"}})
	ctx := context.Background()
	for _, n := range []string{"zeta", "alpha", "used"} {
		if _, _, err := s.Create(ctx, CreateOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	// A create that died before writing metadata is not a volume.
	os.Mkdir(filepath.Join(s.cfg.Root, "halfmade"), 0o700)
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list {
		names = append(names, v.Name)
	}
	if fmt.Sprint(names) != "[alpha used zeta]" {
		t.Errorf("List() = %v, want [alpha used zeta]", names)
	}
	if _, err := s.Get("nope"); !errdefs.IsNotFound(err) {
		t.Errorf("Get(nope) = %v, want not found", err)
	}
	if _, err := s.Get("../x"); !errdefs.IsNotFound(err) {
		t.Errorf("Get(../x) = %v, want not found", err)
	}

	removed, err := s.Remove(ctx, "used", true)
	if removed || !errdefs.IsConflict(err) || err.Error() != "volume used is in use by container web: remove the container first" {
		t.Errorf("Remove(used) = %v, want a conflict naming web", err)
	}
	if _, err := s.Get("used"); err != nil {
		t.Errorf("a refused Remove changed the volume: %v", err)
	}
	if removed, err := s.Remove(ctx, "alpha", false); err != nil || !removed {
		t.Errorf("Remove(alpha) = %v, %v; want removed", removed, err)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Root, "alpha")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Remove(alpha) left its directory: %v", err)
	}
	if removed, err := s.Remove(ctx, "alpha", false); removed || !errdefs.IsNotFound(err) {
		t.Errorf("second Remove(alpha) = %v, want not found", err)
	}
	if removed, err := s.Remove(ctx, "alpha", true); removed || err != nil {
		t.Errorf("forced Remove of a missing volume = %v, %v; want nothing removed, no error", removed, err)
	}
	entries, _ := os.ReadDir(s.cfg.Root)
	for _, e := range entries {
		if e.Name() != "used" && e.Name() != "zeta" && e.Name() != "halfmade" && e.Name() != lockFile {
			t.Errorf("unexpected entry %s after removals", e.Name())
		}
	}
}

func TestUse(t *testing.T) {
	s := newTestStore(t, nil)
	ctx := context.Background()
	if _, _, err := s.Create(ctx, CreateOptions{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	// A failing record undoes only what Use created.
	boom := errors.New("record failed")
	created, err := s.Use(ctx, []CreateOptions{{Name: "old"}, {Name: "new"}}, func(map[string]*Volume) error { return boom })
	if !errors.Is(err, boom) || created != nil {
		t.Fatalf("Use = %v, created %v; want %v, none", err, created, boom)
	}
	if _, err := s.Get("new"); !errdefs.IsNotFound(err) {
		t.Errorf("after a failed record, new = %v, want not found", err)
	}
	if _, err := s.Get("old"); err != nil {
		t.Errorf("after a failed record, old = %v, want it kept", err)
	}
	var got map[string]*Volume
	created, err = s.Use(ctx, []CreateOptions{{Name: "old"}, {Name: "new", Anonymous: true}, {Name: "new"}}, func(v map[string]*Volume) error {
		got = v
		return nil
	})
	if err != nil || len(got) != 2 || got["new"].Disk == "" || !got["new"].Anonymous {
		t.Fatalf("Use = %v, volumes %+v", err, got)
	}
	if !slices.Equal(created, []string{"new"}) {
		t.Errorf("Use created %q, want [new] (old existed)", created)
	}
	if _, err := s.Use(ctx, []CreateOptions{{Name: "ok"}, {Name: "b/d"}}, func(map[string]*Volume) error { return nil }); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Use with a bad name = %v, want invalid argument", err)
	}
	if _, err := s.Get("ok"); !errdefs.IsNotFound(err) {
		t.Errorf("a Use refused for a bad name created another volume")
	}
}

// TestConcurrentCreate runs creates of one name from two stores on one
// root (as two processes would): exactly one disk is made, and everyone
// gets the same volume.
func TestConcurrentCreate(t *testing.T) {
	root := filepath.Join(t.TempDir(), "volumes")
	var made atomic.Int32
	newStore := func() *Store {
		s, err := Open(Config{Root: root, NewDisk: func(ctx context.Context, p string, n int64) error {
			made.Add(1)
			return fakeDisk(ctx, p, n)
		}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newStore(), newStore()
	var wg sync.WaitGroup
	errc := make(chan error, 20)
	for i := 0; i < 20; i++ {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := s.Create(context.Background(), CreateOptions{Name: "shared"})
			if err == nil && v.Name != "shared" {
				err = fmt.Errorf("got volume %q", v.Name)
			}
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	if made.Load() != 1 {
		t.Errorf("%d disks made for one volume, want 1", made.Load())
	}
}

func TestClaim(t *testing.T) {
	s := newTestStore(t, nil)
	ctx := context.Background()
	for _, n := range []string{"a1", "b1"} {
		if _, _, err := s.Create(ctx, CreateOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	release, err := s.Claim(ctx, []string{"b1", "a1", "b1"})
	if err != nil {
		t.Fatal(err)
	}
	// A second claim waits for the first.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := s.Claim(short, []string{"a1"}); err == nil {
		t.Error("a second Claim of a held volume succeeded")
	}
	cancel()
	release()
	release2, err := s.Claim(ctx, []string{"a1"})
	if err != nil {
		t.Fatalf("Claim after release = %v", err)
	}
	release2()
	if _, err := s.Claim(ctx, []string{"missing"}); !errdefs.IsNotFound(err) {
		t.Errorf("Claim(missing) = %v, want not found", err)
	}
}

func TestPrune(t *testing.T) {
	s := newTestStore(t, map[string][]string{"used": {"web"}})
	ctx := context.Background()
	for _, o := range []CreateOptions{{Name: "used"}, {Name: "named"}, {Name: "anon1", Anonymous: true}} {
		if _, _, err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	removed, _, err := s.Prune(ctx, func(v *Volume) bool { return !v.Anonymous })
	if err != nil || fmt.Sprint(removed) != "[anon1]" {
		t.Errorf("Prune(anonymous only) = %v, %v; want [anon1]", removed, err)
	}
	removed, _, err = s.Prune(ctx, nil)
	if err != nil || fmt.Sprint(removed) != "[named]" {
		t.Errorf("Prune(all) = %v, %v; want [named] (used is in use)", removed, err)
	}
	if list, _ := s.List(); len(list) != 1 || list[0].Name != "used" {
		t.Errorf("after prunes, volumes = %v, want only used", list)
	}
}

// A volume whose metadata is damaged does not break the listing or a
// prune of the others, and can still be removed (unless in use).
func TestCorruptMetadata(t *testing.T) {
	s := newTestStore(t, map[string][]string{"held": {"web"}})
	ctx := context.Background()
	for _, n := range []string{"good", "bad", "held"} {
		if _, _, err := s.Create(ctx, CreateOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"bad": "{not json", "held": `{"name":"other"}`} {
		if err := os.WriteFile(filepath.Join(s.cfg.Root, name, metaFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != "good" {
		t.Errorf("List with damaged metadata = %v, %v; want only good", list, err)
	}
	if _, err := s.Get("bad"); err == nil || errdefs.IsNotFound(err) {
		t.Errorf("Get(bad) = %v, want an error that is not not-found", err)
	}
	if _, err := s.Remove(ctx, "held", false); !errdefs.IsConflict(err) {
		t.Errorf("Remove of a damaged volume in use = %v, want conflict", err)
	}
	if _, err := s.Remove(ctx, "bad", false); err != nil {
		t.Errorf("Remove of a damaged volume = %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Root, "bad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Remove of a damaged volume left its directory: %v", err)
	}
	removed, _, err := s.Prune(ctx, nil)
	if err != nil || fmt.Sprint(removed) != "[good]" {
		t.Errorf("Prune with a damaged volume = %v, %v; want [good]", removed, err)
	}
}

// A size the host's file system cannot hold in one file (ext4 with 4 KiB
// blocks stops just short of 16 TiB) is the client's error, in one line,
// and leaves nothing behind.
func TestCreateTooLargeForHost(t *testing.T) {
	root := filepath.Join(t.TempDir(), "volumes")
	s, err := Open(Config{Root: root, NewDisk: func(_ context.Context, p string, _ int64) error {
		return fmt.Errorf("creating writable disk: %w", &os.PathError{Op: "truncate", Path: p, Err: syscall.EFBIG})
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Create(context.Background(), CreateOptions{Name: "huge", DriverOpts: map[string]string{"size": "16t"}})
	want := `invalid volume size "16t": larger than a file can be on this host's file system`
	if !errdefs.IsInvalidArgument(err) || err.Error() != want {
		t.Errorf("Create(size=16t) = %v, want invalid argument %q", err, want)
	}
	if entries, _ := os.ReadDir(root); len(entries) > 1 {
		t.Errorf("a refused create left %d entries", len(entries))
	}
}
