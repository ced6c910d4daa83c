package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The task service without a VM: what it refuses, and what it answers
// for tasks it does not have, as containerd sees it (gRPC codes).

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	topics []string
}

func (r *recorder) Publish(ctx context.Context, topic string, event proto.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	return nil
}

func (r *recorder) published() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.topics)
}

// newTestService is a service whose VMs cannot boot: its guest kernel
// and image do not exist, so a Create that gets as far as the boot fails
// there.
func newTestService(t *testing.T) (*Service, *recorder, Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		Kernel:    filepath.Join(dir, "no-vmlinuz"),
		Initrd:    filepath.Join(dir, "no-initramfs.img"),
		StateRoot: filepath.Join(dir, "state"),
	}
	rec := &recorder{}
	s := NewService(context.Background(), cfg, "default", rec, nil)
	t.Cleanup(func() { s.Shutdown(context.Background(), &taskapi.ShutdownRequest{Now: true}) })
	return s, rec, cfg
}

// wantCode checks that err is a gRPC status of code, in one line.
func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	st, ok := grpcstatus.FromError(err)
	if err == nil || !ok {
		t.Errorf("%s = %v, want a gRPC status %s", what, err, code)
		return
	}
	if st.Code() != code {
		t.Errorf("%s = %s (%q), want %s", what, st.Code(), st.Message(), code)
	}
	if st.Message() == "" || strings.Contains(st.Message(), "\n") {
		t.Errorf("%s: message %q, want one line", what, st.Message())
	}
}

func TestServiceUnknownTask(t *testing.T) {
	s, rec, _ := newTestService(t)
	ctx := context.Background()
	for _, execID := range []string{"", "e1"} {
		calls := map[string]func() error{
			"State":  func() error { _, err := s.State(ctx, &taskapi.StateRequest{ID: "nope", ExecID: execID}); return err },
			"Start":  func() error { _, err := s.Start(ctx, &taskapi.StartRequest{ID: "nope", ExecID: execID}); return err },
			"Delete": func() error { _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "nope", ExecID: execID}); return err },
			"Kill": func() error {
				_, err := s.Kill(ctx, &taskapi.KillRequest{ID: "nope", ExecID: execID, Signal: uint32(unix.SIGKILL)})
				return err
			},
			"Wait": func() error { _, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "nope", ExecID: execID}); return err },
			"ResizePty": func() error {
				_, err := s.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: "nope", ExecID: execID, Width: 80, Height: 24})
				return err
			},
			"CloseIO": func() error {
				_, err := s.CloseIO(ctx, &taskapi.CloseIORequest{ID: "nope", ExecID: execID, Stdin: true})
				return err
			},
		}
		if execID == "" {
			calls["Pids"] = func() error { _, err := s.Pids(ctx, &taskapi.PidsRequest{ID: "nope"}); return err }
			calls["Stats"] = func() error { _, err := s.Stats(ctx, &taskapi.StatsRequest{ID: "nope"}); return err }
			calls["Pause"] = func() error { _, err := s.Pause(ctx, &taskapi.PauseRequest{ID: "nope"}); return err }
			calls["Resume"] = func() error { _, err := s.Resume(ctx, &taskapi.ResumeRequest{ID: "nope"}); return err }
			calls["Exec"] = func() error {
				spec, _ := anypb.New(&runtimeoptions.Options{}) // never read: the task is unknown
				_, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "nope", ExecID: "e1", Spec: spec})
				return err
			}
		}
		for name, call := range calls {
			err := call()
			wantCode(t, name+"(nope, exec "+execID+")", err, codes.NotFound)
			if err != nil && !strings.Contains(err.Error(), "nope") {
				t.Errorf("%s: %q does not name the task", name, err)
			}
		}
	}
	// Connect answers for the shim whatever the task.
	resp, err := s.Connect(ctx, &taskapi.ConnectRequest{ID: "nope"})
	if err != nil || resp.ShimPid != uint32(os.Getpid()) || resp.TaskPid != 0 {
		t.Errorf("Connect(nope) = %v, %v; want the shim's pid %d and no task pid", resp, err, os.Getpid())
	}
	if got := rec.published(); len(got) != 0 {
		t.Errorf("published %q for unknown tasks, want nothing", got)
	}
}

