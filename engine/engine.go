// Package engine wires the engine's stores, drivers and services into one
// value that a front end owns: vmctld, or vmctl serving the API in its own
// process. It holds no logic of its own beyond defaults and the adapters
// between packages; front ends drive the services it builds
// (engine/services).
package engine

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/images"
	"github.com/vmctl/vmctl/engine/networks"
	"github.com/vmctl/vmctl/engine/networks/portproxy"
	"github.com/vmctl/vmctl/engine/rootfs"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
	"github.com/vmctl/vmctl/engine/sandbox/snapshot"
	"github.com/vmctl/vmctl/engine/sandbox/vmm"
	"github.com/vmctl/vmctl/engine/services"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/imagesvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
	"github.com/vmctl/vmctl/engine/services/systemsvc"
	"github.com/vmctl/vmctl/engine/services/volumesvc"
	"github.com/vmctl/vmctl/engine/volumes"
)

// Version is set at build time.
var Version = "dev"

// Config locates the engine's state and the guest it boots.
type Config struct {
	// DataRoot holds persistent state: images, disks, containers.
	DataRoot string
	// MaxImageSize bounds what one image unpacks to; 0 is
	// rootfs.DefaultMaxUnpacked.
	MaxImageSize int64
	// LogOptions are the default options of containers' logs (dockerd's
	// log-opts: max-size, max-file); nil: containersvc.DefaultLogLimits.
	LogOptions map[string]string
	// ExecRoot holds runtime state: one directory of sockets per VM.
	ExecRoot string
	// Kernel and Initrd default to guest/vmlinuz and guest/initramfs.img
	// next to the running binary.
	Kernel string
	Initrd string
	// QEMU is the qemu-system-x86_64 binary; empty means look it up in PATH.
	QEMU string
	// VMM is the vmctl-vmm binary; empty means next to this program, else PATH.
	VMM string
	// DetachVMs lets VMs outlive the process that started them (a daemon).
	DetachVMs bool
	// NoSnapshots makes every run boot its VM; by default runs start from
	// a saved VM of their shape, kept in DataRoot/snapshots (package
	// snapshot).
	NoSnapshots bool
	// Network holds the daemon's networking flags (--bip, --fixed-cidr,
	// --default-address-pool, --mtu); zero values keep what the data
	// root has (see networks.Open).
	Network networks.DaemonOptions
}

// Engine is one engine: its stores, opened, and the services over them.
type Engine struct {
	cfg      Config
	services services.Services
	store    *containers.Store
}

func (c *Config) setDefaults() {
	exe, err := os.Executable()
	dir := "."
	if err == nil {
		dir = filepath.Dir(exe)
	}
	guest := GuestDir(dir)
	if c.Kernel == "" {
		c.Kernel = filepath.Join(guest, "vmlinuz")
	}
	if c.Initrd == "" {
		c.Initrd = filepath.Join(guest, "initramfs.img")
	}
}

// GuestDir is where the guest files are by default, for a binary in
// exeDir: guest/ beside it in a build tree (bin/guest), else
// PREFIX/lib/vmctl/guest for one installed in PREFIX/bin (make install).
func GuestDir(exeDir string) string {
	built := filepath.Join(exeDir, "guest")
	installed := filepath.Join(exeDir, "..", "lib", "vmctl", "guest")
	if _, err := os.Stat(filepath.Join(built, "vmlinuz")); err != nil {
		if _, err := os.Stat(filepath.Join(installed, "vmlinuz")); err == nil {
			return filepath.Clean(installed)
		}
	}
	return built
}

