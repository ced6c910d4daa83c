package containersvc

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/services/volumesvc"
	"github.com/vmctl/vmctl/engine/volumes"
)

func TestParseBind(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    VolumeMount
		wantErr string
	}{
		{in: "data:/data", want: VolumeMount{Name: "data", Destination: "/data"}},
		{in: "data:/data:ro", want: VolumeMount{Name: "data", Destination: "/data", ReadOnly: true}},
		{in: "data:/data:rw", want: VolumeMount{Name: "data", Destination: "/data"}},
		{in: "/cache", want: VolumeMount{Destination: "/cache"}},
		{in: "/host:/data", want: VolumeMount{HostPath: "/host", CreateHostPath: true, Destination: "/data"}},
		{in: "/host:/data:ro,z", want: VolumeMount{HostPath: "/host", CreateHostPath: true, Destination: "/data", ReadOnly: true}},
		{in: "./rel:/data", wantErr: `invalid volume specification "./rel:/data": the host path "./rel" is relative; give an absolute path`},
		{in: "data:/data:z", want: VolumeMount{Name: "data", Destination: "/data"}},
		{in: "data:/data:x", wantErr: `invalid volume mode "x" in "data:/data:x": want ro or rw`},
		{in: "/h:/data:rshared", wantErr: `invalid volume mode "rshared" in "/h:/data:rshared": mount propagation does not cross into a VM`},
		{in: ":/data", wantErr: `invalid volume specification ":/data": the volume name is empty`},
		{in: "a:b:c:d", wantErr: `invalid volume specification "a:b:c:d": want NAME:/path[:ro] or /host/dir:/path[:ro]`},
	} {
		got, err := ParseBind(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr || !errdefs.IsInvalidArgument(err) {
				t.Errorf("ParseBind(%q) = %v, want error %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseBind(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

// Bind mounts: a host directory is planned as given (clean); a file is
// refused (a VM shares directories); a missing path is created at start
// for -v and refused at create for --mount.
func TestPlanBinds(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	_, binds, err := planMounts([]VolumeMount{
		{HostPath: dir + "/", Destination: "/src/", ReadOnly: true},
		{HostPath: missing, CreateHostPath: true, Destination: "/new"},
		{Name: "data", Destination: "/data"},
	})
	want := []containers.Bind{
		{Source: dir, Destination: "/src", ReadOnly: true},
		{Source: missing, Destination: "/new", CreateSource: true},
	}
	if err != nil || !reflect.DeepEqual(binds, want) {
		t.Fatalf("planMounts = %+v, %v, want %+v", binds, err, want)
	}
	for _, tc := range []struct {
		name string
		in   VolumeMount
		want string
	}{
		{"file", VolumeMount{HostPath: file, Destination: "/f"}, "bind mounts of files are not supported: " + file + " is not a directory"},
		{"missing --mount source", VolumeMount{HostPath: missing, Destination: "/m"}, "bind source path does not exist: " + missing},
		{"relative", VolumeMount{HostPath: "rel", Destination: "/m"}, "the host path must be absolute"},
		{"same destination as a volume", VolumeMount{HostPath: dir, Destination: "/data"}, "duplicate mount point: /data"},
	} {
		_, _, err := planMounts([]VolumeMount{{Name: "data", Destination: "/data"}, tc.in})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: planMounts = %v, want an invalid-argument error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("create made the missing host path; only a start does")
	}
}

func TestPlanMounts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []VolumeMount
		want    []containers.Mount
		wantErr bool
	}{
		{name: "named", in: []VolumeMount{{Name: "data", Destination: "/data/", ReadOnly: true}},
			want: []containers.Mount{{Name: "data", Destination: "/data", ReadOnly: true}}},
		{name: "relative", in: []VolumeMount{{Name: "data", Destination: "data"}}, wantErr: true},
		{name: "dotdot", in: []VolumeMount{{Name: "data", Destination: "/a/../etc"}}, wantErr: true},
		{name: "root", in: []VolumeMount{{Name: "data", Destination: "/"}}, wantErr: true},
		// The guest refuses these at start; create must refuse them first.
		{name: "newline", in: []VolumeMount{{Name: "data", Destination: "/da\nta"}}, wantErr: true},
		{name: "nul", in: []VolumeMount{{Name: "data", Destination: "/da\x00ta"}}, wantErr: true},
		{name: "bad name", in: []VolumeMount{{Name: "d", Destination: "/d"}}, wantErr: true},
		{name: "same path twice", in: []VolumeMount{{Name: "a1", Destination: "/d"}, {Name: "b1", Destination: "/d/"}}, wantErr: true},
		{name: "same volume twice", in: []VolumeMount{{Name: "a1", Destination: "/d"}, {Name: "a1", Destination: "/e"}}, wantErr: true},
		{name: "too many", in: make([]VolumeMount, maxVolumes+1), wantErr: true},
	} {
		got, _, err := planMounts(tc.in)
		if tc.wantErr {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s: planMounts = %v, want an invalid-argument error", tc.name, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: planMounts = %+v, %v, want %+v", tc.name, got, err, tc.want)
		}
	}
	got, _, err := planMounts([]VolumeMount{{Destination: "/cache"}})
	if err != nil || len(got) != 1 || !got[0].Anonymous || len(got[0].Name) != 64 || volumes.ValidateName(got[0].Name) != nil {
		t.Errorf("anonymous volume: planMounts = %+v, %v, want a 64-hex anonymous name", got, err)
	}
}

// fakeImages resolves every reference to one image.
type fakeImages struct{ volumes []string }

func (f fakeImages) Resolve(context.Context, string) (ImageInfo, error) {
	return ImageInfo{ID: "sha256:0123", Name: "busybox", Cmd: []string{"sh"}, Volumes: f.volumes}, nil
}
func (fakeImages) Disks(_ context.Context, id string, _ int) ([]string, error) {
	return []string{"/images/" + strings.TrimPrefix(id, "sha256:") + ".ext4"}, nil
}

func newVolumeTestService(t *testing.T) *Service {
	t.Helper()
	dir := t.TempDir()
	containerStore, err := containers.OpenStore(filepath.Join(dir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	var s *Service
	store, err := volumes.Open(volumes.Config{
		Root: filepath.Join(dir, "volumes"),
		NewDisk: func(_ context.Context, p string, n int64) error {
			return os.WriteFile(p, nil, 0o600)
		},
		Users: func() (map[string][]string, error) { return s.VolumeUsers() },
	})
	if err != nil {
		t.Fatal(err)
	}
	s = New(Config{
		Store: containerStore, Images: fakeImages{}, Volumes: volumesvc.New(volumesvc.Config{Store: store}),
		NewWritableDisk: func(p string, _ int64) error { return os.WriteFile(p, nil, 0o600) },
		ChooseDriver: func(string) (sandbox.Choice, error) {
			return sandbox.Choice{Driver: "qemu", Accel: "tcg"}, nil
		},
	})
	return s
}

func TestCreateWithVolumes(t *testing.T) {
	ctx := context.Background()
	s := newVolumeTestService(t)
	vols := s.cfg.Volumes.(*volumesvc.Service)

	c, err := s.Create(ctx, CreateOptions{Image: "busybox", Name: "web", AutoRemove: true,
		Volumes: []VolumeMount{{Name: "data", Destination: "/data"}, {Destination: "/cache"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Config.Mounts) != 2 || c.Config.Mounts[0].Source == "" || !c.Config.Mounts[1].Anonymous {
		t.Fatalf("mounts = %+v", c.Config.Mounts)
	}
	anon := c.Config.Mounts[1].Name
	for _, n := range []string{"data", anon} {
		if _, err := vols.Get(n); err != nil {
			t.Errorf("volume %s was not created: %v", n, err)
		}
	}
	if err := vols.Remove(ctx, "data", false); !errdefs.IsConflict(err) {
		t.Errorf("Remove of a volume a stopped container uses = %v, want conflict", err)
	}

	// A second container using the volume cannot start while the first
	// runs (its record says running, owned by this live process).
	other, err := s.Create(ctx, CreateOptions{Image: "busybox", Name: "other", Volumes: []VolumeMount{{Name: "data", Destination: "/d", ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	c.State = containers.State{Status: containers.StatusRunning, OwnerPid: os.Getpid()}
	if err := s.cfg.Store.Update(c); err != nil {
		t.Fatal(err)
	}
	_, err = s.attachVolumes(ctx, other)
	want := "volume data is in use by running container web: a volume can be mounted by one running container at a time"
	if !errdefs.IsConflict(err) || err == nil || err.Error() != want {
		t.Errorf("attachVolumes while web runs = %v, want %q", err, want)
	}
	c.State = containers.State{Status: containers.StatusExited}
	if err := s.cfg.Store.Update(c); err != nil {
		t.Fatal(err)
	}
	a, err := s.attachVolumes(ctx, other)
	if err != nil {
		t.Fatalf("attachVolumes after web stopped = %v", err)
	}
	if len(a.disks) != 1 || a.disks[0].ReadOnly || a.storages[0].Role != contract.RoleVolume || a.storages[0].Serial != a.disks[0].Serial || a.storages[0].MountPoint != "/d" || !a.storages[0].ReadOnly {
		t.Errorf("attachVolumes = disks %+v storages %+v", a.disks, a.storages)
	}
	a.release()

	// Removing the --rm container takes its anonymous volume, not the named one.
	if err := s.Remove(ctx, "web", RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vols.Get(anon); !errdefs.IsNotFound(err) {
		t.Errorf("anonymous volume after removal of its --rm container: %v, want not found", err)
	}
	if _, err := vols.Get("data"); err != nil {
		t.Errorf("named volume after container removal: %v", err)
	}

	// A bad request creates nothing.
	before, _ := vols.List(volumesvc.ListOptions{})
	if _, err := s.Create(ctx, CreateOptions{Image: "busybox", Volumes: []VolumeMount{{Name: "new1", Destination: "/a"}, {Name: "new2", Destination: "rel"}}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Create with a relative mount path = %v, want invalid argument", err)
	}
	if _, err := s.Create(ctx, CreateOptions{Image: "busybox", Volumes: []VolumeMount{{Name: "new1", Destination: "/a"}, {HostPath: "/etc/hostname", Destination: "/h"}}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Create with a bind mount of a file = %v, want invalid argument", err)
	}
	if _, err := s.Create(ctx, CreateOptions{Image: "busybox", Volumes: []VolumeMount{{Name: "new1", Destination: "/a/"}},
		Security: containers.Security{Tmpfs: map[string]string{"/a": ""}}}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "duplicate mount point: /a") {
		t.Errorf("Create with a tmpfs on a volume's path = %v, want a duplicate mount point", err)
	}
	if after, _ := vols.List(volumesvc.ListOptions{}); len(after) != len(before) {
		t.Errorf("a refused create changed the volumes: %d before, %d after", len(before), len(after))
	}
}

// FuzzParseBind: any -v string parses or fails with an invalid-argument
// error, and what parses plans to a clean absolute path or fails cleanly.
func FuzzParseBind(f *testing.F) {
	for _, s := range []string{"data:/data", "data:/data:ro", "/cache", "/h:/c", ":/x", "a:b:c:d", "v1:/a/../b", "v1:/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseBind(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ParseBind(%q) = %v, not an invalid-argument error", s, err)
			}
			return
		}
		got, binds, err := planMounts([]VolumeMount{m})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("planMounts(%+v) = %v, not an invalid-argument error", m, err)
			}
			return
		}
		dst := ""
		if len(got) == 1 {
			dst = got[0].Destination
		} else if len(binds) == 1 {
			dst = binds[0].Destination
			if src := binds[0].Source; !filepath.IsAbs(src) || filepath.Clean(src) != src {
				t.Fatalf("planMounts(%+v) host path %q is not clean and absolute", m, src)
			}
		}
		if !path.IsAbs(dst) || path.Clean(dst) != dst || dst == "/" {
			t.Fatalf("planMounts(%+v) destination %q is not clean and absolute", m, dst)
		}
	})
}

func TestWithAnonymousVolumes(t *testing.T) {
	tests := []struct {
		reqs  []VolumeMount
		paths []string
		want  []VolumeMount
	}{
		{nil, nil, nil},
		{nil, []string{"/data"}, []VolumeMount{{Destination: "/data"}}},
		// A mount the user asked for wins over the image's VOLUME.
		{[]VolumeMount{{Name: "v", Destination: "/data/"}}, []string{"/data", "/logs"},
			[]VolumeMount{{Name: "v", Destination: "/data/"}, {Destination: "/logs"}}},
		{nil, []string{"/a", "/a/"}, []VolumeMount{{Destination: "/a"}}},
	}
	for _, tt := range tests {
		if got := WithAnonymousVolumes(tt.reqs, tt.paths); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("WithAnonymousVolumes(%v, %v) = %v, want %v", tt.reqs, tt.paths, got, tt.want)
		}
	}
}

// An image's VOLUME gets an anonymous volume at create.
func TestCreateWithImageVolume(t *testing.T) {
	s := newVolumeTestService(t)
	s.cfg.Images = fakeImages{volumes: []string{"/var/lib/db"}}
	c, err := s.Create(context.Background(), CreateOptions{Image: "db", Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Config.Mounts) != 1 || !c.Config.Mounts[0].Anonymous || c.Config.Mounts[0].Destination != "/var/lib/db" {
		t.Fatalf("mounts = %+v, want one anonymous volume on /var/lib/db", c.Config.Mounts)
	}
	if _, err := s.cfg.Volumes.Get(c.Config.Mounts[0].Name); err != nil {
		t.Errorf("the image's volume was not created: %v", err)
	}
}

// A container whose owning process ended without recording the exit is
// marked exited by the next listing, which reports die with its code.
func TestListReportsLostContainersDie(t *testing.T) {
	s := newVolumeTestService(t)
	bus := events.NewBus(16)
	s.cfg.Events = bus
	c, err := s.Create(context.Background(), CreateOptions{Image: "busybox", Name: "lost"})
	if err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	c.State = containers.State{Status: containers.StatusRunning, OwnerPid: gone.Process.Pid}
	if err := s.cfg.Store.Update(c); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].State.Status != containers.StatusExited || list[0].State.ExitCode != 255 {
		t.Fatalf("List = %+v, %v; want lost exited with 255", list, err)
	}
	past, sub := bus.Subscribe(time.Unix(1, 0), func(e events.Event) bool { return e.Action == "die" })
	sub.Close()
	if len(past) != 1 || past[0].ID != c.ID || past[0].Attributes["exitCode"] != "255" {
		t.Errorf("die events = %+v, want one for lost with exitCode 255", past)
	}
}
