package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/system"
	"github.com/vmctl/vmctl/engine/services/containersvc"
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

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	v := s.system.Version()
	writeJSON(w, http.StatusOK, system.VersionResponse{
		Platform:   system.PlatformInfo{Name: "vmctl"},
		Version:    v.Version,
		APIVersion: APIVersion, MinAPIVersion: MinAPIVersion,
		Os: v.OS, Arch: v.Arch, GoVersion: v.GoVersion,
		KernelVersion: v.KernelVersion,
		Components: []system.ComponentVersion{{
			Name: "Engine", Version: v.Version,
			Details: map[string]string{"ApiVersion": APIVersion, "MinAPIVersion": MinAPIVersion, "Os": v.OS, "Arch": v.Arch},
		}},
	})
}

// The keys of /info's DriverStatus that say how this host runs VMs, for
// the clients that read them (vmctl info and vmctl check). dockerd keeps
// its storage driver's facts there; vmctl has none worth a line.
const (
	InfoHypervisor = "Hypervisor"   // the driver auto picks, where one can run
	InfoAccel      = "Acceleration" // its accelerator: kvm or tcg
	InfoReason     = "Reason"       // why auto picks it
	// InfoOuter names the hypervisor this host runs under, or none.
	InfoOuter = "Outer hypervisor"
	// InfoVirtualization says whether VT-x/AMD-V reaches this host.
	InfoVirtualization = "Virtualization"
	InfoKVM            = "KVM"  // what /dev/kvm can do
	InfoQEMU           = "QEMU" // the QEMU binary and its accelerators, or why there is none
	// InfoFastPath is the setting that would let auto pick the native
	// VMM, where it does not.
	InfoFastPath = "Fast path"
	// InfoSnapshots says whether runs start from saved VM states, and
	// where they are.
	InfoSnapshots = "Snapshots"
)

// ColdBootLabel set to "true" on a container makes its VM boot on every
// start instead of starting from a saved VM.
const ColdBootLabel = containersvc.ColdBootLabel

// NoHypervisorWarning starts /info's warning on a host where no
// hypervisor can run (then DriverStatus has no InfoHypervisor); the
// reason follows.
const NoHypervisorWarning = "no hypervisor: "

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	si, err := s.system.Info(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	info := system.Info{
		ID: "vmctld", Name: si.Hostname, Containers: si.Containers, ContainersRunning: si.Running,
		ContainersStopped: si.Stopped, Images: si.Images,
		Driver: "vmctl-disk", LoggingDriver: "vmctl-local", CgroupVersion: "2",
		KernelVersion: si.KernelVersion, OperatingSystem: "vmctl (a VM per container)",
		OSType: si.OS, Architecture: si.Arch, NCPU: si.NCPU, MemTotal: si.MemTotal,
		ServerVersion: si.Version.Version, DefaultRuntime: DefaultRuntime,
		DockerRootDir: si.DataRoot, SystemTime: time.Now().Format(time.RFC3339Nano),
		IndexServerAddress: "https://index.docker.io/v1/",
	}
	info.Runtimes = map[string]system.RuntimeWithStatus{}
	for _, name := range Runtimes {
		info.Runtimes[name] = system.RuntimeWithStatus{}
	}
	hi := si.Host
	// What `auto` picks here and why, then the facts behind it, in the
	// order vmctl info prints them.
	if hi.Hypervisor != "" {
		info.DriverStatus = [][2]string{{InfoHypervisor, hi.Hypervisor}, {InfoAccel, hi.Accel}, {InfoReason, hi.Reason}}
	} else {
		info.Warnings = append(info.Warnings, NoHypervisorWarning+hi.Reason)
	}
	info.Warnings = append(info.Warnings, si.Warnings...)
	for _, kv := range [][2]string{
		{InfoOuter, hi.Outer}, {InfoVirtualization, hi.Virtualization}, {InfoKVM, hi.KVM},
		{InfoQEMU, hi.QEMU}, {InfoFastPath, hi.FastPath},
	} {
		if kv[1] != "" || kv[0] == InfoKVM {
			info.DriverStatus = append(info.DriverStatus, kv)
		}
	}
	info.DriverStatus = append(info.DriverStatus,
		[2]string{"Guest kernel", hi.Kernel}, [2]string{"Guest image", hi.Initrd}, [2]string{"Exec root", si.ExecRoot},
		[2]string{InfoSnapshots, si.Snapshots})
	writeJSON(w, http.StatusOK, info)
}