func TestServiceNotOffered(t *testing.T) {
	s, _, _ := newTestService(t)
	ctx := context.Background()
	_, err := s.Update(ctx, &taskapi.UpdateTaskRequest{ID: "c1"})
	wantCode(t, "Update", err, codes.Unimplemented)
	_, err = s.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{ID: "c1", Path: "/tmp/cp"})
	wantCode(t, "Checkpoint", err, codes.Unimplemented)
}

// bundleWith makes a bundle whose config.json runs true, changed by edit,
// with a rootfs directory if withRootfs.
func bundleWith(t *testing.T, withRootfs bool, edit func(*specs.Spec)) string {
	t.Helper()
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"true"}, Cwd: "/"},
		Root:    &specs.Root{Path: "rootfs"},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}}},
	}
	if edit != nil {
		edit(spec)
	}
	bundle := writeBundle(t, specJSON(t, spec))
	if withRootfs {
		if err := os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bundle
}

// A refused Create leaves the bundle as it was, boots nothing, publishes
// nothing, and leaves the service without the task.
func TestServiceCreateRefused(t *testing.T) {
	hostFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(hostFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	runcOpts := runtimeOptions(t, &runcoptions.Options{BinaryName: "runc", Root: "/run/containerd/runc"})
	for _, tt := range []struct {
		name       string
		withRootfs bool
		edit       func(*specs.Spec)
		req        func(r *taskapi.CreateTaskRequest)
		code       codes.Code
	}{
		{name: "checkpoint", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) { r.Checkpoint = "/tmp/cp" }, code: codes.Unimplemented},
		{name: "restore from a parent checkpoint", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) { r.ParentCheckpoint = "/tmp/cp" }, code: codes.Unimplemented},
		{name: "empty ID", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) { r.ID = "" }, code: codes.InvalidArgument},
		{name: "runc's options", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) { r.Options = runcOpts }, code: codes.InvalidArgument},
		{name: "options of no type", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) { r.Options = &anypb.Any{Value: []byte("\x0a\x03abc")} }, code: codes.InvalidArgument},
		{name: "garbage options", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) {
			r.Options = &anypb.Any{TypeUrl: runtimeOptionsURL, Value: []byte{0xff, 0xff}}
		}, code: codes.InvalidArgument},
		{name: "unknown runtime config key", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) {
			r.Options = runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"turbo": true}`)})
		}, code: codes.InvalidArgument},
		{name: "bad hypervisor", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) {
			r.Options = runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor": "xen"}`)})
		}, code: codes.InvalidArgument},
		{name: "no process", withRootfs: true, edit: func(s *specs.Spec) { s.Process = nil }, code: codes.InvalidArgument},
		{name: "terminal differs from the spec's", withRootfs: true, req: func(r *taskapi.CreateTaskRequest) { r.Terminal = true }, code: codes.InvalidArgument},
		{name: "the host's network namespace", withRootfs: true, edit: func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"})
		}, code: codes.Unimplemented},
		{name: "bind mount of a file", withRootfs: true, edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/f", Type: "bind", Source: hostFile, Options: []string{"rbind", "ro"}})
		}, code: codes.Unimplemented},
		{name: "no rootfs and no mounts", withRootfs: false, code: codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, rec, cfg := newTestService(t)
			bundle := bundleWith(t, tt.withRootfs, tt.edit)
			before := entries(t, bundle)
			r := &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle}
			if tt.req != nil {
				tt.req(r)
			}
			_, err := s.Create(context.Background(), r)
			wantCode(t, "Create", err, tt.code)
			if after := entries(t, bundle); !slices.Equal(before, after) {
				t.Errorf("the bundle held %q, and %q after the refusal: want it untouched", before, after)
			}
			if _, err := os.Stat(cfg.StateRoot); !os.IsNotExist(err) {
				t.Errorf("the shim's state root exists after the refusal (%v): want no VM started", err)
			}
			if got := rec.published(); len(got) != 0 {
				t.Errorf("published %q, want nothing", got)
			}
			if _, err := s.State(context.Background(), &taskapi.StateRequest{ID: r.ID}); grpcstatus.Code(err) != codes.NotFound {
				t.Errorf("State after the refused Create = %v, want NotFound", err)
			}
		})
	}
}

