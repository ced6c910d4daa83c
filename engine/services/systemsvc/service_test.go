package systemsvc

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/images"
)

type fakeContainers struct {
	list []*containers.Container
	err  error
}

func (f fakeContainers) List() ([]*containers.Container, error) { return f.list, f.err }

type fakeImages struct {
	list []images.Image
	err  error
}

func (f fakeImages) List(context.Context) ([]images.Image, error) { return f.list, f.err }

func withStatus(st containers.Status) *containers.Container {
	return &containers.Container{State: containers.State{Status: st}}
}

func TestInfo(t *testing.T) {
	s := New(Config{
		Version: "1.2.3", DataRoot: "/var/lib/vmctl", ExecRoot: "/run/vmctl",
		Host: HostConfig{Kernel: "/k", Initrd: "/i"},
		Containers: fakeContainers{list: []*containers.Container{
			withStatus(containers.StatusRunning), withStatus(containers.StatusExited),
			withStatus(containers.StatusCreated), withStatus(containers.StatusRunning),
		}},
		Images: fakeImages{list: make([]images.Image, 3)},
	})
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Containers != 4 || info.Running != 2 || info.Stopped != 2 || info.Images != 3 {
		t.Errorf("Info counts %d containers (%d running, %d stopped), %d images; want 4 (2, 2), 3",
			info.Containers, info.Running, info.Stopped, info.Images)
	}
	if info.Version != s.Version() || info.Version.Version != "1.2.3" || info.OS != runtime.GOOS || info.NCPU != runtime.NumCPU() {
		t.Errorf("Info version %+v, NCPU %d", info.Version, info.NCPU)
	}
	if info.DataRoot != "/var/lib/vmctl" || info.ExecRoot != "/run/vmctl" || info.Host.Kernel != "/k" || info.Host.Initrd != "/i" {
		t.Errorf("Info roots %q %q, guest %q %q", info.DataRoot, info.ExecRoot, info.Host.Kernel, info.Host.Initrd)
	}
	// Whatever this host is, auto's choice or its absence is explained.
	if info.Host.Reason == "" || info.Host.KVM == "" || info.Host.Outer == "" || info.Host.Virtualization == "" {
		t.Errorf("Info host %+v: want a reason, what /dev/kvm can do, the outer hypervisor and VT-x/AMD-V", info.Host)
	}
}

func TestInfoErrors(t *testing.T) {
	broken := errors.New("store unreadable")
	for _, cfg := range []Config{
		{Containers: fakeContainers{err: broken}, Images: fakeImages{}},
		{Containers: fakeContainers{}, Images: fakeImages{err: broken}},
	} {
		if _, err := New(cfg).Info(context.Background()); !errors.Is(err, broken) {
			t.Errorf("Info with a failing list = %v, want %v", err, broken)
		}
	}
}
