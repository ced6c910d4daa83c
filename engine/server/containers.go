package server

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/storage"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/filters"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// unsupportedHostConfig rejects options that would otherwise be silently
// ignored: a container without what the user asked for is worse than a
// clear error. Binds and Mounts are checked by volumeMounts, the network
// options by createNetwork.
func unsupportedHostConfig(hc *container.HostConfig) error {
	no := func(format string, a ...any) error { return errs.New(errdefs.ErrInvalidArgument, format, a...) }
	switch {
	case len(hc.Links) > 0:
		return no("container links are not supported: put the containers on a user-defined network, where they find each other by name")
	case len(hc.VolumesFrom) > 0:
		return no("HostConfig.VolumesFrom (--volumes-from) is not supported: name the volumes with -v")
	case hc.PidMode != "" && hc.PidMode != "private":
		return no("HostConfig.PidMode %q (--pid) is not supported: a container has its own VM and PID namespace", hc.PidMode)
	case hc.UTSMode != "" && hc.UTSMode != "private":
		return no("HostConfig.UTSMode %q (--uts) is not supported: a container has its own VM and host name", hc.UTSMode)
	case hc.CPUShares != 0:
		return no("HostConfig.CpuShares (--cpu-shares) is not supported: a container has vCPUs of its own; use --cpus")
	case hc.CpusetCpus != "":
		return no("HostConfig.CpusetCpus (--cpuset-cpus) is not supported: a container has vCPUs of its own; use --cpus")
	case len(hc.DeviceCgroupRules) > 0:
		return no("HostConfig.DeviceCgroupRules (--device-cgroup-rule) is not supported")
	case len(hc.Devices) > 0:
		return no("HostConfig.Devices (--device) is not supported: the host's devices do not reach a container's VM")
	case len(hc.DeviceRequests) > 0:
		return no("HostConfig.DeviceRequests (--gpus) is not supported: the host's devices do not reach a container's VM")
	case hc.OomKillDisable != nil && *hc.OomKillDisable:
		return no("HostConfig.OomKillDisable (--oom-kill-disable) is not supported: a container's memory is its VM's")
	case hc.IpcMode != "" && hc.IpcMode != "private" && hc.IpcMode != "shareable":
		return no("HostConfig.IpcMode %q (--ipc) is not supported: a container has its own VM and IPC namespace", hc.IpcMode)
	case hc.UsernsMode != "":
		return no("HostConfig.UsernsMode %q (--userns) is not supported", hc.UsernsMode)
	case hc.CgroupnsMode != "" && hc.CgroupnsMode != "private":
		return no("HostConfig.CgroupnsMode %q (--cgroupns) is not supported: a container has its own VM", hc.CgroupnsMode)
	case hc.Isolation != "" && hc.Isolation != "default":
		return no("HostConfig.Isolation %q (--isolation) is not supported: every container is isolated by a VM of its own", hc.Isolation)
	}
	switch hc.LogConfig.Type {
	case "", logDriver, "local":
		// The daemon's own log, which docker logs reads.
	default:
		return no("log driver %q is not supported: containers log to the daemon's own log (%s), which docker logs reads", hc.LogConfig.Type, logDriver)
	}
	return nil
}

// logDriver is the log driver inspect shows: the daemon keeps each
// container's output in its own log, which docker logs reads as it reads
// dockerd's default json-file driver, so clients that read logs only from
// such a driver (docker-py's containers.run) do.
const logDriver = "json-file"

