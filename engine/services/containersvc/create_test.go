package containersvc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// bootFixture counts what a create and a start ask of their collaborators:
// hypervisor choice, image resolution, image disk, driver. Its driver
// "boots" at once and its agent runs each container to exit 0.
type bootFixture struct {
	t   *testing.T
	svc *Service
	dir string

	mu       sync.Mutex
	chosen   []string // ChooseDriver's names
	resolved int      // Images.Resolve calls
	disks    int      // Images.Disks calls
	budgets  []int    // the budget of each
	exitCode int      // every run's
	opened   []sandbox.Choice
	openErr  error
	starts   []sandbox.Config
	created  []*specs.Spec // the specs the agent got
	storages [][]agent.Storage
	networks []agent.ContainerNetwork
	ifaces   [][]agent.Interface
	routes   [][]agent.Route
	// calls are the agent calls that change the guest, in order.
	calls []string
	// shutdowns counts the guests asked to shut down cleanly.
	shutdowns int
}

func newBootFixture(t *testing.T) *bootFixture {
	t.Helper()
	f := &bootFixture{t: t, dir: t.TempDir()}
	store, err := containers.OpenStore(filepath.Join(f.dir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	f.svc = New(Config{
		Store: store, Images: f,
		NewWritableDisk: func(p string, _ int64) error { return os.WriteFile(p, nil, 0o600) },
		ChooseDriver: func(name string) (sandbox.Choice, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.chosen = append(f.chosen, name)
			return sandbox.Choice{Driver: "qemu", Accel: "tcg"}, nil
		},
		OpenDriver: func(c sandbox.Choice) (sandbox.Driver, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.opened = append(f.opened, c)
			if f.openErr != nil {
				return nil, f.openErr
			}
			return bootDriver{f}, nil
		},
		ExecRoot: filepath.Join(f.dir, "run"),
	})
	f.svc.newAgent = func(conn net.Conn) guestAgent { return &bootAgent{f: f, conn: conn} }
	return f
}

func (f *bootFixture) Resolve(_ context.Context, ref string) (ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolved++
	return ImageInfo{ID: "sha256:0123", Name: ref, Cmd: []string{"sh"}, User: "7:8", WorkingDir: "/srv", ExposedPorts: []string{"80/tcp"}}, nil
}

// Disk "builds" the image disk: a file in the fixture's directory.
// Disks gives the image as a stack of two disks when the budget allows.
func (f *bootFixture) Disks(_ context.Context, id string, budget int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disks++
	f.budgets = append(f.budgets, budget)
	names := []string{strings.TrimPrefix(id, "sha256:") + ".ext4"}
	if budget >= 2 {
		names = []string{"top.ext4", "base.ext4"}
	}
	var out []string
	for _, n := range names {
		p := filepath.Join(f.dir, n)
		if err := os.WriteFile(p, []byte("disk"), 0o600); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

type counts struct {
	chosen, resolved, disks, opened, starts int
}

func (f *bootFixture) counts() counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counts{len(f.chosen), f.resolved, f.disks, len(f.opened), len(f.starts)}
}

// run starts the container and waits for its exit.
func (f *bootFixture) run(ref string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wait, err := f.svc.PrepareWait(ref, WaitNextExit)
	if err != nil {
		return err
	}
	if err := f.svc.Start(ctx, ref, Stdio{}); err != nil {
		return err
	}
	st, err := wait(ctx)
	if err == nil && (st.Code != 0 || st.Error != "") {
		err = fmt.Errorf("exit %+v", st)
	}
	return err
}

type bootDriver struct{ f *bootFixture }

func (bootDriver) Name() string { return "qemu" }

func (d bootDriver) Start(_ context.Context, cfg sandbox.Config) (sandbox.Sandbox, error) {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	d.f.starts = append(d.f.starts, cfg)
	return &bootSandbox{ended: make(chan struct{})}, nil
}

type bootSandbox struct {
	once  sync.Once
	ended chan struct{}
}

func (*bootSandbox) ID() string { return "vm" }
func (*bootSandbox) Pid() int   { return 0 }
func (*bootSandbox) DialAgent(context.Context) (net.Conn, error) {
	host, guest := net.Pipe()
	guest.Close()
	return host, nil
}
func (b *bootSandbox) Wait(ctx context.Context) (sandbox.Exit, error) {
	select {
	case <-b.ended:
		return sandbox.Exit{Reason: sandbox.ExitShutdown}, nil
	case <-ctx.Done():
		return sandbox.Exit{}, ctx.Err()
	}
}
func (b *bootSandbox) Stop(context.Context) error { return b.Destroy() }
func (b *bootSandbox) Destroy() error {
	b.once.Do(func() { close(b.ended) })
	return nil
}

// bootAgent runs every container to exit 0 without output.
type bootAgent struct {
	guestAgent // nil: other calls are not expected
	f          *bootFixture
	conn       net.Conn
}

func (*bootAgent) Health(context.Context) (agent.Health, error) { return agent.Health{}, nil }
func (a *bootAgent) CreateContainer(_ context.Context, _ string, spec *specs.Spec, st []agent.Storage, n agent.ContainerNetwork) error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	a.f.created = append(a.f.created, spec)
	a.f.storages = append(a.f.storages, st)
	a.f.networks = append(a.f.networks, n)
	a.f.calls = append(a.f.calls, "create")
	return nil
}
func (*bootAgent) StartContainer(context.Context, string) error    { return nil }
func (*bootAgent) CloseStdin(context.Context, agent.Process) error { return nil }
func (*bootAgent) SignalProcess(context.Context, agent.Process, syscall.Signal) error {
	return nil
}
func (a *bootAgent) WaitProcess(context.Context, agent.Process) (agent.Exit, error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	return agent.Exit{Status: a.f.exitCode}, nil
}
func (*bootAgent) ReadStdout(context.Context, agent.Process, int, uint64) (agent.Output, error) {
	return agent.Output{EOF: true}, nil
}
func (*bootAgent) ReadStderr(context.Context, agent.Process, int, uint64) (agent.Output, error) {
	return agent.Output{EOF: true}, nil
}
func (a *bootAgent) Shutdown(context.Context) error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	a.f.shutdowns++
	return nil
}
func (a *bootAgent) Close() error { return a.conn.Close() }

// TestCreateResolvesOnce: a create chooses the hypervisor, resolves the
// image and builds its disk and the spec once and records them; starts use
// the record and choose, resolve and build nothing again.
func TestCreateResolvesOnce(t *testing.T) {
	f := newBootFixture(t)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "web", Hypervisor: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.counts(), (counts{chosen: 1, resolved: 1, disks: 1}); got != want {
		t.Errorf("after create: %+v, want %+v", got, want)
	}
	rec, err := f.svc.Get("web")
	if err != nil {
		t.Fatal(err)
	}
	cfg := rec.Config
	wantSpec, _ := BuildSpec(rec)
	wantDisks := []string{filepath.Join(f.dir, "top.ext4"), filepath.Join(f.dir, "base.ext4")}
	if cfg.Hypervisor != "qemu" || cfg.Accel != "tcg" || !slices.Equal(cfg.ImageDisks, wantDisks) ||
		!reflect.DeepEqual(cfg.Spec, wantSpec) || !cfg.Resolved() {
		t.Fatalf("record = hypervisor %q accel %q disks %q spec %+v; want qemu, tcg, the built disks and spec",
			cfg.Hypervisor, cfg.Accel, cfg.ImageDisks, cfg.Spec)
	}
	if f.budgets[0] != maxImageDisks {
		t.Errorf("image disk budget %d without volumes, want %d", f.budgets[0], maxImageDisks)
	}
	if cfg.Spec.Process.User.UID != 7 || cfg.Spec.Process.Cwd != "/srv" {
		t.Errorf("recorded spec does not carry the image's user and workdir: %+v", cfg.Spec.Process)
	}

	for i := 0; i < 2; i++ {
		if err := f.run(c.ID); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if got, want := f.counts(), (counts{chosen: 1, resolved: 1, disks: 1, opened: 2, starts: 2}); got != want {
		t.Errorf("after two starts: %+v, want %+v", got, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.starts {
		if f.opened[i] != (sandbox.Choice{Driver: "qemu", Accel: "tcg"}) {
			t.Errorf("start %d opened %+v, want the recorded qemu/tcg", i, f.opened[i])
		}
		d := f.starts[i].Disks
		if len(d) != 3 || d[0].Path != wantDisks[0] || d[0].Serial != contract.ImageDiskSerial || !d[0].ReadOnly ||
			d[1].Path != wantDisks[1] || d[1].Serial != contract.ImageDiskSerial+"1" || !d[1].ReadOnly ||
			d[2].Serial != contract.WritableDiskSerial {
			t.Errorf("start %d disks = %+v, want the recorded image disks, top first, then the writable one", i, d)
		}
		if !reflect.DeepEqual(f.created[i], cfg.Spec) {
			t.Errorf("start %d sent spec %+v, want the recorded %+v", i, f.created[i], cfg.Spec)
		}
		if st := f.storages[i]; len(st) != 3 || st[0].Role != contract.RoleImage || st[0].Serial != d[0].Serial ||
			st[1].Role != contract.RoleImage || st[1].Serial != d[1].Serial || st[2].Serial != contract.WritableDiskSerial {
			t.Errorf("start %d storages = %+v", i, st)
		}
		if n := f.networks[i]; n != (agent.ContainerNetwork{}) || len(f.starts[i].NICs) != 0 {
			t.Errorf("start %d without a network service: NICs %+v, container network %+v; want none", i, f.starts[i].NICs, n)
		}
	}
	rec, _ = f.svc.Get("web")
	if rec.State.Driver != "qemu" || rec.State.Accel != "tcg" {
		t.Errorf("state after start = driver %q accel %q, want qemu tcg", rec.State.Driver, rec.State.Accel)
	}
}

// TestStartResolvesEarlierRecordsOnce: a record written before create
// recorded its hypervisor, disk and spec gets them at its first start,
// from the request it holds, and keeps them.
func TestStartResolvesEarlierRecordsOnce(t *testing.T) {
	f := newBootFixture(t)
	c := &containers.Container{ID: containers.NewID(), Name: "old", Created: time.Now().UTC(),
		Config: containers.Config{Image: "busybox", ImageID: "sha256:0123", Args: []string{"sh"},
			Env: []string{"PATH=/bin"}, Hostname: "old", Hypervisor: "auto"},
		State: containers.State{Status: containers.StatusExited}}
	if err := f.svc.cfg.Store.Create(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.svc.writableDisk(c.ID), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := f.run("old"); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if got, want := f.counts(), (counts{chosen: 1, disks: 1, opened: 2, starts: 2}); got != want {
		t.Errorf("after two starts: %+v, want %+v", got, want)
	}
	if f.chosen[0] != "auto" {
		t.Errorf("ChooseDriver(%q), want the recorded request auto", f.chosen[0])
	}
	rec, _ := f.svc.Get("old")
	if !rec.Config.Resolved() || rec.Config.Hypervisor != "qemu" || rec.Config.Accel != "tcg" {
		t.Errorf("record after the first start = %+v, want resolved for qemu/tcg", rec.Config)
	}
}

// TestStartRebuildsMissingImageDisk: an image disk that went from the
// cache is built again (and recorded), not a failed start.
func TestStartRebuildsMissingImageDisk(t *testing.T) {
	f := newBootFixture(t)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(c.Config.ImageDisks[1]); err != nil {
		t.Fatal(err)
	}
	if err := f.run(c.ID); err != nil {
		t.Fatal(err)
	}
	if got := f.counts(); got.disks != 2 || got.chosen != 1 || got.resolved != 1 {
		t.Errorf("counts = %+v, want the disks built again and nothing else", got)
	}
	if _, err := os.Stat(c.Config.ImageDisks[1]); err != nil {
		t.Errorf("image disk not rebuilt: %v", err)
	}
}

// TestStartKeepsEarlierSingleDisk: a record of an earlier version names
// one flattened disk; while it is there, starts use it as it is.
func TestStartKeepsEarlierSingleDisk(t *testing.T) {
	f := newBootFixture(t)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(f.dir, "legacy.ext4")
	if err := os.WriteFile(legacy, []byte("disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Config.ImageDisks, c.Config.ImageDisk = nil, legacy
	if err := f.svc.cfg.Store.Update(c); err != nil {
		t.Fatal(err)
	}
	if err := f.run(c.ID); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.starts[0].Disks; len(d) != 2 || d[0].Path != legacy || d[0].Serial != contract.ImageDiskSerial {
		t.Errorf("disks = %+v, want the recorded single disk, then the writable one", d)
	}
	if f.disks != 1 {
		t.Errorf("%d disk builds, want only the create's", f.disks)
	}
}

func TestImageDiskBudget(t *testing.T) {
	for vols, want := range map[int]int{0: 4, 3: 4, 4: 3, 5: 2, 6: 1, 7: 1, 16: 1} {
		if got := imageDiskBudget(vols); got != want {
			t.Errorf("imageDiskBudget(%d) = %d, want %d", vols, got, want)
		}
	}
}

// TestStartOnRecordedDriverThatCannotRun: a start does not choose again
// when the recorded hypervisor cannot run here now; it fails with one line
// that says so, and boots nothing.
func TestStartOnRecordedDriverThatCannotRun(t *testing.T) {
	f := newBootFixture(t)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	f.openErr = errs.New(errdefs.ErrFailedPrecondition, "hypervisor qemu with KVM acceleration: /dev/kvm does not exist")
	err = f.svc.Start(context.Background(), "web", Stdio{})
	want := "cannot start container web (created for hypervisor qemu): hypervisor qemu with KVM acceleration: /dev/kvm does not exist"
	if !errdefs.IsFailedPrecondition(err) || err.Error() != want {
		t.Errorf("Start = %v, want %q, failed precondition", err, want)
	}
	if got := f.counts(); got.chosen != 1 || got.starts != 0 {
		t.Errorf("counts = %+v, want no new choice and no VM", got)
	}
	rec, _ := f.svc.Get(c.ID)
	if rec.State.Status != containers.StatusCreated || rec.State.Error != want || rec.Config.Hypervisor != "qemu" {
		t.Errorf("record after the failed start = %+v", rec)
	}
	if f.svc.task(c.ID) != nil {
		t.Errorf("a failed start left its run behind")
	}
}

// TestCreateFailuresLeaveNothing: a create whose hypervisor choice, spec
// or image disk fails stores no record.
func TestCreateFailuresLeaveNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*bootFixture)
		o     CreateOptions
		class func(error) bool
	}{
		{"unknown hypervisor", func(f *bootFixture) {
			f.svc.cfg.ChooseDriver = func(name string) (sandbox.Choice, error) {
				return sandbox.Choice{}, errs.New(errdefs.ErrInvalidArgument, "unknown hypervisor %q: use auto, kvm or qemu", name)
			}
		}, CreateOptions{Image: "busybox", Hypervisor: "xen"}, errdefs.IsInvalidArgument},
		{"bad user", nil, CreateOptions{Image: "busybox", User: "a:b:c"}, errdefs.IsInvalidArgument},
		{"image disk fails", func(f *bootFixture) { f.svc.cfg.Images = brokenDisks{f} },
			CreateOptions{Image: "busybox"}, errdefs.IsUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newBootFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			if _, err := f.svc.Create(context.Background(), tt.o); !tt.class(err) {
				t.Errorf("Create = %v, want an error of the right class", err)
			}
			if all, err := f.svc.List(); err != nil || len(all) != 0 {
				t.Errorf("List after a failed create = %d records, %v", len(all), err)
			}
		})
	}
}

type brokenDisks struct{ *bootFixture }

func (brokenDisks) Disks(context.Context, string, int) ([]string, error) {
	return nil, errs.Class(errdefs.ErrUnavailable, errors.New("no space left for the image disk"))
}

// TestDisposableRunSkipsShutdown: the guest of a --rm container whose disks
// all go with it is not asked to unmount and sync before its VM ends; any
// other container's is.
func TestDisposableRunSkipsShutdown(t *testing.T) {
	for _, tt := range []struct {
		name       string
		autoRemove bool
		want       int // shutdown calls
	}{
		{"--rm", true, 0},
		{"kept", false, 1},
	} {
		f := newBootFixture(t)
		c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Hypervisor: "auto", AutoRemove: tt.autoRemove})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.run(c.ID); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		f.mu.Lock()
		got := f.shutdowns
		f.mu.Unlock()
		if got != tt.want {
			t.Errorf("%s: guest asked to shut down %d times, want %d", tt.name, got, tt.want)
		}
	}

	// What keeps the guest's clean shutdown: a named volume, a bind mount,
	// no --rm.
	for _, tt := range []struct {
		name string
		cfg  containers.Config
		want bool
	}{
		{"--rm, anonymous volume", containers.Config{AutoRemove: true, Mounts: []containers.Mount{{Name: "a1", Anonymous: true}}}, true},
		{"--rm, named volume", containers.Config{AutoRemove: true, Mounts: []containers.Mount{{Name: "data"}}}, false},
		{"--rm, bind mount", containers.Config{AutoRemove: true, Binds: []containers.Bind{{Source: "/srv", Destination: "/srv"}}}, false},
		{"no --rm", containers.Config{}, false},
	} {
		task := &task{c: &containers.Container{Config: tt.cfg}}
		if got := task.disposable(); got != tt.want {
			t.Errorf("%s: disposable %v, want %v", tt.name, got, tt.want)
		}
	}
}
