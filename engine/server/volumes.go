package server

import (
	"net/http"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/volume"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/volumesvc"
)

func (s *Server) volumeRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /volumes", s.volumeList)
	m.HandleFunc("POST /volumes/create", s.volumeCreate)
	m.HandleFunc("POST /volumes/prune", s.volumePrune)
	m.HandleFunc("GET /volumes/{name}", s.volumeInspect)
	m.HandleFunc("DELETE /volumes/{name}", s.volumeDelete)
}

// volumeJSON converts a volume to its wire form. Mountpoint is the disk
// image: a volume's files are only visible inside a guest.
func volumeJSON(v *volumesvc.Volume) volume.Volume {
	out := volume.Volume{
		Name: v.Name, Driver: v.Driver, Mountpoint: v.Disk, Scope: "local",
		CreatedAt: v.CreatedAt.Format(time.RFC3339), Labels: v.Labels, Options: v.Options,
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.Options == nil {
		out.Options = map[string]string{}
	}
	return out
}

// volumeList is GET /volumes: docker volume ls, with its filters (name,
// dangling, label).
func (s *Server) volumeList(w http.ResponseWriter, r *http.Request) {
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	list, err := s.volumes.List(volumesvc.ListOptions{Filters: terms})
	if err != nil {
		writeError(w, err)
		return
	}
	resp := volume.ListResponse{Volumes: []volume.Volume{}, Warnings: []string{}}
	for _, v := range list {
		resp.Volumes = append(resp.Volumes, volumeJSON(v))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) volumeCreate(w http.ResponseWriter, r *http.Request) {
	var req volume.CreateRequest
	if err := decodeBody(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	if req.ClusterVolumeSpec != nil {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "cluster volumes are not supported"))
		return
	}
	o := volumesvc.CreateOptions{Name: req.Name, Driver: req.Driver, DriverOpts: req.DriverOpts, Labels: req.Labels}
	if o.Name == "" {
		// docker volume create without a name: a generated one.
		o.Name = containersvc.NewVolumeName()
	}
	v, err := s.volumes.Create(r.Context(), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, volumeJSON(v))
}

func (s *Server) volumeInspect(w http.ResponseWriter, r *http.Request) {
	v, err := s.volumes.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, volumeJSON(v))
}

func (s *Server) volumeDelete(w http.ResponseWriter, r *http.Request) {
	force, err := boolParam(r, "force")
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.volumes.Remove(r.Context(), r.PathValue("name"), force); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// volumePrune removes unused volumes: all of them before API 1.42 (or with
// the all filter), only anonymous ones from 1.42 on, as dockerd does; label
// and label! narrow the choice.
func (s *Server) volumePrune(w http.ResponseWriter, r *http.Request) {
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	removed, freed, err := s.volumes.Prune(r.Context(), volumesvc.PruneOptions{All: !apiAtLeast(r, 42), Filters: terms})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, volume.PruneReport{VolumesDeleted: removed, SpaceReclaimed: freed})
}

// volumeMounts turns HostConfig.Binds and HostConfig.Mounts into the
// container's volumes and bind mounts. Other mount types (tmpfs and the
// like) and options that cannot hold in a VM are refused with one line
// rather than ignored.
func volumeMounts(hc *container.HostConfig) ([]containersvc.VolumeMount, error) {
	var out []containersvc.VolumeMount
	for _, b := range hc.Binds {
		m, err := containersvc.ParseBind(b)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	for _, m := range hc.Mounts {
		switch m.Type {
		case mount.TypeVolume:
		case mount.TypeBind:
			if m.VolumeOptions != nil {
				return nil, errs.New(errdefs.ErrInvalidArgument, "invalid mount config for type \"bind\": field VolumeOptions must not be specified")
			}
			if err := checkBindOptions(m.BindOptions); err != nil {
				return nil, err
			}
			if m.Source == "" {
				return nil, errs.New(errdefs.ErrInvalidArgument, "invalid mount config for type \"bind\": field Source must not be empty")
			}
			out = append(out, containersvc.VolumeMount{
				HostPath: m.Source, Destination: m.Target, ReadOnly: m.ReadOnly,
				CreateHostPath: m.BindOptions != nil && m.BindOptions.CreateMountpoint,
			})
			continue
		default:
			return nil, errs.New(errdefs.ErrInvalidArgument, "mounts of type %q are not supported: use a named volume or a bind mount", m.Type)
		}
		if o := m.VolumeOptions; o != nil {
			switch {
			case o.NoCopy:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume-nocopy is not supported: a new volume always takes the image's content")
			case o.Subpath != "":
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume subpaths are not supported")
			case len(o.Labels) > 0:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume labels in a mount are not supported: create the volume first")
			case o.DriverConfig != nil && o.DriverConfig.Name != "" && o.DriverConfig.Name != volumesvc.DriverLocal:
				return nil, errs.New(errdefs.ErrNotFound, "error looking up volume plugin %s: plugin %q not found (the local driver is the only one)", o.DriverConfig.Name, o.DriverConfig.Name)
			case o.DriverConfig != nil && len(o.DriverConfig.Options) > 0:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume driver options in a mount are not supported: create the volume first")
			}
		}
		out = append(out, containersvc.VolumeMount{Name: m.Source, Destination: m.Target, ReadOnly: m.ReadOnly})
	}
	return out, nil
}

// checkBindOptions refuses what a share into a VM cannot do: propagation
// other than private (no mount event crosses into the guest), and
// non-recursive binds or read-only modes (a share serves what is mounted
// below its directory, and read-only applies to all of it).
func checkBindOptions(o *mount.BindOptions) error {
	if o == nil {
		return nil
	}
	switch o.Propagation {
	case "", mount.PropagationPrivate, mount.PropagationRPrivate:
	default:
		return errs.New(errdefs.ErrInvalidArgument, "bind propagation %q is not supported: mount propagation does not cross into a VM", o.Propagation)
	}
	if o.NonRecursive || o.ReadOnlyNonRecursive {
		return errs.New(errdefs.ErrInvalidArgument, "non-recursive bind mounts are not supported: a shared directory includes what is mounted below it")
	}
	return nil
}

// mountPoints is a container's Mounts in inspect and ps.
func mountPoints(c *containersvc.Container) []container.MountPoint {
	out := []container.MountPoint{}
	for _, m := range c.Config.Mounts {
		mode := ""
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, container.MountPoint{
			Type: mount.TypeVolume, Name: m.Name, Source: m.Source, Destination: m.Destination,
			Driver: volumesvc.DriverLocal, Mode: mode, RW: !m.ReadOnly,
		})
	}
	for _, b := range c.Config.Binds {
		mode := ""
		if b.ReadOnly {
			mode = "ro"
		}
		out = append(out, container.MountPoint{
			Type: mount.TypeBind, Source: b.Source, Destination: b.Destination,
			Mode: mode, RW: !b.ReadOnly, Propagation: mount.PropagationRPrivate,
		})
	}
	return out
}