// healthcheck is a create's Config.Healthcheck as the service takes it.
func healthcheck(h *container.HealthConfig) *containersvc.Healthcheck {
	if h == nil {
		return nil
	}
	return &containersvc.Healthcheck{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
}

// setEnv keeps the Env entries that set a variable: one without "=" (the
// docker CLI's -e NAME, for a NAME its own environment lacks) sets
// nothing, as dockerd documents.
func setEnv(env []string) []string {
	var out []string
	for _, e := range env {
		if strings.Contains(e, "=") {
			out = append(out, e)
		}
	}
	return out
}

// Runtimes are the hypervisors a container can ask for with
// HostConfig.Runtime (docker run --runtime): "auto" picks the native VMM
// where /dev/kvm runs full guests and QEMU otherwise, "kvm" insists on the
// native VMM and "qemu" on QEMU. An empty Runtime is DefaultRuntime, as
// with dockerd.
var Runtimes = []string{"auto", "kvm", "qemu"}

// DefaultRuntime is the runtime of a create that names none.
const DefaultRuntime = "auto"

// runtimeHypervisor checks a create's HostConfig.Runtime.
func runtimeHypervisor(name string) (string, error) {
	if name == "" {
		return DefaultRuntime, nil
	}
	if !slices.Contains(Runtimes, name) {
		return "", errs.New(errdefs.ErrInvalidArgument, "unknown or invalid runtime name: %s (want one of %s)", name, strings.Join(Runtimes, ", "))
	}
	return name, nil
}

// runtimeName is the runtime inspect shows: the hypervisor the create
// chose for the runtime it asked for ("auto" becomes kvm or qemu), which
// every start uses, as docker shows the runtime a container runs on. A
// record of an earlier version that has not started since holds the
// request itself.
func runtimeName(hypervisor string) string {
	if hypervisor == "" {
		return DefaultRuntime
	}
	return hypervisor
}

func (s *Server) containerCreate(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if req.Config == nil {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "config cannot be empty in order to create a container"))
		return
	}
	cfg := req.Config
	if cfg.Image == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "no image given: Config.Image is required"))
		return
	}
	hc := &container.HostConfig{}
	if req.HostConfig != nil {
		hc = &req.HostConfig.HostConfig
	}
	if err := unsupportedHostConfig(hc); err != nil {
		writeError(w, err)
		return
	}
	hypervisor, err := runtimeHypervisor(hc.Runtime)
	if err != nil {
		writeError(w, err)
		return
	}
	vols, err := volumeMounts(hc)
	if err != nil {
		writeError(w, err)
		return
	}
	// docker run -v /path asks for an anonymous volume in Config.Volumes.
	vols = containersvc.WithAnonymousVolumes(vols, slices.Sorted(maps.Keys(cfg.Volumes)))
	o := containersvc.CreateOptions{
		Image: cfg.Image, Name: strings.TrimPrefix(r.URL.Query().Get("name"), "/"),
		Cmd: cfg.Cmd, Entrypoint: cfg.Entrypoint, Env: setEnv(cfg.Env), WorkingDir: cfg.WorkingDir,
		User: cfg.User, Hostname: cfg.Hostname, Domainname: cfg.Domainname, Tty: cfg.Tty, OpenStdin: cfg.OpenStdin,
		StdinOnce: cfg.StdinOnce, StopSignal: cfg.StopSignal, MemoryBytes: hc.Memory,
		NanoCPUs: hc.NanoCPUs, AutoRemove: hc.AutoRemove, Volumes: vols, Labels: cfg.Labels,
		Hypervisor: hypervisor, LogOptions: hc.LogConfig.Config, Init: hc.Init != nil && *hc.Init, StopTimeout: cfg.StopTimeout, GroupAdd: hc.GroupAdd, Healthcheck: healthcheck(cfg.Healthcheck),
		RestartPolicy: containersvc.RestartPolicy{Name: string(hc.RestartPolicy.Name), MaximumRetryCount: hc.RestartPolicy.MaximumRetryCount},
	}
	if cfg.Tty && hc.ConsoleSize[0] > 0 && hc.ConsoleSize[1] > 0 {
		o.ConsoleRows, o.ConsoleCols = clampU16(hc.ConsoleSize[0]), clampU16(hc.ConsoleSize[1])
	}
	if o.Security, err = securityOptions(hc); err != nil {
		writeError(w, err)
		return
	}
	if err := s.createNetwork(r.Context(), &req, hc, !apiAtLeast(r, 44), &o); err != nil {
		writeError(w, err)
		return
	}
	c, err := s.containers.Create(r.Context(), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, container.CreateResponse{ID: c.ID, Warnings: []string{}})
}

