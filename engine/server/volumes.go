package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/volume"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/volumes"
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
func volumeJSON(v *volumes.Volume) volume.Volume {
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

// volumeFilters is the ?filters= of GET /volumes: name (substring),
// dangling (no container references the volume) and label (key or
// key=value). Docker sends either {"k":["v"]} or {"k":{"v":true}}.
type volumeFilters map[string][]string

// decodeFilters reads a ?filters= value in either of docker's forms.
func decodeFilters(raw string) (volumeFilters, error) {
	terms, err := decodeFilterTerms(raw)
	return volumeFilters(terms), err
}

func checkBoolFilter(name string, vs []string) error {
	for _, v := range vs {
		if v != "true" && v != "false" && v != "1" && v != "0" {
			return errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s=%s': want true or false", name, v)
		}
	}
	return nil
}

func parseVolumeFilters(raw string) (volumeFilters, error) {
	out, err := decodeFilters(raw)
	if err != nil {
		return nil, err
	}
	for k, vs := range out {
		switch k {
		case "name", "label":
		case "dangling":
			if err := checkBoolFilter(k, vs); err != nil {
				return nil, err
			}
		default:
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k)
		}
	}
	return out, nil
}

func (f volumeFilters) match(v *volumes.Volume, refs int) bool {
	if names := f["name"]; len(names) > 0 && !anyOf(names, func(n string) bool { return strings.Contains(v.Name, n) }) {
		return false
	}
	for _, d := range f["dangling"] {
		if (d == "true" || d == "1") != (refs == 0) {
			return false
		}
	}
	for _, l := range f["label"] {
		if !hasLabel(v, l) {
			return false
		}
	}
	return true
}

// hasLabel matches a label filter: "key" or "key=value".
func hasLabel(v *volumes.Volume, filter string) bool {
	k, want, hasValue := strings.Cut(filter, "=")
	got, ok := v.Labels[k]
	return ok && (!hasValue || got == want)
}

func anyOf(xs []string, pred func(string) bool) bool {
	for _, x := range xs {
		if pred(x) {
			return true
		}
	}
	return false
}

func (s *Server) volumeList(w http.ResponseWriter, r *http.Request) {
	f, err := parseVolumeFilters(r.URL.Query().Get("filters"))
	if err != nil {
		writeError(w, err)
		return
	}
	list, err := s.eng.Volumes.List()
	if err != nil {
		writeError(w, err)
		return
	}
	refs, err := s.eng.Volumes.RefCount()
	if err != nil {
		writeError(w, err)
		return
	}
	resp := volume.ListResponse{Volumes: []volume.Volume{}, Warnings: []string{}}
	for _, v := range list {
		if f.match(v, refs[v.Name]) {
			resp.Volumes = append(resp.Volumes, volumeJSON(v))
		}
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
	o := volumes.CreateOptions{Name: req.Name, Driver: req.Driver, DriverOpts: req.DriverOpts, Labels: req.Labels}
	if o.Name == "" {
		// docker volume create without a name: a generated one.
		o.Name = containersvc.NewVolumeName()
	}
	v, err := s.eng.Volumes.Create(r.Context(), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, volumeJSON(v))
}

func (s *Server) volumeInspect(w http.ResponseWriter, r *http.Request) {
	v, err := s.eng.Volumes.Get(r.PathValue("name"))
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
	if err := s.eng.Volumes.Remove(r.Context(), r.PathValue("name"), force); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// volumePrune removes unused volumes: all of them before API 1.42 (or with
// the all filter), only anonymous ones from 1.42 on, as dockerd does; label
// and label! narrow the choice.
func (s *Server) volumePrune(w http.ResponseWriter, r *http.Request) {
	f, err := decodeFilters(r.URL.Query().Get("filters"))
	if err == nil {
		for k, vs := range f {
			switch k {
			case "label", "label!":
			case "all":
				err = checkBoolFilter(k, vs)
			default:
				err = errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k)
			}
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	all := !apiAtLeast(r, 42)
	for _, v := range f["all"] {
		all = v == "true" || v == "1"
	}
	keep := func(v *volumes.Volume) bool {
		if !all && !v.Anonymous {
			return true
		}
		for _, l := range f["label"] {
			if !hasLabel(v, l) {
				return true
			}
		}
		for _, l := range f["label!"] {
			if hasLabel(v, l) {
				return true
			}
		}
		return false
	}
	removed, freed, err := s.eng.Volumes.Prune(r.Context(), keep)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, volume.PruneReport{VolumesDeleted: removed, SpaceReclaimed: freed})
}

// volumeMounts turns HostConfig.Binds and HostConfig.Mounts into the
// container's volumes. Only volumes can reach a VM: host paths, tmpfs and
// the like are refused with one line rather than ignored.
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
			return nil, containersvc.ErrHostBind
		default:
			return nil, errs.New(errdefs.ErrInvalidArgument, "mounts of type %q are not supported: use a named volume", m.Type)
		}
		if o := m.VolumeOptions; o != nil {
			switch {
			case o.NoCopy:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume-nocopy is not supported: a new volume always takes the image's content")
			case o.Subpath != "":
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume subpaths are not supported")
			case len(o.Labels) > 0:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume labels in a mount are not supported: create the volume first")
			case o.DriverConfig != nil && o.DriverConfig.Name != "" && o.DriverConfig.Name != volumes.DriverLocal:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume driver %q is not supported: only local is", o.DriverConfig.Name)
			case o.DriverConfig != nil && len(o.DriverConfig.Options) > 0:
				return nil, errs.New(errdefs.ErrInvalidArgument, "volume driver options in a mount are not supported: create the volume first")
			}
		}
		out = append(out, containersvc.VolumeMount{Name: m.Source, Destination: m.Target, ReadOnly: m.ReadOnly})
	}
	return out, nil
}

// mountPoints is a container's Mounts in inspect and ps.
func mountPoints(c *containers.Container) []container.MountPoint {
	out := []container.MountPoint{}
	for _, m := range c.Config.Mounts {
		mode := ""
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, container.MountPoint{
			Type: mount.TypeVolume, Name: m.Name, Source: m.Source, Destination: m.Destination,
			Driver: volumes.DriverLocal, Mode: mode, RW: !m.ReadOnly,
		})
	}
	return out
}
