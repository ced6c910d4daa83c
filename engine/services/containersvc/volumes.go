package containersvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/volumes"
)

// maxVolumes bounds the volumes of one container: each is a virtio-mmio
// disk, and QEMU's microvm machine has 24 transports for everything.
const maxVolumes = 16

// VolumeMount asks for a volume or a host directory in a container (docker
// run -v, HostConfig.Binds, HostConfig.Mounts of type volume or bind).
type VolumeMount struct {
	// Name is the volume; empty asks for a new anonymous volume. Unused
	// when HostPath is set.
	Name string
	// HostPath, if set, makes this a bind mount of that host directory.
	HostPath string
	// CreateHostPath creates a missing HostPath at start (-v does,
	// --mount does not).
	CreateHostPath bool
	Destination    string
	ReadOnly       bool
}

// ParseBind parses docker's -v syntax: "NAME:/path[:MODE]", "/host:/path[:MODE]"
// (a bind mount of a host directory) or "/path" (an anonymous volume).
// MODE is a comma list of ro or rw and docker's options that mean nothing
// in a VM (z, Z: SELinux labels; private, rprivate: the propagation a
// share has anyway).
func ParseBind(spec string) (VolumeMount, error) {
	parts := strings.Split(spec, ":")
	var m VolumeMount
	switch len(parts) {
	case 1:
		m.Destination = parts[0]
	case 2, 3:
		m.Name, m.Destination = parts[0], parts[1]
		if len(parts) == 3 {
			for _, opt := range strings.Split(parts[2], ",") {
				switch opt {
				case "ro":
					m.ReadOnly = true
				case "rw", "z", "Z", "private", "rprivate":
				case "shared", "rshared", "slave", "rslave":
					return VolumeMount{}, errs.New(errdefs.ErrInvalidArgument, "invalid volume mode %q in %q: mount propagation does not cross into a VM", opt, spec)
				case "nocopy":
					return VolumeMount{}, errs.New(errdefs.ErrInvalidArgument, "volume-nocopy is not supported: a new volume always takes the image's content")
				default:
					return VolumeMount{}, errs.New(errdefs.ErrInvalidArgument, "invalid volume mode %q in %q: want ro or rw", opt, spec)
				}
			}
		}
	default:
		return VolumeMount{}, errs.New(errdefs.ErrInvalidArgument, "invalid volume specification %q: want NAME:/path[:ro] or /host/dir:/path[:ro]", spec)
	}
	switch {
	case strings.HasPrefix(m.Name, "/"):
		m.HostPath, m.Name, m.CreateHostPath = m.Name, "", true
	case strings.HasPrefix(m.Name, "."):
		return VolumeMount{}, errs.New(errdefs.ErrInvalidArgument, "invalid volume specification %q: the host path %q is relative; give an absolute path", spec, m.Name)
	case len(parts) > 1 && m.Name == "":
		return VolumeMount{}, errs.New(errdefs.ErrInvalidArgument, "invalid volume specification %q: the volume name is empty", spec)
	}
	return m, nil
}

// checkDestination validates where a volume goes in the container. The
// guest checks again; this gives the user one clear line first.
func checkDestination(dst string) (string, error) {
	if !path.IsAbs(dst) {
		return "", errs.New(errdefs.ErrInvalidArgument, "invalid mount path %q: it must be absolute", dst)
	}
	for _, part := range strings.Split(dst, "/") {
		if part == ".." {
			return "", errs.New(errdefs.ErrInvalidArgument, "invalid mount path %q: it must not contain ..", dst)
		}
	}
	clean := path.Clean(dst)
	if clean == "/" {
		return "", errs.New(errdefs.ErrInvalidArgument, "invalid mount path %q: a volume cannot replace the root filesystem", dst)
	}
	// The guest refuses NUL and newline (storage.ValidateMountPoint); a
	// container created with one could never start.
	if strings.ContainsAny(clean, "\x00\n") {
		return "", errs.New(errdefs.ErrInvalidArgument, "invalid mount path %q: it must not contain a NUL or newline", dst)
	}
	return clean, nil
}