// New opens the stores under cfg.DataRoot.
func New(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if cfg.DataRoot == "" || cfg.ExecRoot == "" {
		return nil, fmt.Errorf("engine: data root and exec root must be set")
	}
	for _, p := range []*string{&cfg.DataRoot, &cfg.ExecRoot, &cfg.Kernel, &cfg.Initrd} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	if err := os.MkdirAll(cfg.DataRoot, 0o711); err != nil {
		return nil, fmt.Errorf("data root: %w", err)
	}
	imgs, err := images.Open(filepath.Join(cfg.DataRoot, "images"))
	if err != nil {
		return nil, err
	}
	disks, err := rootfs.NewBuilder(cfg.DataRoot)
	if err == nil {
		disks.MaxUnpacked = cfg.MaxImageSize
	}
	if err != nil {
		return nil, err
	}
	store, err := containers.OpenStore(filepath.Join(cfg.DataRoot, "containers"))
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, store: store}
	bus := events.NewBus(events.DefaultHistory)
	// The services refer to each other through these, set below: volumes
	// and images ask the container service who uses them.
	var ctrs *containersvc.Service
	vols, err := volumes.Open(volumes.Config{
		Root: filepath.Join(cfg.DataRoot, "volumes"), NewDisk: disks.WritableDisk,
		Users: func() (map[string][]string, error) { return ctrs.VolumeUsers() },
	})
	if err != nil {
		return nil, err
	}
	volSvc := volumesvc.New(volumesvc.Config{Store: vols, Events: bus})
	netStore, err := networks.Open(filepath.Join(cfg.DataRoot, "networks"), cfg.Network)
	if err != nil {
		return nil, err
	}
	host, err := networks.OpenHost()
	if err != nil {
		return nil, err
	}
	host.SetRouteLocalnet(cfg.Network.KernelPorts)
	names := newNameHook()
	netSvc := networksvc.New(networksvc.Config{Store: netStore, Host: host, Events: bus,
		Proxies: proxyHook{portproxy.NewManager(portproxy.Options{})}, Names: names, KernelPorts: cfg.Network.KernelPorts})
	names.reload = netSvc.Names
	var snaps *snapshot.Store
	if !cfg.NoSnapshots {
		snaps = snapshot.New(filepath.Join(cfg.DataRoot, "snapshots"), Version, templateReady)
	}
	logLimits, err := containersvc.ParseLogOptions(cfg.LogOptions, containersvc.DefaultLogLimits)
	if err != nil {
		return nil, fmt.Errorf("log-opts: %w", err)
	}
	ctrs = containersvc.New(containersvc.Config{
		Store:     store,
		LogLimits: &logLimits,
		Images:    imageSource{imgs, disks},
		NewWritableDisk: func(path string, size int64) error {
			return disks.WritableDisk(context.Background(), path, size)
		},
		ChooseDriver: e.chooseDriver,
		OpenDriver:   e.openDriver,
		Kernel:       cfg.Kernel,
		Initrd:       cfg.Initrd,
		ExecRoot:     cfg.ExecRoot,
		Events:       bus,
		Volumes:      volSvc,
		// A daemon outlives its containers' runs, so it restarts them.
		RestartPolicies: cfg.DetachVMs,
		Network:         containerNetwork{netSvc},
		Snapshots:       snaps,
	})
	imgSvc := imagesvc.New(imagesvc.Config{Store: imgs, Disks: disks, InUse: ctrs.ImageUser, Events: bus,
		BuildRunner: buildRunner{ctrs}, Containers: ctrs})
	e.services = services.Services{
		Containers: ctrs,
		Images:     imgSvc,
		Volumes:    volSvc,
		Networks:   netSvc,
		System: systemsvc.New(systemsvc.Config{
			Version: Version, DataRoot: cfg.DataRoot, ExecRoot: cfg.ExecRoot,
			Host:       systemsvc.HostConfig{Kernel: cfg.Kernel, Initrd: cfg.Initrd, QEMU: cfg.QEMU},
			Containers: ctrs, Images: imgSvc, Warnings: netSvc.HostWarnings, Snapshots: snaps,
		}),
		Events: bus,
	}
	return e, nil
}

// Restore takes over, at a daemon's start, what an earlier one left on the
// same roots: the containers whose VMs still run (re-adopted, see
// containersvc.Readopt), then the host's networking of every container of
// the data root that runs, whichever process runs it (its taps, rules,
// proxies and names, keeping its addresses), sweeping the taps and rules
// no running container owns. It returns the re-adopted containers.
func (e *Engine) Restore(ctx context.Context) ([]string, error) {
	ctrs := e.services.Containers
	adopted, err := ctrs.Readopt(ctx)
	if err != nil {
		return nil, err
	}
	all, err := ctrs.List()
	if err != nil {
		return adopted, err
	}
	var running []string
	for _, c := range all {
		if c.State.Status == containers.StatusRunning {
			running = append(running, c.ID)
		}
	}
	if err := e.services.Networks.Restore(ctx, running); err != nil {
		return adopted, fmt.Errorf("restore container networking: %w", err)
	}
	return adopted, nil
}

// RestartOnBoot starts, in the background, the stopped containers whose
// restart policy wants them running at a daemon's start (after Restore),
// and returns them.
func (e *Engine) RestartOnBoot() ([]string, error) {
	return e.services.Containers.RestartOnBoot()
}

// Services returns the engine's services, for a front end to serve
// (server.New(eng.Services())).
func (e *Engine) Services() services.Services { return e.services }

// chooseDriver picks the hypervisor for a name and checks that everything
// a boot on it needs is there, so that a run fails before it creates
// anything.
func (e *Engine) chooseDriver(name string) (sandbox.Choice, error) {
	choice, err := sandbox.Choose(name)
	if err != nil {
		return sandbox.Choice{}, errs.Class(errdefs.ErrInvalidArgument, err)
	}
	if _, err := e.openDriver(choice); err != nil {
		return sandbox.Choice{}, err
	}
	return choice, nil
}