// securityOptions reads the confinement and limit options of a create.
func securityOptions(hc *container.HostConfig) (containersvc.Security, error) {
	opts, err := containersvc.ParseSecurityOpt(hc.SecurityOpt)
	if err != nil {
		return containersvc.Security{}, err
	}
	sec := containersvc.Security{
		CapAdd: hc.CapAdd, CapDrop: hc.CapDrop, SecurityOpt: hc.SecurityOpt, NoNewPrivileges: opts.NoNewPrivileges, Privileged: hc.Privileged,
		ReadOnlyRootfs: hc.ReadonlyRootfs, Sysctls: hc.Sysctls, Tmpfs: hc.Tmpfs, OOMScoreAdj: hc.OomScoreAdj,
	}
	if hc.PidsLimit != nil {
		sec.PidsLimit = *hc.PidsLimit
	}
	for _, u := range hc.Ulimits {
		if u != nil {
			sec.Ulimits = append(sec.Ulimits, containersvc.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard})
		}
	}
	return sec, nil
}

// securityHostConfig puts a container's confinement options into its
// inspect HostConfig, as docker shows them.
func securityHostConfig(hc *container.HostConfig, sec containersvc.Security) {
	hc.CapAdd, hc.CapDrop, hc.SecurityOpt, hc.Privileged = sec.CapAdd, sec.CapDrop, sec.SecurityOpt, sec.Privileged
	hc.ReadonlyRootfs, hc.Sysctls, hc.Tmpfs, hc.OomScoreAdj = sec.ReadOnlyRootfs, sec.Sysctls, sec.Tmpfs, sec.OOMScoreAdj
	if sec.PidsLimit != 0 {
		limit := sec.PidsLimit
		hc.PidsLimit = &limit
	}
	for _, u := range sec.Ulimits {
		hc.Ulimits = append(hc.Ulimits, &container.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard})
	}
}

// logConfig is a container's log options as inspect shows them.
func logConfig(opts map[string]string) map[string]string {
	if opts == nil {
		return map[string]string{}
	}
	return opts
}

// restartPolicy is a policy as inspect shows it: "no" when none was given.
func restartPolicy(p containersvc.RestartPolicy) container.RestartPolicy {
	if p.Name == "" {
		p.Name = "no"
	}
	return container.RestartPolicy{Name: container.RestartPolicyMode(p.Name), MaximumRetryCount: p.MaximumRetryCount}
}

func clampU16(v uint) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

// stateName is the State of inspect and of docker ps's list: "paused" for
// a running container whose VM is frozen.
func stateName(c *containersvc.Container) container.ContainerState {
	if c.State.Status == containersvc.StatusRunning && c.State.Paused {
		return container.StatePaused
	}
	return container.ContainerState(c.State.Status)
}

// statusText is docker ps's STATUS column.
func statusText(c *containersvc.Container, now time.Time) string {
	switch c.State.Status {
	case containersvc.StatusRunning:
		if c.State.Paused {
			return "Up " + units.HumanDuration(now.Sub(c.State.StartedAt)) + " (Paused)"
		}
		return "Up " + units.HumanDuration(now.Sub(c.State.StartedAt)) + containersvc.HealthSuffix(c.State.Health)
	case containersvc.StatusExited:
		return fmt.Sprintf("Exited (%d) %s ago", c.State.ExitCode, units.HumanDuration(now.Sub(c.State.FinishedAt)))
	}
	return "Created"
}

