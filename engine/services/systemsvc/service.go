// Package systemsvc is the system service: what the engine is (version,
// build, the host kernel) and what it holds (containers and images,
// counted), and how this host runs VMs (the hypervisor auto picks, and
// why). It backs docker version and docker info.
//
// It has no transport code, and it changes nothing.
package systemsvc

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/images"
	"github.com/vmctl/vmctl/engine/sandbox/snapshot"
)

// Containers lists the containers (engine/services/containersvc).
type Containers interface {
	List() ([]*containers.Container, error)
}

// Images lists the images (engine/services/imagesvc).
type Images interface {
	List(ctx context.Context) ([]images.Image, error)
}

// Config wires a Service.
type Config struct {
	// Version is the engine's version, set at build time.
	Version string
	// DataRoot and ExecRoot are where the engine keeps its persistent and
	// its runtime state.
	DataRoot, ExecRoot string
	// Host says how VMs are run here; see HostConfig.
	Host       HostConfig
	Containers Containers
	Images     Images
	// Snapshots keeps the saved VM states runs start from; nil when runs
	// boot (vmctld --snapshots=false).
	Snapshots *snapshot.Store
	// Warnings reports what of the host stands in containers' way (a
	// forward policy that drops their traffic, say), one line each; nil
	// reports nothing.
	Warnings func(ctx context.Context) ([]string, error)
}

// Service answers questions about the engine and the host.
type Service struct {
	cfg     Config
	version Version
}

// New returns a Service. The facts that cannot change while the process
// runs (the build, the kernel) are read once, here.
func New(cfg Config) *Service {
	return &Service{cfg: cfg, version: Version{
		Version: cfg.Version, GoVersion: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH, KernelVersion: kernelRelease(),
	}}
}

// Version is what docker version shows of the engine.
type Version struct {
	Version   string
	GoVersion string
	OS, Arch  string
	// KernelVersion is the host kernel's release.
	KernelVersion string
}

// Version returns the engine's version and build.
func (s *Service) Version() Version { return s.version }

// Info is what docker info shows of the engine and the host.
type Info struct {
	Version
	// Containers counts every container; Running and Stopped split them.
	Containers, Running, Stopped int
	Images                       int
	DataRoot, ExecRoot           string
	// Hostname, NCPU and MemTotal (bytes) describe the host; Hostname and
	// MemTotal are empty when they cannot be read.
	Hostname string
	NCPU     int
	MemTotal int64
	Host     Host
	// Warnings are the host's problems for containers (Config.Warnings).
	Warnings []string
	// Snapshots says whether runs start from saved VM states, where they
	// are and which there are.
	Snapshots string
}

// Info counts the containers and images and probes the host.
func (s *Service) Info(ctx context.Context) (Info, error) {
	list, err := s.cfg.Containers.List()
	if err != nil {
		return Info{}, err
	}
	imgs, err := s.cfg.Images.List(ctx)
	if err != nil {
		return Info{}, err
	}
	info := Info{
		Version: s.version, Containers: len(list), Images: len(imgs),
		DataRoot: s.cfg.DataRoot, ExecRoot: s.cfg.ExecRoot, NCPU: runtime.NumCPU(),
		Host: ProbeHost(ctx, s.cfg.Host), Snapshots: s.snapshots(),
	}
	for _, c := range list {
		if c.State.Status == containers.StatusRunning {
			info.Running++
		} else {
			info.Stopped++
		}
	}
	if name, err := os.Hostname(); err == nil {
		info.Hostname = name
	}
	if s.cfg.Warnings != nil {
		w, err := s.cfg.Warnings(ctx)
		if err != nil {
			w = []string{"cannot check the host's networking: " + err.Error()}
		}
		info.Warnings = w
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		info.MemTotal = int64(si.Totalram) * int64(si.Unit)
	}
	return info, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// snapshots describes the saved VM states for Info.
func (s *Service) snapshots() string {
	st := s.cfg.Snapshots
	if st == nil {
		return "off: every run boots its VM"
	}
	saved, err := st.List()
	if err != nil {
		return fmt.Sprintf("on, in %s (%v)", st.Dir(), err)
	}
	if len(saved) == 0 {
		return fmt.Sprintf("on, in %s (none saved yet: the first run of each VM shape saves one)", st.Dir())
	}
	var shapes []string
	for _, sv := range saved {
		shapes = append(shapes, fmt.Sprintf("%s %s", sv.Shape, units.BytesSize(float64(sv.Meta.Size+sv.Meta.MemoryBytes))))
	}
	return fmt.Sprintf("on, in %s: %s", st.Dir(), strings.Join(shapes, ", "))
}
