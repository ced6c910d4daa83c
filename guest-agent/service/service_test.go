package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/container"
	"github.com/vmctl/vmctl/guest-agent/etcfiles"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
	"github.com/vmctl/vmctl/guest-agent/netconf"
	"github.com/vmctl/vmctl/guest-agent/reaper"
	"github.com/vmctl/vmctl/guest-agent/storage"
)

var testReaper *reaper.Reaper

// TestMain doubles as the container init, as the agent binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == container.InitArg {
		container.InitMain()
	}
	testReaper = reaper.New()
	go testReaper.Run()
	os.Exit(m.Run())
}

// newTestService returns a service whose disks are looked up in sysBlock.
func newTestService(t testing.TB, sysBlock, cgroupRoot string) *Service {
	t.Helper()
	rt, err := container.New(container.Config{Reaper: testReaper, CgroupRoot: cgroupRoot})
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{
		Runtime:   rt,
		Storage:   &storage.Manager{SysBlock: sysBlock, DevDir: "/dev", BaseDir: t.TempDir()},
		Etc:       etcfiles.Dir{Base: t.TempDir()},
		Transport: "virtio-serial",
		// These tests run on the host: its network is not theirs to change.
		ConfigureNetwork: func(netconf.Request) error { return errors.New("no network to configure in this test") },
	})
}

func validSpec() []byte {
	b, _ := json.Marshal(specs.Spec{
		Version:  specs.Version,
		Hostname: "svc",
		Process:  &specs.Process{Args: []string{"sh", "-c", "hostname; echo err >&2; exit 3"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts:   []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
		}},
	})
	return b
}

var disks = []*agent.Storage{
	{Serial: "img", Fstype: "ext4", Readonly: true, Role: "image"},
	{Serial: "rw", Fstype: "ext4", Role: "writable"},
}

func code(err error) codes.Code {
	st, _ := status.FromError(err)
	return st.Code()
}