// containerList is GET /containers/json: docker ps, with its filters
// (id, name, status, exited, label, ancestor, before, since, volume) and
// limit. An unknown filter is a 400 "invalid filter 'x'", as from dockerd.
func (s *Server) containerList(w http.ResponseWriter, r *http.Request) {
	flags, err := boolParams(r, "all", "size")
	if err != nil {
		writeError(w, err)
		return
	}
	opts := containersvc.ListOptions{All: flags[0]}
	if v := r.URL.Query().Get("limit"); v != "" {
		if opts.Limit, err = strconv.Atoi(v); err != nil {
			writeError(w, errs.New(errdefs.ErrInvalidArgument, "invalid limit %q: want a number", v))
			return
		}
	}
	if opts.Filters, err = filterTerms(r); err != nil {
		writeError(w, err)
		return
	}
	if s.networks != nil {
		// --filter network=NAME|ID: the networks each container is on.
		opts.Networks = func(c *containersvc.Container) []string {
			cn, err := s.containerNetwork(r.Context(), c)
			if err != nil {
				return nil
			}
			var refs []string
			for id, n := range cn.networks {
				refs = append(refs, id, n.Name)
			}
			return refs
		}
	}
	list, err := s.containers.Select(opts)
	if err != nil {
		writeError(w, err)
		return
	}
	now := time.Now()
	var sizes map[string]int64
	if flags[1] {
		// docker ps -s: the writable layer's size, and with the image's.
		if sizes, err = s.imageSizes(r.Context()); err != nil {
			writeError(w, err)
			return
		}
	}
	out := []containerSummary{}
	for _, c := range list {
		sum, err := s.containerSummaryOf(r.Context(), c, now, sizes)
		if err != nil {
			writeError(w, err)
			return
		}
		out = append(out, sum)
	}
	writeJSON(w, http.StatusOK, out)
}

// containerSummaryOf is c as GET /containers/json lists it; with
// imageSizes (by image ID), with its sizes (docker ps -s).
func (s *Server) containerSummaryOf(ctx context.Context, c *containersvc.Container, now time.Time, imageSizes map[string]int64) (containerSummary, error) {
	cn, err := s.containerNetwork(ctx, c)
	if err != nil {
		return containerSummary{}, err
	}
	sum := containerSummary{
		Summary: container.Summary{
			ID: c.ID, Names: []string{"/" + c.Name}, Image: c.Config.Image, ImageID: c.Config.ImageID,
			Command: strings.Join(c.Config.Args, " "), Created: c.Created.Unix(),
			Labels: labelsOrEmpty(c.Config.Labels),
			State:  stateName(c), Status: statusText(c, now),
			Mounts: mountPoints(c),
		},
		Ports:           cn.portsJSON(c),
		NetworkSettings: &summaryNetworkSettings{Networks: cn.endpointsJSON(c)},
	}
	sum.HostConfig.NetworkMode = c.Config.NetworkMode()
	if imageSizes != nil {
		sum.SizeRw = s.containers.WritableSize(c.ID)
		sum.SizeRootFs = sum.SizeRw + imageSizes[c.Config.ImageID]
	}
	return sum, nil
}

