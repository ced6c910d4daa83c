package server

import (
	"context"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/system"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/containers"
)

func withAPIVersion(ctx context.Context, v string) context.Context {
	return context.WithValue(ctx, apiVersionKey{}, v)
}

// apiAtLeast reports whether the request's API version is at least minor
// (1.minor).
func apiAtLeast(r *http.Request, minor int) bool {
	v, _ := r.Context().Value(apiVersionKey{}).(string)
	_, m, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	n, err := strconv.Atoi(m)
	return err == nil && n >= minor
}

// ping answers the version negotiation: clients read the headers.
func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Builder-Version", "1")
	h.Set("Swarm", "inactive")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("OK"))
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, system.VersionResponse{
		Platform:   system.PlatformInfo{Name: "vmctl"},
		Version:    engine.Version,
		APIVersion: APIVersion, MinAPIVersion: MinAPIVersion,
		Os: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(),
		KernelVersion: kernelRelease(),
		Components: []system.ComponentVersion{{
			Name: "Engine", Version: engine.Version,
			Details: map[string]string{"ApiVersion": APIVersion, "MinAPIVersion": MinAPIVersion, "Os": runtime.GOOS, "Arch": runtime.GOARCH},
		}},
	})
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	list, err := s.eng.Containers.List()
	if err != nil {
		writeError(w, err)
		return
	}
	imgs, err := s.eng.ListImages(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	info := system.Info{
		ID: "vmctld", Containers: len(list), Images: len(imgs),
		Driver: "vmctl-disk", LoggingDriver: "vmctl-local", CgroupVersion: "2",
		KernelVersion: kernelRelease(), OperatingSystem: "vmctl (a VM per container)",
		OSType: runtime.GOOS, Architecture: runtime.GOARCH, NCPU: runtime.NumCPU(),
		ServerVersion: engine.Version, DefaultRuntime: DefaultRuntime,
		DockerRootDir: s.eng.DataRoot(), SystemTime: time.Now().Format(time.RFC3339Nano),
		IndexServerAddress: "https://index.docker.io/v1/",
	}
	for _, c := range list {
		if c.State.Status == containers.StatusRunning {
			info.ContainersRunning++
		} else {
			info.ContainersStopped++
		}
	}
	if name, err := os.Hostname(); err == nil {
		info.Name = name
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		info.MemTotal = int64(si.Totalram) * int64(si.Unit)
	}
	info.Runtimes = map[string]system.RuntimeWithStatus{}
	for _, name := range Runtimes {
		info.Runtimes[name] = system.RuntimeWithStatus{}
	}
	cfg := s.eng.Config()
	hi := engine.HostInfo(cfg)
	// What `auto` picks here and why, then the facts behind it, in the
	// order vmctl info prints them.
	if hi.Hypervisor != "" {
		info.DriverStatus = [][2]string{{"Hypervisor", hi.Hypervisor}, {"Acceleration", hi.Accel}, {"Reason", hi.Reason}}
	} else {
		info.Warnings = append(info.Warnings, "no hypervisor: "+hi.Reason)
	}
	info.DriverStatus = append(info.DriverStatus, [2]string{"KVM", hi.KVM})
	if hi.QEMU != "" {
		info.DriverStatus = append(info.DriverStatus, [2]string{"QEMU", hi.QEMU})
	}
	info.DriverStatus = append(info.DriverStatus,
		[2]string{"Guest kernel", hi.Kernel}, [2]string{"Guest image", hi.Initrd}, [2]string{"Exec root", cfg.ExecRoot})
	writeJSON(w, http.StatusOK, info)
}