// NewVolumeName is a 64-hex volume name, as docker gives volumes created
// without one.
func NewVolumeName() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WithAnonymousVolumes adds an anonymous volume for each path that no
// mount in reqs covers, as docker does for the image's VOLUME paths and a
// create request's Config.Volumes (where docker run -v /path puts them).
// Paths are compared clean; invalid ones are left for planMounts to refuse.
func WithAnonymousVolumes(reqs []VolumeMount, paths []string) []VolumeMount {
	covered := map[string]bool{}
	for _, r := range reqs {
		covered[path.Clean(r.Destination)] = true
	}
	out := reqs
	for _, p := range paths {
		if !covered[path.Clean(p)] {
			covered[path.Clean(p)] = true
			out = append(out, VolumeMount{Destination: p})
		}
	}
	return out
}

// planMounts validates the requested volumes and bind mounts and names the
// anonymous volumes. taken are mount points the container has already (its
// --tmpfs paths, clean).
func planMounts(reqs []VolumeMount, taken ...string) ([]containers.Mount, []containers.Bind, error) {
	if len(reqs) > maxVolumes {
		return nil, nil, errs.New(errdefs.ErrInvalidArgument, "too many volumes (%d): a container takes at most %d", len(reqs), maxVolumes)
	}
	seen := map[string]bool{}
	for _, t := range taken {
		seen[t] = true
	}
	var out []containers.Mount
	var binds []containers.Bind
	for _, r := range reqs {
		dst, err := checkDestination(r.Destination)
		if err != nil {
			return nil, nil, err
		}
		if seen[dst] {
			return nil, nil, errs.New(errdefs.ErrInvalidArgument, "duplicate mount point: %s", dst)
		}
		seen[dst] = true
		if r.HostPath != "" {
			b, err := planBind(r, dst)
			if err != nil {
				return nil, nil, err
			}
			binds = append(binds, b)
			continue
		}
		m := containers.Mount{Name: r.Name, Destination: dst, ReadOnly: r.ReadOnly}
		if m.Name == "" {
			m.Name, m.Anonymous = NewVolumeName(), true
		} else if err := volumes.ValidateName(m.Name); err != nil {
			return nil, nil, err
		}
		out = append(out, m)
	}
	// One volume twice in one VM would be one ext4 mounted from two disks.
	names := map[string]bool{}
	for _, m := range out {
		if names[m.Name] {
			return nil, nil, errs.New(errdefs.ErrInvalidArgument, "volume %s is mounted twice: mount it once", m.Name)
		}
		names[m.Name] = true
	}
	if len(binds) > maxBinds {
		return nil, nil, errs.New(errdefs.ErrInvalidArgument, "too many bind mounts (%d): a container takes at most %d", len(binds), maxBinds)
	}
	return out, binds, nil
}

// createRecord stores the new container. With volumes, it creates the
// missing ones and stores the record under the volume service's lock, so
// no volume can be removed between the two.
func (s *Service) createRecord(ctx context.Context, c *containers.Container, reqs []VolumeMount) error {
	mounts, binds, err := planMounts(reqs, slices.Collect(maps.Keys(c.Config.Security.Tmpfs))...)
	if err != nil {
		return err
	}
	c.Config.Binds = binds
	if len(mounts) == 0 {
		return s.cfg.Store.Create(c)
	}
	if s.cfg.Volumes == nil {
		return errs.New(errdefs.ErrNotImplemented, "volumes are not available in this engine")
	}
	opts := make([]volumes.CreateOptions, len(mounts))
	for i, m := range mounts {
		opts[i] = volumes.CreateOptions{Name: m.Name, Anonymous: m.Anonymous}
	}
	return s.cfg.Volumes.Use(ctx, opts, func(vols map[string]*volumes.Volume) error {
		for i := range mounts {
			mounts[i].Source = vols[mounts[i].Name].Disk
		}
		c.Config.Mounts = mounts
		return s.cfg.Store.Create(c)
	})
}

