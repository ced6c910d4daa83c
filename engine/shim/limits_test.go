package shim

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Deleting a task that never started ends a Wait on it, with 137, as runc
// does.
func TestDeleteOfCreatedTaskEndsWait(t *testing.T) {
	s, _, _ := newTestService(t)
	c := &container{id: "c1", bundle: t.TempDir(), kind: kindMember, execs: map[string]*process{}}
	c.init = newProcess("c1", "", stdio{}, 4242)
	s.containers["c1"] = c
	waited := make(chan *taskapi.WaitResponse, 1)
	go func() {
		r, err := s.Wait(context.Background(), &taskapi.WaitRequest{ID: "c1"})
		if err != nil {
			t.Error(err)
		}
		waited <- r
	}()
	// Let Wait find the task before Delete forgets it (a client waits
	// first, then deletes).
	time.Sleep(100 * time.Millisecond)
	if r, err := s.Delete(context.Background(), &taskapi.DeleteRequest{ID: "c1"}); err != nil || r.ExitStatus != 137 {
		t.Fatalf("Delete = %v, %v; want exit 137", r, err)
	}
	select {
	case r := <-waited:
		if r == nil || r.ExitStatus != 137 {
			t.Errorf("Wait = %v, want exit 137", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait on a task deleted before it started did not return")
	}
}

func TestParseOptionsRefusesTrailingValues(t *testing.T) {
	if _, err := parseOptions(runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor":"qemu"} {"turbo":true}`)})); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("parseOptions(two JSON values) = %v, want an invalid-argument error", err)
	}
}

func TestVMShapeHugeValues(t *testing.T) {
	quota, period := int64(math.MaxInt64), uint64(1)
	limit := int64(1 << 30)
	spec := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
		CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}, Memory: &specs.LinuxMemory{Limit: &limit},
	}}}
	if vcpus, mem := vmShape(spec); vcpus != maxVCPUs || mem != 1024+128 {
		t.Errorf("vmShape(huge quota) = %d vCPUs, %d MiB; want %d, %d", vcpus, mem, maxVCPUs, 1024+128)
	}
	huge := int64(math.MaxInt64)
	spec.Linux.Resources.Memory.Limit = &huge
	if err := checkResources(spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("checkResources(a memory limit of 8 EiB) = %v, want an invalid-argument error", err)
	}
	spec.Linux.Resources.Memory.Limit = &limit
	if err := checkResources(spec); err != nil {
		t.Errorf("checkResources(1 GiB) = %v", err)
	}
}

// A pod's VM is as large as CRI says the pod is.
func TestPodShape(t *testing.T) {
	spec := &specs.Spec{Annotations: map[string]string{
		annoContainerType: typeSandbox, annoSandboxMemory: "536870912", annoSandboxCPUQuota: "250000", annoSandboxCPUPeriod: "100000",
	}}
	if vcpus, mem := podShape(spec); vcpus != 3 || mem != 512+128 {
		t.Errorf("podShape = %d vCPUs, %d MiB; want 3, 640", vcpus, mem)
	}
	if vcpus, mem := podShape(&specs.Spec{}); vcpus != 1 || mem != 256 {
		t.Errorf("podShape(no annotations) = %d, %d; want vmShape's 1, 256", vcpus, mem)
	}
}
