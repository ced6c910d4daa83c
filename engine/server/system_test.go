package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/system"

	"github.com/vmctl/vmctl/engine/services/systemsvc"
)

// fakeSystem answers version and info with what it is given.
type fakeSystem struct {
	info systemsvc.Info
	err  error
}

func (f fakeSystem) Version() systemsvc.Version { return f.info.Version }
func (f fakeSystem) Info(context.Context) (systemsvc.Info, error) {
	return f.info, f.err
}

func getJSON(t *testing.T, s *Server, path string, v any) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, rec.Body)
		}
	}
	return rec
}

// Info and version carry the system service's facts in dockerd's fields;
// the hypervisor auto picks leads DriverStatus, or a warning says why
// there is none.
func TestInfoAndVersion(t *testing.T) {
	ver := systemsvc.Version{Version: "1.2.3", GoVersion: "go1.99", OS: "linux", Arch: "amd64", KernelVersion: "6.1.0"}
	base := systemsvc.Info{
		Version: ver, Containers: 3, Running: 1, Stopped: 2, Images: 4,
		DataRoot: "/var/lib/vmctl", ExecRoot: "/run/vmctl", Hostname: "box", NCPU: 2, MemTotal: 1 << 30,
		Host:      systemsvc.Host{KVM: "no /dev/kvm", Kernel: "/g/vmlinuz", Initrd: "/g/initramfs.img"},
		Snapshots: "on, in /var/lib/vmctl/snapshots",
	}
	withQEMU := base
	withQEMU.Host.Hypervisor, withQEMU.Host.Accel, withQEMU.Host.Reason, withQEMU.Host.QEMU = "qemu", "tcg", "no KVM", "/usr/bin/qemu-system-x86_64"
	withQEMU.Host.Outer, withQEMU.Host.Virtualization = "VirtualBox (DMI innotek GmbH VirtualBox)", "not available"
	withQEMU.Host.FastPath = `VBoxManage modifyvm "<VM>" --nested-hw-virt on`
	none := base
	none.Host.Reason = "no hypervisor can run here"
	facts := [][2]string{{"KVM", "no /dev/kvm"}}
	outer := [][2]string{{"Outer hypervisor", "VirtualBox (DMI innotek GmbH VirtualBox)"}, {"Virtualization", "not available"}}
	guest := [][2]string{{"Guest kernel", "/g/vmlinuz"}, {"Guest image", "/g/initramfs.img"}, {"Exec root", "/run/vmctl"},
		{"Snapshots", "on, in /var/lib/vmctl/snapshots"}}
	for _, tc := range []struct {
		name         string
		info         systemsvc.Info
		driverStatus [][2]string
		warnings     []string
	}{
		{"qemu", withQEMU, slices.Concat([][2]string{{"Hypervisor", "qemu"}, {"Acceleration", "tcg"}, {"Reason", "no KVM"}},
			outer, facts, [][2]string{{"QEMU", "/usr/bin/qemu-system-x86_64"}, {"Fast path", `VBoxManage modifyvm "<VM>" --nested-hw-virt on`}}, guest), nil},
		{"none", none, slices.Concat(facts, guest), []string{"no hypervisor: no hypervisor can run here"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(nil, nil, nil, nil, fakeSystem{info: tc.info}, nil)
			var info system.Info
			rec := getJSON(t, s, "/v1.41/info", &info)
			if rec.Code != http.StatusOK || rec.Header().Get("Server") != "vmctld/1.2.3 (linux)" {
				t.Fatalf("GET /info = %d, Server %q: %s", rec.Code, rec.Header().Get("Server"), rec.Body)
			}
			if info.Containers != 3 || info.ContainersRunning != 1 || info.ContainersStopped != 2 || info.Images != 4 ||
				info.ServerVersion != "1.2.3" || info.KernelVersion != "6.1.0" || info.DockerRootDir != "/var/lib/vmctl" ||
				info.Name != "box" || info.NCPU != 2 || info.MemTotal != 1<<30 || info.DefaultRuntime != DefaultRuntime {
				t.Errorf("info = %+v", info)
			}
			if !slices.Equal(info.DriverStatus, tc.driverStatus) {
				t.Errorf("DriverStatus = %q, want %q", info.DriverStatus, tc.driverStatus)
			}
			if !slices.Equal(info.Warnings, tc.warnings) {
				t.Errorf("Warnings = %q, want %q", info.Warnings, tc.warnings)
			}
		})
	}

	s := newServer(nil, nil, nil, nil, fakeSystem{info: base}, nil)
	var v system.VersionResponse
	if rec := getJSON(t, s, "/version", &v); rec.Code != http.StatusOK {
		t.Fatalf("GET /version = %d %s", rec.Code, rec.Body)
	}
	if v.Version != "1.2.3" || v.GoVersion != "go1.99" || v.KernelVersion != "6.1.0" || v.APIVersion != APIVersion ||
		len(v.Components) != 1 || v.Components[0].Version != "1.2.3" {
		t.Errorf("version = %+v", v)
	}

	broken := newServer(nil, nil, nil, nil, fakeSystem{info: base, err: errors.New("container store unreadable")}, nil)
	rec := getJSON(t, broken, "/info", &struct{}{})
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "container store unreadable") {
		t.Errorf("GET /info with a failing service = %d %s", rec.Code, rec.Body)
	}
}