// imageSizes maps each image ID to its size.
func (s *Server) imageSizes(ctx context.Context) (map[string]int64, error) {
	list, err := s.images.List(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, img := range list {
		out[img.ID] = img.Size
	}
	return out, nil
}

// containerSummary is an entry of GET /containers/json with the network
// fields in API 1.41's shape (see container_network.go).
type containerSummary struct {
	container.Summary
	Ports           []portSummary
	NetworkSettings *summaryNetworkSettings
}

type summaryNetworkSettings struct {
	Networks map[string]*endpointSettings
}

// inspectResponse is GET /containers/{id}/json with the network fields in
// API 1.41's shape: Config.MacAddress and the NetworkSettings of 1.41.
type inspectResponse struct {
	container.InspectResponse
	Config          *inspectConfig
	NetworkSettings *networkSettings
}

type inspectConfig struct {
	container.Config
	MacAddress string `json:",omitempty"`
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00Z"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (s *Server) containerInspect(w http.ResponseWriter, r *http.Request) {
	c, err := s.containers.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	cn, err := s.containerNetwork(r.Context(), c)
	if err != nil {
		writeError(w, err)
		return
	}
	cfg := c.Config
	resp := container.InspectResponse{
		ID: c.ID, Created: timeString(c.Created), Name: "/" + c.Name, Image: cfg.ImageID,
		Driver: "vmctl-disk", Platform: "linux",
		State: &container.State{
			Status: stateName(c), Running: c.State.Status == containersvc.StatusRunning, Paused: c.State.Paused,
			OOMKilled: c.State.OOMKilled, Pid: c.State.VMMPid, ExitCode: c.State.ExitCode, Error: c.State.Error,
			StartedAt: timeString(c.State.StartedAt), FinishedAt: timeString(c.State.FinishedAt),
		},
		HostConfig: &container.HostConfig{AutoRemove: cfg.AutoRemove, Runtime: runtimeName(cfg.Hypervisor),
			LogConfig:     container.LogConfig{Type: logDriver, Config: logConfig(cfg.LogOptions)},
			RestartPolicy: restartPolicy(cfg.RestartPolicy)},
		Mounts:       mountPoints(c),
		RestartCount: c.State.RestartCount,
	}
	if s.containers.Restarting(c.ID) {
		resp.State.Status, resp.State.Restarting = container.StateRestarting, true
	}
	if disks := cfg.Disks(); len(disks) > 0 {
		// The image's read-only disks, top first, where overlay2 names
		// its lower directories.
		resp.GraphDriver = &storage.DriverData{Name: resp.Driver, Data: map[string]string{"LowerDir": strings.Join(disks, ":")}}
	}
	securityHostConfig(resp.HostConfig, cfg.Security)
	resp.HostConfig.GroupAdd = cfg.GroupAdd
	if h := c.State.Health; h != nil {
		resp.State.Health = &container.Health{Status: container.HealthStatus(h.Status), FailingStreak: h.FailingStreak}
		for _, p := range h.Log {
			resp.State.Health.Log = append(resp.State.Health.Log, &container.HealthcheckResult{Start: p.Start, End: p.End, ExitCode: p.ExitCode, Output: p.Output})
		}
	}
	if cfg.Init {
		init := true
		resp.HostConfig.Init = &init
	}
	resp.HostConfig.Memory = cfg.MemoryBytes
	resp.HostConfig.NanoCPUs = cfg.NanoCPUs
	hostConfigNetwork(resp.HostConfig, c)
	if len(cfg.Args) > 0 {
		resp.Path, resp.Args = cfg.Args[0], cfg.Args[1:]
	}
	conf := &inspectConfig{Config: container.Config{
		Hostname: cfg.Hostname, Domainname: cfg.Domainname, User: cfg.User, Tty: cfg.Tty, OpenStdin: cfg.OpenStdin,
		StdinOnce: cfg.StdinOnce, Env: cfg.Env, Cmd: cfg.Args, Image: cfg.Image,
		WorkingDir: cfg.WorkingDir, StopSignal: cfg.StopSignal, StopTimeout: cfg.StopTimeout, Labels: labelsOrEmpty(cfg.Labels),
	}}
	if nc := cfg.Network; nc != nil {
		conf.MacAddress = nc.MacAddress
		for _, p := range nc.ExposedPorts {
			if port, ok := network.PortFrom(p.Port, network.IPProtocol(p.Proto)); ok {
				if conf.ExposedPorts == nil {
					conf.ExposedPorts = network.PortSet{}
				}
				conf.ExposedPorts[port] = struct{}{}
			}
		}
	}
	writeJSON(w, http.StatusOK, inspectResponse{InspectResponse: resp, Config: conf, NetworkSettings: cn.settingsJSON(c)})
}

func (s *Server) containerStart(w http.ResponseWriter, r *http.Request) {
	c, err := s.containers.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if c.State.Status == containersvc.StatusRunning {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if err := s.containers.Start(r.Context(), c.ID, containersvc.Stdio{}); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// stopTimeout reads ?t= (seconds; negative waits forever).
func stopTimeout(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("t")
	if v == "" {
		v = r.URL.Query().Get("timeout")
	}
	if v == "" {
		return containersvc.ContainerStopTimeout, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errs.New(errdefs.ErrInvalidArgument, "invalid stop timeout %q: want seconds", v)
	}
	if n < 0 {
		return -1, nil
	}
	return time.Duration(n) * time.Second, nil
}

func (s *Server) containerStop(w http.ResponseWriter, r *http.Request) {
	timeout, err := stopTimeout(r)
	if err == nil && r.URL.Query().Get("signal") != "" {
		err = errs.New(errdefs.ErrInvalidArgument, "stop with a signal is not supported: set StopSignal at create")
	}
	if err == nil {
		err = s.containers.Stop(r.Context(), r.PathValue("id"), timeout)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerRestart(w http.ResponseWriter, r *http.Request) {
	timeout, err := stopTimeout(r)
	if err == nil {
		err = s.containers.Restart(r.Context(), r.PathValue("id"), timeout)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerKill(w http.ResponseWriter, r *http.Request) {
	sig := syscall.SIGKILL
	if v := r.URL.Query().Get("signal"); v != "" {
		parsed, err := containersvc.ParseSignal(v)
		if err != nil {
			writeError(w, err)
			return
		}
		sig = parsed
	}
	if err := s.containers.Kill(r.Context(), r.PathValue("id"), sig); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// containerPause is POST /containers/{id}/pause (docker pause).
func (s *Server) containerPause(w http.ResponseWriter, r *http.Request) {
	if err := s.containers.Pause(r.Context(), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// containerUnpause is POST /containers/{id}/unpause (docker unpause).
func (s *Server) containerUnpause(w http.ResponseWriter, r *http.Request) {
	if err := s.containers.Unpause(r.Context(), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// containerPrune is POST /containers/prune: docker container prune, with
// dockerd's filters until (a time or a duration before now) and label,
// label! (KEY or KEY=VALUE).
func (s *Server) containerPrune(w http.ResponseWriter, r *http.Request) {
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	match, err := pruneFilter(terms, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	deleted, freed, err := s.containers.Prune(r.Context(), func(c *containersvc.Container) bool { return match(c.Created, c.Config.Labels) })
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, container.PruneReport{ContainersDeleted: append([]string{}, deleted...), SpaceReclaimed: freed})
}

// pruneFilter reads the filters of the prune endpoints: until (a time,
// or a duration before now) and label / label! (KEY or KEY=VALUE), each
// label term required (or refused) in full.
func pruneFilter(terms map[string][]string, now time.Time) (func(created time.Time, labels map[string]string) bool, error) {
	var until time.Time
	for k, v := range terms {
		switch k {
		case "until":
			if len(v) != 1 {
				return nil, errs.New(errdefs.ErrInvalidArgument, "more than one until filter specified")
			}
			if d, err := time.ParseDuration(v[0]); err == nil {
				until = now.Add(-d)
				continue
			}
			t, err := parseTimestamp("until", v[0])
			if err != nil {
				return nil, err
			}
			until = t
		case "label", "label!":
		default:
			return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k)
		}
	}
	return func(created time.Time, labels map[string]string) bool {
		if !until.IsZero() && !created.Before(until) {
			return false
		}
		for _, term := range terms["label"] {
			if !filters.HasLabel(labels, term) {
				return false
			}
		}
		for _, term := range terms["label!"] {
			if filters.HasLabel(labels, term) {
				return false
			}
		}
		return true
	}, nil
}

// containerUpdate is POST /containers/{id}/update (docker update): the
// restart policy, and memory and CPUs of a stopped container; any other
// resource is refused by name.
func (s *Server) containerUpdate(w http.ResponseWriter, r *http.Request) {
	var req container.UpdateConfig
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	res := reflect.ValueOf(req.Resources)
	for i := 0; i < res.NumField(); i++ {
		f, name := res.Field(i), res.Type().Field(i).Name
		if name == "Memory" || name == "NanoCPUs" {
			continue
		}
		// The docker CLI sends empty lists and nulls for flags not given.
		empty := f.IsZero() || ((f.Kind() == reflect.Slice || f.Kind() == reflect.Map) && f.Len() == 0)
		if !empty {
			writeError(w, errs.New(errdefs.ErrInvalidArgument, "docker update of %s is not supported: only --memory, --cpus and --restart", name))
			return
		}
	}
	o := containersvc.UpdateOptions{MemoryBytes: req.Memory, NanoCPUs: req.NanoCPUs}
	if req.RestartPolicy.Name != "" {
		o.RestartPolicy = &containersvc.RestartPolicy{Name: string(req.RestartPolicy.Name), MaximumRetryCount: req.RestartPolicy.MaximumRetryCount}
	}
	if err := s.containers.Update(r.Context(), r.PathValue("id"), o); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, container.UpdateResponse{Warnings: []string{}})
}

// containerRename is POST /containers/{id}/rename?name=NEW.
func (s *Server) containerRename(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "no new name given: ?name= is required"))
		return
	}
	if err := s.containers.Rename(r.Context(), r.PathValue("id"), name); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) containerResize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h, err1 := strconv.ParseUint(q.Get("h"), 10, 16)
	wd, err2 := strconv.ParseUint(q.Get("w"), 10, 16)
	if err1 != nil || err2 != nil {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "invalid terminal size h=%q w=%q: want numbers up to 65535", q.Get("h"), q.Get("w")))
		return
	}
	if err := s.containers.Resize(r.Context(), r.PathValue("id"), uint16(h), uint16(wd)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) containerDelete(w http.ResponseWriter, r *http.Request) {
	flags, err := boolParams(r, "force", "v", "link")
	if err != nil {
		writeError(w, err)
		return
	}
	if flags[2] {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "container links are not supported"))
		return
	}
	if err := s.containers.Remove(r.Context(), r.PathValue("id"), containersvc.RemoveOptions{Force: flags[0], Volumes: flags[1]}); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// containerDeleteLink answers DELETE /containers/PARENT/NAME?link=1
// (docker rm --link): links do not exist here.
func (s *Server) containerDeleteLink(w http.ResponseWriter, r *http.Request) {
	if _, err := boolParams(r, "force", "v", "link"); err != nil {
		writeError(w, err)
		return
	}
	if r.URL.Query().Get("link") != "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "container links are not supported: there is no link %s to remove", "/"+r.PathValue("link")))
		return
	}
	writeError(w, errs.New(errdefs.ErrNotFound, "No such container: %s", r.PathValue("link")))
}

// containerWait registers the waiter, sends the headers at once (docker run
// waits for them before it starts the container), and writes the status
// when the condition holds.
func (s *Server) containerWait(w http.ResponseWriter, r *http.Request) {
	cond, err := containersvc.ParseWaitCondition(r.URL.Query().Get("condition"))
	if err != nil {
		writeError(w, err)
		return
	}
	wait, err := s.containers.PrepareWait(r.PathValue("id"), cond)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	st, err := wait(r.Context())
	resp := container.WaitResponse{StatusCode: int64(st.Code)}
	if err != nil {
		resp.Error = &container.WaitExitError{Message: err.Error()}
	} else if st.Error != "" {
		resp.Error = &container.WaitExitError{Message: st.Error}
	}
	writeJSONBody(w, resp)
}