// Runtime options of another runtime are refused before the snapshot's
// mounts are mounted: nothing to undo in the bundle.
func TestServiceCreateForeignOptionsMountsNothing(t *testing.T) {
	s, _, _ := newTestService(t)
	src := t.TempDir()
	bundle := bundleWith(t, false, nil)
	rootfs := filepath.Join(bundle, "rootfs")
	t.Cleanup(func() { unix.Unmount(rootfs, unix.MNT_DETACH) })
	_, err := s.Create(context.Background(), &taskapi.CreateTaskRequest{
		ID: "c1", Bundle: bundle,
		Rootfs:  []*types.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "rw"}}},
		Options: runtimeOptions(t, &runcoptions.Options{SystemdCgroup: true}),
	})
	wantCode(t, "Create with runc's options", err, codes.InvalidArgument)
	if err != nil && !strings.Contains(err.Error(), "containerd.runc.v1.Options") {
		t.Errorf("Create = %q: want it to name the options' type", err)
	}
	if got := entries(t, bundle); !slices.Equal(got, []string{"config.json"}) {
		t.Errorf("the bundle holds %q after the refusal, want only config.json", got)
	}
	if isMountPoint(t, rootfs) {
		t.Errorf("%s is mounted after the refusal", rootfs)
	}
}

// A Create whose VM cannot boot fails in one line, unmounts the rootfs it
// mounted, and can be tried again: the task is not left half made.
func TestServiceCreateBootFails(t *testing.T) {
	s, rec, cfg := newTestService(t)
	bundle := bundleWith(t, true, nil)
	req := &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle}
	for try := 1; try <= 2; try++ {
		_, err := s.Create(context.Background(), req)
		// The guest kernel is missing (or, on a machine without QEMU, the
		// hypervisor): the boot cannot start.
		// A second try answers the same, not AlreadyExists: the failed
		// one released the task.
		wantCode(t, fmt.Sprintf("Create, try %d", try), err, codes.FailedPrecondition)
	}
	if got := entries(t, bundle); !slices.Equal(got, []string{"config.json", "rootfs"}) {
		t.Errorf("the bundle holds %q after the failed boots, want config.json and rootfs", got)
	}
	if _, err := os.Stat(cfg.StateRoot); err == nil {
		if left := entries(t, cfg.StateRoot); len(left) > 0 {
			t.Errorf("the state root holds %q after the failed boots", left)
		}
	}
	if got := rec.published(); len(got) != 0 {
		t.Errorf("published %q, want nothing", got)
	}

	if os.Geteuid() != 0 {
		t.Skip("not root: the snapshot's mounts need CAP_SYS_ADMIN")
	}
	bundle = bundleWith(t, false, nil)
	rootfs := filepath.Join(bundle, "rootfs")
	t.Cleanup(func() { unix.Unmount(rootfs, unix.MNT_DETACH) })
	_, err := s.Create(context.Background(), &taskapi.CreateTaskRequest{
		ID: "c2", Bundle: bundle,
		Rootfs: []*types.Mount{{Type: "bind", Source: t.TempDir(), Options: []string{"rbind", "rw"}}},
	})
	wantCode(t, "Create with mounts", err, codes.FailedPrecondition)
	if isMountPoint(t, rootfs) {
		t.Errorf("%s is still mounted after the failed Create", rootfs)
	}
}

// Shutdown ends the shim when it has no task.
func TestServiceShutdown(t *testing.T) {
	ended := 0
	s := NewService(context.Background(), Config{StateRoot: t.TempDir()}, "default", &recorder{}, func() { ended++ })
	if _, err := s.Shutdown(context.Background(), &taskapi.ShutdownRequest{ID: "c1"}); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if ended != 1 {
		t.Errorf("Shutdown without a task ended the shim %d times, want once", ended)
	}
	if s.ctx.Err() == nil {
		t.Error("the service's context lives on after Shutdown")
	}
}