// openDriver returns the driver for a hypervisor choice, made now or
// recorded with a container, once this host can run it and everything a
// boot needs is there.
func (e *Engine) openDriver(choice sandbox.Choice) (sandbox.Driver, error) {
	if err := sandbox.CanRun(choice); err != nil {
		return nil, errs.Class(errdefs.ErrFailedPrecondition, err)
	}
	for _, f := range []struct{ what, path, fix string }{
		{"guest kernel", e.cfg.Kernel, "build it with `make kernel` or pass --kernel"},
		{"guest image", e.cfg.Initrd, "build it with `make build` or pass --initrd"},
	} {
		if st, err := os.Stat(f.path); err != nil || !st.Mode().IsRegular() {
			return nil, errs.New(errdefs.ErrFailedPrecondition, "%s not found at %s: %s", f.what, f.path, f.fix)
		}
	}
	var d sandbox.Driver
	var err error
	switch choice.Driver {
	case "qemu":
		d, err = qemu.New(qemu.Options{Binary: e.cfg.QEMU, Accel: choice.Accel, Detach: e.cfg.DetachVMs,
			ProbeCache: filepath.Join(e.cfg.DataRoot, "qemu-probe.json")})
	case "kvm":
		d, err = vmm.New(vmm.Options{Binary: e.cfg.VMM, Detach: e.cfg.DetachVMs})
	default:
		return nil, errs.New(errdefs.ErrNotImplemented, "hypervisor %s: no driver", choice.Driver)
	}
	if err != nil {
		return nil, errs.Class(errdefs.ErrFailedPrecondition, err)
	}
	return d, nil
}

// imageSource adapts the image store and disk builder to the container service.
type imageSource struct {
	images *images.Store
	disks  *rootfs.Builder
}

func (s imageSource) Resolve(ctx context.Context, ref string) (containersvc.ImageInfo, error) {
	img, err := s.images.Resolve(ctx, ref)
	if err != nil {
		return containersvc.ImageInfo{}, err
	}
	name := ref
	if len(img.RepoTags) > 0 {
		name = img.RepoTags[0]
	}
	return containersvc.ImageInfo{
		ID: img.ID, Name: name, Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd,
		Env: img.Config.Env, WorkingDir: img.Config.WorkingDir, User: img.Config.User,
		StopSignal: img.Config.StopSignal, Volumes: slices.Sorted(maps.Keys(img.Config.Volumes)),
		ExposedPorts: slices.Sorted(maps.Keys(img.Config.ExposedPorts)),
		Healthcheck:  imageHealthcheck(img.Config.Healthcheck),
	}, nil
}

// imageHealthcheck is an image's HEALTHCHECK as the container service
// takes it.
func imageHealthcheck(h *v1.HealthConfig) *containersvc.Healthcheck {
	if h == nil {
		return nil
	}
	return &containersvc.Healthcheck{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
}

func (s imageSource) Disks(ctx context.Context, imageID string, budget int) ([]string, error) {
	img, err := s.images.Resolve(ctx, imageID)
	if err != nil {
		return nil, err
	}
	return s.disks.ImageDisks(ctx, img, budget, s.bases)
}

// bases are the chain IDs of the tagged images: the images others are
// built FROM, whose flattened disks a built image's stack stands on.
func (s imageSource) bases(ctx context.Context) (map[v1.Hash]bool, error) {
	imgs, err := s.images.List(ctx)
	if err != nil {
		return nil, err
	}
	out := map[v1.Hash]bool{}
	for _, img := range imgs {
		if len(img.RepoTags) == 0 || img.Content() == nil {
			continue
		}
		cf, err := img.Content().ConfigFile()
		if err != nil || len(cf.RootFS.DiffIDs) == 0 {
			continue
		}
		chains := rootfs.ChainIDs(cf.RootFS.DiffIDs)
		out[chains[len(chains)-1]] = true
	}
	return out, nil
}

// orphanGrace is how long a container directory without a record is left
// alone: far longer than any create takes between the two.
const orphanGrace = 10 * time.Minute

// SweepOrphans removes container directories that no record names, left
// by a process that died between the two (see containers.Store). vmctld
// calls it at start; it returns the IDs removed.
func (e *Engine) SweepOrphans() ([]string, error) {
	return e.store.SweepOrphans(orphanGrace)
}

// templateReady waits until a template VM's agent answers, then closes
// the channel: the agent waits for its next client, which is what a VM
// restored from the template finds.
func templateReady(ctx context.Context, sb sandbox.Sandbox) error {
	conn, err := sb.DialAgent(ctx)
	if err != nil {
		return err
	}
	a := agent.New(conn)
	defer a.Close()
	_, err = a.Health(ctx)
	return err
}