func TestRequestValidation(t *testing.T) {
	s := newTestService(t, t.TempDir(), t.TempDir())
	ctx := context.Background()
	noProcess, _ := json.Marshal(specs.Spec{Linux: &specs.Linux{}})
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"create: empty id", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{OciSpec: validSpec(), Storages: disks})
			return err
		}, codes.InvalidArgument},
		{"create: id with slash", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "../x", OciSpec: validSpec(), Storages: disks})
			return err
		}, codes.InvalidArgument},
		{"create: spec not JSON", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: []byte("{"), Storages: disks})
			return err
		}, codes.InvalidArgument},
		{"create: spec without process", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: noProcess, Storages: disks})
			return err
		}, codes.InvalidArgument},
		{"create: no storages", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: validSpec()})
			return err
		}, codes.InvalidArgument},
		{"create: unknown role", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: validSpec(),
				Storages: []*agent.Storage{{Serial: "img", Role: "scratch"}}})
			return err
		}, codes.InvalidArgument},
		{"create: hosts with a NUL byte", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: validSpec(), Storages: disks,
				Hosts: "127.0.0.1 localhost\x00"})
			return err
		}, codes.InvalidArgument},
		{"create: resolv.conf too large", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: validSpec(), Storages: disks,
				ResolvConf: strings.Repeat("#", etcfiles.MaxSize+1)})
			return err
		}, codes.InvalidArgument},
		{"create: disk not attached", func() error {
			_, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c", OciSpec: validSpec(), Storages: disks})
			return err
		}, codes.NotFound},
		{"start: unknown container", func() error {
			_, err := s.StartContainer(ctx, &agent.ContainerRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"remove: unknown container is fine", func() error {
			_, err := s.RemoveContainer(ctx, &agent.ContainerRequest{ContainerId: "nope"})
			return err
		}, codes.OK},
		{"remove: bad id", func() error {
			_, err := s.RemoveContainer(ctx, &agent.ContainerRequest{ContainerId: ""})
			return err
		}, codes.InvalidArgument},
		{"exec: no exec id", func() error {
			_, err := s.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: "nope", OciProcess: []byte(`{"args":["sh"]}`)})
			return err
		}, codes.InvalidArgument},
		{"exec: process not JSON", func() error {
			_, err := s.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: "nope", ExecId: "e", OciProcess: []byte("[")})
			return err
		}, codes.InvalidArgument},
		{"exec: empty args", func() error {
			_, err := s.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: "nope", ExecId: "e", OciProcess: []byte(`{}`)})
			return err
		}, codes.InvalidArgument},
		{"exec: unknown container", func() error {
			_, err := s.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: "nope", ExecId: "e", OciProcess: []byte(`{"args":["sh"]}`)})
			return err
		}, codes.NotFound},
		{"wait: unknown container", func() error {
			_, err := s.WaitProcess(ctx, &agent.ProcessRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"signal: zero", func() error {
			_, err := s.SignalProcess(ctx, &agent.SignalProcessRequest{ContainerId: "nope"})
			return err
		}, codes.InvalidArgument},
		{"signal: out of range", func() error {
			_, err := s.SignalProcess(ctx, &agent.SignalProcessRequest{ContainerId: "nope", Signal: 65})
			return err
		}, codes.InvalidArgument},
		{"signal: unknown container", func() error {
			_, err := s.SignalProcess(ctx, &agent.SignalProcessRequest{ContainerId: "nope", Signal: 9})
			return err
		}, codes.NotFound},
		{"write: unknown container", func() error {
			_, err := s.WriteStdin(ctx, &agent.WriteStdinRequest{ContainerId: "nope", Data: []byte("x")})
			return err
		}, codes.NotFound},
		{"close stdin: unknown container", func() error {
			_, err := s.CloseStdin(ctx, &agent.ProcessRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"read stdout: unknown container", func() error {
			_, err := s.ReadStdout(ctx, &agent.ReadOutputRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"read stderr: unknown container", func() error {
			_, err := s.ReadStderr(ctx, &agent.ReadOutputRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"resize: unknown container", func() error {
			_, err := s.ResizeTty(ctx, &agent.ResizeTtyRequest{ContainerId: "nope", Rows: 1, Cols: 1})
			return err
		}, codes.NotFound},
	}
	for _, tt := range tests {
		if got := code(tt.call()); got != tt.want {
			t.Errorf("%s: code %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("wrapped: %w", container.ErrNotFound), codes.NotFound},
		{fmt.Errorf("wrapped: %w", storage.ErrNotFound), codes.NotFound},
		{container.ErrPermission, codes.PermissionDenied},
		{container.ErrInvalid, codes.InvalidArgument},
		{storage.ErrInvalid, codes.InvalidArgument},
		{fmt.Errorf("wrapped: %w", netconf.ErrInvalid), codes.InvalidArgument},
		{etcfiles.ErrInvalid, codes.InvalidArgument},
		{container.ErrExists, codes.AlreadyExists},
		{container.ErrState, codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("disk on fire"), codes.Internal},
		{status.Error(codes.Unavailable, "kept"), codes.Unavailable},
	}
	for _, tt := range tests {
		if got := code(toStatus(tt.err)); got != tt.want {
			t.Errorf("toStatus(%v) code = %v, want %v", tt.err, got, tt.want)
		}
	}
	st, _ := status.FromError(toStatus(errors.New("line one\nline two")))
	if strings.Contains(st.Message(), "\n") {
		t.Errorf("status message %q has a newline", st.Message())
	}
}

func TestRecoverInterceptor(t *testing.T) {
	s := newTestService(t, t.TempDir(), t.TempDir())
	_, err := s.recoverInterceptor(context.Background(), func(any) error { return nil },
		&ttrpc.UnaryServerInfo{FullMethod: "/vmctl.agent.v1.Agent/Boom"},
		func(context.Context, func(any) error) (any, error) { panic("boom") })
	if code(err) != codes.Internal || !strings.Contains(err.Error(), "boom") {
		t.Errorf("panicking handler = %v, want Internal mentioning boom", err)
	}
}

func TestHealthAndShutdown(t *testing.T) {
	var powerOffs atomic.Int32
	s := newTestService(t, t.TempDir(), t.TempDir())
	s.cfg.PowerOff = func() { powerOffs.Add(1) }
	h, err := s.Health(context.Background(), &agent.HealthRequest{})
	if err != nil || h.AgentVersion != Version || h.Transport != "virtio-serial" || h.KernelRelease == "" {
		t.Errorf("Health = %+v, %v", h, err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Shutdown(context.Background(), &agent.ShutdownRequest{}); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
	time.Sleep(3 * powerOffDelay)
	if n := powerOffs.Load(); n != 1 {
		t.Errorf("PowerOff called %d times after two Shutdowns, want 1", n)
	}
}

// FuzzCreateContainer feeds arbitrary spec bytes; the disks are never
// attached, so nothing is ever started. No input may panic the agent.
func FuzzCreateContainer(f *testing.F) {
	f.Add(validSpec())
	f.Add([]byte(`{"process":{"args":["a"],"consoleSize":{"height":99999999}},"linux":{}}`))
	f.Add([]byte(`{"process":{"args":[""]},"linux":{"namespaces":[{"type":"user"}]},"mounts":[{"destination":"x"}]}`))
	f.Add([]byte(`null`))
	s := newTestService(f, f.TempDir(), f.TempDir())
	f.Fuzz(func(t *testing.T, spec []byte) {
		_, err := s.CreateContainer(context.Background(), &agent.CreateContainerRequest{ContainerId: "fuzz", OciSpec: spec, Storages: disks})
		if err == nil {
			t.Fatal("CreateContainer succeeded without disks")
		}
		var p specs.Process
		if json.Unmarshal(spec, &p) == nil {
			s.ExecProcess(context.Background(), &agent.ExecProcessRequest{ContainerId: "fuzz", ExecId: "e", OciProcess: spec})
		}
	})
}

// TestRunOverTTRPC drives a container through a real ttrpc connection on
// this machine: loop devices stand in for virtio-blk disks.
func TestRunOverTTRPC(t *testing.T) {
	testenv.RequireRoot(t)
	image := testenv.Loop(t, testenv.Ext4Image(t, testenv.BusyboxRoot(t, ""), "16M"))
	writable := testenv.Loop(t, testenv.Ext4Image(t, "", "16M"))
	sys := testenv.FakeSysBlock(t, map[string]string{
		strings.TrimPrefix(image, "/dev/"): "img", strings.TrimPrefix(writable, "/dev/"): "rw",
	})
	s := newTestService(t, sys, testenv.CgroupRoot(t))
	srv, err := NewServer(s)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir, err := os.MkdirTemp("", "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	conn, err := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	c := agent.NewTTRPCAgentClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := c.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c1", OciSpec: validSpec(), Storages: disks}); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	// A failed check must not leave the container's mounts and processes
	// behind (after the removal below, this finds nothing to do).
	defer s.Shutdown(context.Background(), &agent.ShutdownRequest{})
	_, err = c.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "c1", OciSpec: validSpec(), Storages: disks})
	if code(err) != codes.AlreadyExists {
		t.Errorf("second CreateContainer c1 = %v, want AlreadyExists", err)
	}
	if _, err := c.StartContainer(ctx, &agent.ContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	read := func(stderr bool) string {
		var out []byte
		for {
			req := &agent.ReadOutputRequest{ContainerId: "c1", MaxLen: 3, Offset: uint64(len(out))}
			rd := c.ReadStdout
			if stderr {
				rd = c.ReadStderr
			}
			resp, err := rd(ctx, req)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if len(resp.Data) > 3 {
				t.Fatalf("read returned %d bytes, max_len 3", len(resp.Data))
			}
			if resp.Offset != uint64(len(out)) {
				t.Fatalf("read at %d answered offset %d", len(out), resp.Offset)
			}
			if len(resp.Data) > 0 {
				// A host that lost the answer asks again: same bytes.
				again, err := rd(ctx, req)
				if err != nil || string(again.Data) != string(resp.Data) || again.Offset != resp.Offset {
					t.Fatalf("repeated read at %d = %+v, %v; want %q again", len(out), again, err, resp.Data)
				}
				// A host that kept part of the chunk asks for the rest.
				if len(resp.Data) > 1 {
					rest, err := rd(ctx, &agent.ReadOutputRequest{ContainerId: "c1", MaxLen: 3, Offset: uint64(len(out) + 1)})
					if err != nil || string(rest.Data) != string(resp.Data[1:]) || rest.Offset != uint64(len(out)+1) {
						t.Fatalf("read inside the chunk at %d = %+v, %v; want %q", len(out)+1, rest, err, resp.Data[1:])
					}
				}
				// Bytes already acknowledged or never sent cannot be asked for.
				bad := []uint64{uint64(len(out) + len(resp.Data) + 1)}
				if len(out) > 0 {
					bad = append(bad, uint64(len(out)-1))
				}
				for _, bad := range bad {
					if _, err := rd(ctx, &agent.ReadOutputRequest{ContainerId: "c1", MaxLen: 3, Offset: bad}); code(err) != codes.InvalidArgument {
						t.Fatalf("read at offset %d = %v, want InvalidArgument", bad, err)
					}
				}
			}
			out = append(out, resp.Data...)
			if resp.Eof {
				return string(out)
			}
		}
	}
	if out := read(false); out != "svc\n" {
		t.Errorf("stdout = %q, want svc", out)
	}
	if out := read(true); out != "err\n" {
		t.Errorf("stderr = %q, want err", out)
	}
	wait, err := c.WaitProcess(ctx, &agent.ProcessRequest{ContainerId: "c1"})
	if err != nil || wait.ExitStatus != 3 {
		t.Errorf("WaitProcess = %+v, %v; want status 3", wait, err)
	}
	// Waiting again is allowed until removal.
	if wait, err := c.WaitProcess(ctx, &agent.ProcessRequest{ContainerId: "c1"}); err != nil || wait.ExitStatus != 3 {
		t.Errorf("second WaitProcess = %+v, %v", wait, err)
	}
	if _, err := c.RemoveContainer(ctx, &agent.ContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if _, err := c.WaitProcess(ctx, &agent.ProcessRequest{ContainerId: "c1"}); code(err) != codes.NotFound {
		t.Errorf("WaitProcess after removal = %v, want NotFound", err)
	}
	if _, err := os.Stat(s.cfg.Storage.Dir("c1")); !os.IsNotExist(err) {
		t.Errorf("storage of c1 left behind: %v", err)
	}
}