// dropAnonymousVolumes removes the anonymous volumes of a removed container
// that was run with AutoRemove (docker run --rm). Failures are left
// behind rather than failing the container's removal: the volume stays
// listed and can be removed by hand.
func (s *Service) dropAnonymousVolumes(c *containers.Container) {
	if c.Config.AutoRemove {
		s.removeAnonymousVolumes(c)
	}
}

// removeAnonymousVolumes removes the container's anonymous volumes.
func (s *Service) removeAnonymousVolumes(c *containers.Container) {
	if s.cfg.Volumes == nil {
		return
	}
	for _, m := range c.Config.Mounts {
		if m.Anonymous {
			s.cfg.Volumes.Remove(context.Background(), m.Name, true)
		}
	}
}

// VolumeUsers maps each volume name to the containers that reference it,
// running or not, for the volume service's in-use check.
func (s *Service) VolumeUsers() (map[string][]string, error) {
	all, err := s.cfg.Store.List()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, c := range all {
		for _, m := range c.Config.Mounts {
			out[m.Name] = append(out[m.Name], displayName(c))
		}
	}
	return out, nil
}

// ImageUser names a container, running or not, made from the image with
// this ID, for docker rmi's in-use check.
func (s *Service) ImageUser(imageID string) (string, bool) {
	all, err := s.cfg.Store.List()
	if err != nil {
		// Unknown is in use: an image must not go from under a container.
		return "(container store unreadable: " + err.Error() + ")", true
	}
	for _, c := range all {
		if c.Config.ImageID == imageID {
			return displayName(c), true
		}
	}
	return "", false
}

func displayName(c *containers.Container) string {
	if c.Name != "" {
		return c.Name
	}
	return c.ShortID()
}

// volumeAttachment is what a start adds to the VM and to the agent request
// for the container's volumes; release ends the claims on them.
type volumeAttachment struct {
	disks    []sandbox.Disk
	storages []agent.Storage
	release  func()
}

// attachVolumes claims the container's volumes and checks that no other
// running container has one mounted: ext4 cannot be mounted by two VMs at
// once (a deviation from docker, see docs/design.md). The caller holds the
// claims until the container is recorded as running, then releases them.
func (s *Service) attachVolumes(ctx context.Context, c *containers.Container) (*volumeAttachment, error) {
	a := &volumeAttachment{release: func() {}}
	if len(c.Config.Mounts) == 0 {
		return a, nil
	}
	if s.cfg.Volumes == nil {
		return nil, errs.New(errdefs.ErrNotImplemented, "volumes are not available in this engine")
	}
	names := make([]string, len(c.Config.Mounts))
	for i, m := range c.Config.Mounts {
		names[i] = m.Name
	}
	release, err := s.cfg.Volumes.Claim(ctx, names)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, errs.New(errdefs.ErrNotFound, "cannot start container %s: %v", displayName(c), err)
		}
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	all, err := s.List() // reconciled: a dead owner's record is not running
	if err != nil {
		return nil, err
	}
	for _, other := range all {
		if other.ID == c.ID || other.State.Status != containers.StatusRunning {
			continue
		}
		for _, om := range other.Config.Mounts {
			for _, m := range c.Config.Mounts {
				if om.Name == m.Name {
					return nil, errs.New(errdefs.ErrConflict, "volume %s is in use by running container %s: a volume can be mounted by one running container at a time", m.Name, displayName(other))
				}
			}
		}
	}
	for i, m := range c.Config.Mounts {
		v, err := s.cfg.Volumes.Get(m.Name)
		if err != nil {
			return nil, fmt.Errorf("volume of container %s: %w", displayName(c), err)
		}
		serial := contract.VolumeDiskSerial(i)
		// The disk is always writable: the guest may have to replay the
		// journal, and creates the data directory on first use. The agent
		// makes the container's view read-only.
		a.disks = append(a.disks, sandbox.Disk{Path: v.Disk, Serial: serial})
		a.storages = append(a.storages, agent.Storage{
			Serial: serial, FSType: "ext4", ReadOnly: m.ReadOnly, Role: contract.RoleVolume, MountPoint: m.Destination,
		})
	}
	ok = true
	a.release = release
	return a, nil
}
