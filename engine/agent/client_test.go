package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

// fakeAgent serves the agent API from memory: it records each request and
// answers with what the test set, or with err.
type fakeAgent struct {
	mu   sync.Mutex
	reqs []proto.Message

	err    error
	health *agentapi.HealthResponse
	wait   *agentapi.WaitProcessResponse
	write  *agentapi.WriteStdinResponse
	// read answers ReadStdout and ReadStderr.
	read func(*agentapi.ReadOutputRequest) *agentapi.ReadOutputResponse
	// block makes every call wait for its context to end.
	block bool
	// export is what ExportChanges exports; exportSize, if not 0, the
	// size it claims (a lying guest).
	export     []byte
	exportSize uint64
	// uploaded is what WriteUpload received.
	uploaded []byte
	// procs and stats answer ListProcesses and Stats.
	procs *agentapi.ListProcessesResponse
	stats *agentapi.StatsResponse
}

var _ agentapi.TTRPCAgentService = (*fakeAgent)(nil)

func (f *fakeAgent) record(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (f *fakeAgent) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.reqs...)
}

func (f *fakeAgent) Health(ctx context.Context, req *agentapi.HealthRequest) (*agentapi.HealthResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.health, nil
}

func (f *fakeAgent) empty(ctx context.Context, req proto.Message) (*agentapi.Empty, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &agentapi.Empty{}, nil
}

func (f *fakeAgent) ConfigureNetwork(ctx context.Context, req *agentapi.ConfigureNetworkRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) Restored(ctx context.Context, req *agentapi.RestoredRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) CreateContainer(ctx context.Context, req *agentapi.CreateContainerRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) StartContainer(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) RemoveContainer(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) PauseContainer(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) ResumeContainer(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) ExecProcess(ctx context.Context, req *agentapi.ExecProcessRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) WaitProcess(ctx context.Context, req *agentapi.ProcessRequest) (*agentapi.WaitProcessResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.wait, nil
}

func (f *fakeAgent) SignalProcess(ctx context.Context, req *agentapi.SignalProcessRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) WriteStdin(ctx context.Context, req *agentapi.WriteStdinRequest) (*agentapi.WriteStdinResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.write, nil
}

func (f *fakeAgent) CloseStdin(ctx context.Context, req *agentapi.ProcessRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) ListProcesses(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.ListProcessesResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.procs, nil
}

func (f *fakeAgent) Stats(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.StatsResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.stats, nil
}

func (f *fakeAgent) ReadStdout(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return f.read(req), nil
}

func (f *fakeAgent) ReadStderr(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	return f.ReadStdout(ctx, req)
}

func (f *fakeAgent) ResizeTty(ctx context.Context, req *agentapi.ResizeTtyRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) Shutdown(ctx context.Context, req *agentapi.ShutdownRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) ExportChanges(ctx context.Context, req *agentapi.ExportChangesRequest) (*agentapi.ExportChangesResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	size := uint64(len(f.export))
	if f.exportSize != 0 {
		size = f.exportSize
	}
	return &agentapi.ExportChangesResponse{ExportId: "0123456789abcdef", Size: size, Entries: 3}, nil
}

func (f *fakeAgent) ReadExport(ctx context.Context, req *agentapi.ReadExportRequest) (*agentapi.ReadExportResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	off := min(int(req.Offset), len(f.export))
	end := min(off+int(req.MaxLen), len(f.export))
	return &agentapi.ReadExportResponse{Data: f.export[off:end], Eof: end == len(f.export)}, nil
}

func (f *fakeAgent) DropExport(ctx context.Context, req *agentapi.ExportRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

func (f *fakeAgent) StatPath(ctx context.Context, req *agentapi.PathRequest) (*agentapi.PathStat, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &agentapi.PathStat{Name: "f", Size: int64(len(f.export))}, nil
}

func (f *fakeAgent) ArchivePath(ctx context.Context, req *agentapi.PathRequest) (*agentapi.ArchivePathResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &agentapi.ArchivePathResponse{ExportId: "0123456789abcdef", Size: uint64(len(f.export)), Stat: &agentapi.PathStat{Name: "f"}}, nil
}

func (f *fakeAgent) WriteUpload(ctx context.Context, req *agentapi.WriteUploadRequest) (*agentapi.Empty, error) {
	f.mu.Lock()
	f.uploaded = append(f.uploaded, req.Data...)
	f.mu.Unlock()
	return f.empty(ctx, req)
}

func (f *fakeAgent) ExtractUpload(ctx context.Context, req *agentapi.ExtractUploadRequest) (*agentapi.Empty, error) {
	return f.empty(ctx, req)
}

// pipeListener hands out one end of a net.Pipe, then blocks until closed.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// serve connects a Client to fake through a real ttrpc server over a
// net.Pipe.
func serve(t *testing.T, fake *fakeAgent) *Client {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterTTRPCAgentService(srv, fake)
	host, guest := net.Pipe()
	l := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conns <- guest
	go srv.Serve(context.Background(), l)
	c := New(host)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientCalls checks that each method sends the request its arguments
// say and turns the answer into engine types.
func TestClientCalls(t *testing.T) {
	spec := &specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"}, Hostname: "box"}
	specJSON, _ := json.Marshal(spec)
	proc := &specs.Process{Args: []string{"ls", "-l"}, Cwd: "/srv", Terminal: true}
	procJSON, _ := json.Marshal(proc)
	p := Process{ContainerID: "c1", ExecID: "e1"}
	tests := []struct {
		name    string
		call    func(context.Context, *Client) (any, error)
		wantReq proto.Message
		want    any
	}{
		{
			name:    "health",
			call:    func(ctx context.Context, c *Client) (any, error) { return c.Health(ctx) },
			wantReq: &agentapi.HealthRequest{},
			want:    Health{AgentVersion: "v1", KernelRelease: "6.1.0", Transport: contract.TransportSerial},
		},
		{
			name: "create",
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.CreateContainer(ctx, "c1", spec, []Storage{
					{Serial: contract.ImageDiskSerial, FSType: "ext4", ReadOnly: true, Role: contract.RoleImage},
					{Serial: contract.VolumeDiskSerial(0), Options: []string{"noatime"}, Role: contract.RoleVolume, MountPoint: "/data"},
				}, ContainerNetwork{})
			},
			wantReq: &agentapi.CreateContainerRequest{ContainerId: "c1", OciSpec: specJSON, Storages: []*agentapi.Storage{
				{Serial: contract.ImageDiskSerial, Fstype: "ext4", Readonly: true, Role: contract.RoleImage},
				{Serial: contract.VolumeDiskSerial(0), Options: []string{"noatime"}, Role: contract.RoleVolume, MountPoint: "/data"},
			}},
		},
		{
			name: "create on a network",
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.CreateContainer(ctx, "c1", spec, []Storage{{Serial: contract.ImageDiskSerial, Role: contract.RoleImage}},
					ContainerNetwork{Hosts: "172.30.0.2\tbox\n", ResolvConf: "nameserver 172.30.0.1\n", HostnameFile: "box\n", ShareGuestNetwork: true})
			},
			wantReq: &agentapi.CreateContainerRequest{ContainerId: "c1", OciSpec: specJSON,
				Storages: []*agentapi.Storage{{Serial: contract.ImageDiskSerial, Role: contract.RoleImage}},
				Hosts:    "172.30.0.2\tbox\n", ResolvConf: "nameserver 172.30.0.1\n", HostnameFile: "box\n", ShareGuestNetwork: true},
		},
		{
			name: "configure network",
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.ConfigureNetwork(ctx, []Interface{
					{MAC: net.HardwareAddr{0x02, 0x42, 0xac, 0x1e, 0, 2}, Name: contract.InterfaceName(0), MTU: 1400,
						Addresses: []netip.Prefix{netip.MustParsePrefix("172.30.0.2/16"), netip.MustParsePrefix("fd00:30::2/64")}},
					{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 9}, Name: contract.InterfaceName(1)},
				}, []Route{
					{Gateway: netip.MustParseAddr("172.30.0.1")},
					{Destination: netip.MustParsePrefix("10.50.0.0/16"), Gateway: netip.MustParseAddr("172.30.0.9"), Device: "eth0"},
					{Destination: netip.MustParsePrefix("192.168.7.0/24"), Device: "eth1"},
				})
			},
			wantReq: &agentapi.ConfigureNetworkRequest{
				Interfaces: []*agentapi.NetworkInterface{
					{Mac: "02:42:ac:1e:00:02", Name: "eth0", Mtu: 1400, Addresses: []string{"172.30.0.2/16", "fd00:30::2/64"}},
					{Mac: "02:00:00:00:00:09", Name: "eth1"},
				},
				Routes: []*agentapi.NetworkRoute{
					{Gateway: "172.30.0.1"},
					{Destination: "10.50.0.0/16", Gateway: "172.30.0.9", Device: "eth0"},
					{Destination: "192.168.7.0/24", Device: "eth1"},
				},
			},
		},
		{
			name:    "start",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.StartContainer(ctx, "c1") },
			wantReq: &agentapi.ContainerRequest{ContainerId: "c1"},
		},
		{
			name:    "remove",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.RemoveContainer(ctx, "c1") },
			wantReq: &agentapi.ContainerRequest{ContainerId: "c1"},
		},
		{
			name:    "pause",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.PauseContainer(ctx, "c1") },
			wantReq: &agentapi.ContainerRequest{ContainerId: "c1"},
		},
		{
			name:    "resume",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.ResumeContainer(ctx, "c1") },
			wantReq: &agentapi.ContainerRequest{ContainerId: "c1"},
		},
		{
			name:    "exec",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.ExecProcess(ctx, p, proc) },
			wantReq: &agentapi.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", OciProcess: procJSON},
		},
		{
			name:    "wait",
			call:    func(ctx context.Context, c *Client) (any, error) { return c.WaitProcess(ctx, p) },
			wantReq: &agentapi.ProcessRequest{ContainerId: "c1", ExecId: "e1"},
			want:    Exit{Status: 137, OOMKilled: true},
		},
		{
			name: "signal",
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.SignalProcess(ctx, p, syscall.SIGTERM)
			},
			wantReq: &agentapi.SignalProcessRequest{ContainerId: "c1", ExecId: "e1", Signal: 15},
		},
		{
			name:    "write",
			call:    func(ctx context.Context, c *Client) (any, error) { return c.WriteStdin(ctx, p, []byte("hello")) },
			wantReq: &agentapi.WriteStdinRequest{ContainerId: "c1", ExecId: "e1", Data: []byte("hello")},
			want:    3,
		},
		{
			name:    "close stdin",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.CloseStdin(ctx, p) },
			wantReq: &agentapi.ProcessRequest{ContainerId: "c1", ExecId: "e1"},
		},
		{
			name: "read stdout",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ReadStdout(ctx, Process{ContainerID: "c1"}, 4096, 10)
			},
			wantReq: &agentapi.ReadOutputRequest{ContainerId: "c1", MaxLen: 4096, Offset: 10},
			want:    Output{Data: []byte("out"), EOF: true},
		},
		{
			name:    "read stderr",
			call:    func(ctx context.Context, c *Client) (any, error) { return c.ReadStderr(ctx, p, 2, 0) },
			wantReq: &agentapi.ReadOutputRequest{ContainerId: "c1", ExecId: "e1", MaxLen: 2, Offset: 0},
			want:    Output{Data: []byte("ou")},
		},
		{
			name:    "resize",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.ResizeTty(ctx, p, 40, 120) },
			wantReq: &agentapi.ResizeTtyRequest{ContainerId: "c1", ExecId: "e1", Rows: 40, Cols: 120},
		},
		{
			name:    "shutdown",
			call:    func(ctx context.Context, c *Client) (any, error) { return nil, c.Shutdown(ctx) },
			wantReq: &agentapi.ShutdownRequest{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeAgent{
				health: &agentapi.HealthResponse{AgentVersion: "v1", KernelRelease: "6.1.0", Transport: contract.TransportSerial},
				wait:   &agentapi.WaitProcessResponse{ExitStatus: 137, OomKilled: true},
				write:  &agentapi.WriteStdinResponse{Len: 3},
				read: func(req *agentapi.ReadOutputRequest) *agentapi.ReadOutputResponse {
					data := []byte("out")[:min(3, int(req.MaxLen))]
					return &agentapi.ReadOutputResponse{Data: data, Eof: len(data) == 3, Offset: req.Offset}
				},
			}
			c := serve(t, fake)
			got, err := tt.call(ctxT(t), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("result = %#v, want %#v", got, tt.want)
			}
			reqs := fake.requests()
			if len(reqs) != 1 || !proto.Equal(reqs[0], tt.wantReq) {
				t.Errorf("agent got %v, want one %v", reqs, tt.wantReq)
			}
		})
	}
}

// TestClientErrors checks that errors from the agent arrive classified,
// with the agent's message as one line of text.
func TestClientErrors(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		class error // nil: unclassified
		text  string
	}{
		{"not found", status.Error(codes.NotFound, `exec: "nope": executable file not found in $PATH`), errdefs.ErrNotFound, `exec: "nope": executable file not found in $PATH`},
		{"permission", status.Error(codes.PermissionDenied, "exec: /etc: permission denied"), errdefs.ErrPermissionDenied, "exec: /etc: permission denied"},
		{"invalid", status.Error(codes.InvalidArgument, "bad spec"), errdefs.ErrInvalidArgument, "bad spec"},
		{"exists", status.Error(codes.AlreadyExists, `container "c1" already exists`), errdefs.ErrAlreadyExists, `container "c1" already exists`},
		{"state", status.Error(codes.FailedPrecondition, "not running"), errdefs.ErrFailedPrecondition, "not running"},
		{"unavailable", status.Error(codes.Unavailable, "busy"), errdefs.ErrUnavailable, "busy"},
		{"deadline", status.Error(codes.DeadlineExceeded, "x"), context.DeadlineExceeded, context.DeadlineExceeded.Error()},
		{"canceled", status.Error(codes.Canceled, "x"), context.Canceled, context.Canceled.Error()},
		{"internal", status.Error(codes.Internal, "agent error in Wait: boom"), nil, "agent error in Wait: boom"},
		{"multi-line", status.Error(codes.InvalidArgument, "bad\nspec\x1b[2J"), errdefs.ErrInvalidArgument, "bad spec [2J"},
		{"long", status.Error(codes.NotFound, strings.Repeat("é", maxMessage)), errdefs.ErrNotFound, strings.Repeat("é", maxMessage/2) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, &fakeAgent{err: tt.err})
			err := c.StartContainer(ctxT(t), "c1")
			if err == nil {
				t.Fatalf("StartContainer succeeded, want %v", tt.err)
			}
			if tt.class != nil && !errors.Is(err, tt.class) {
				t.Errorf("StartContainer = %v, want class %v", err, tt.class)
			}
			if tt.class == nil && (errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) || errdefs.IsUnavailable(err)) {
				t.Errorf("StartContainer = %v, want no class", err)
			}
			if err.Error() != tt.text {
				t.Errorf("StartContainer error text = %q, want %q", err.Error(), tt.text)
			}
		})
	}

	t.Run("closed", func(t *testing.T) {
		c := serve(t, &fakeAgent{})
		c.Close()
		if err := c.StartContainer(ctxT(t), "c1"); !errdefs.IsUnavailable(err) {
			t.Errorf("StartContainer on a closed client = %v, want unavailable", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c := serve(t, &fakeAgent{block: true})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.WaitProcess(ctx, Process{ContainerID: "c1"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitProcess past its deadline = %v, want %v", err, context.DeadlineExceeded)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		fake := &fakeAgent{}
		c := serve(t, fake)
		if err := c.SignalProcess(ctxT(t), Process{ContainerID: "c1"}, 0); err == nil {
			t.Errorf("SignalProcess(0) succeeded")
		}
		if _, err := c.ReadStdout(ctxT(t), Process{ContainerID: "c1"}, 0, 0); err == nil {
			t.Errorf("ReadStdout of 0 bytes succeeded")
		}
		for _, in := range []Interface{
			{Name: "eth0", MAC: net.HardwareAddr{1, 2, 3}},
			{Name: "eth0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 70000},
			{Name: "eth0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Addresses: []netip.Prefix{{}}},
		} {
			if err := c.ConfigureNetwork(ctxT(t), []Interface{in}, nil); err == nil {
				t.Errorf("ConfigureNetwork(%+v) succeeded", in)
			}
		}
		if n := len(fake.requests()); n != 0 {
			t.Errorf("bad arguments reached the agent (%d requests)", n)
		}
	})
}

// TestClientHostileAnswers checks that answers no agent keeping to the API
// gives fail the call instead of reaching the engine.
func TestClientHostileAnswers(t *testing.T) {
	p := Process{ContainerID: "c1"}
	read := func(data string, offset func(uint64) uint64) func(*agentapi.ReadOutputRequest) *agentapi.ReadOutputResponse {
		return func(req *agentapi.ReadOutputRequest) *agentapi.ReadOutputResponse {
			return &agentapi.ReadOutputResponse{Data: []byte(data), Offset: offset(req.Offset)}
		}
	}
	same := func(o uint64) uint64 { return o }
	tests := []struct {
		name string
		fake *fakeAgent
		call func(context.Context, *Client) error
	}{
		{"negative exit status", &fakeAgent{wait: &agentapi.WaitProcessResponse{ExitStatus: -1}},
			func(ctx context.Context, c *Client) error { _, err := c.WaitProcess(ctx, p); return err }},
		{"exit status over 255", &fakeAgent{wait: &agentapi.WaitProcessResponse{ExitStatus: 256}},
			func(ctx context.Context, c *Client) error { _, err := c.WaitProcess(ctx, p); return err }},
		{"wrote more than given", &fakeAgent{write: &agentapi.WriteStdinResponse{Len: 6}},
			func(ctx context.Context, c *Client) error {
				_, err := c.WriteStdin(ctx, p, []byte("hello"))
				return err
			}},
		{"read more than asked", &fakeAgent{read: read("12345", same)},
			func(ctx context.Context, c *Client) error { _, err := c.ReadStdout(ctx, p, 4, 0); return err }},
		{"read from another offset", &fakeAgent{read: read("x", func(o uint64) uint64 { return o + 7 })},
			func(ctx context.Context, c *Client) error { _, err := c.ReadStderr(ctx, p, 4, 3); return err }},
		{"read past the end of offsets", &fakeAgent{read: read("xy", same)},
			func(ctx context.Context, c *Client) error { _, err := c.ReadStdout(ctx, p, 4, 1<<64-1); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, tt.fake)
			err := tt.call(ctxT(t), c)
			if !errors.Is(err, ErrBadAnswer) || !errdefs.IsDataLoss(err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("call = %v, want a one-line ErrBadAnswer of class data loss", err)
			}
		})
	}
	// The edges are answers an agent may give.
	c := serve(t, &fakeAgent{wait: &agentapi.WaitProcessResponse{ExitStatus: 255}, read: read("1234", same)})
	if e, err := c.WaitProcess(ctxT(t), p); err != nil || e.Status != 255 {
		t.Errorf("WaitProcess with status 255 = %+v, %v", e, err)
	}
	if o, err := c.ReadStdout(ctxT(t), p, 4, 0); err != nil || string(o.Data) != "1234" {
		t.Errorf("ReadStdout of exactly max bytes = %+v, %v", o, err)
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a\nb\r\nc\td", "a b  c d"},
		{"bad \xff byte", "bad   byte"},
		{strings.Repeat("x", maxMessage+1), strings.Repeat("x", maxMessage) + "..."},
		// A cut inside a character backs up to its start.
		{strings.Repeat("x", maxMessage-1) + "é", strings.Repeat("x", maxMessage-1) + "..."},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%.20q...) = %.40q..., want %.40q...", tt.in, got, tt.want)
		}
	}
}

// An export is read in chunks to its end and dropped; one that claims more
// than the limit, or sends more than it claimed, fails and is dropped too.
func TestExportChanges(t *testing.T) {
	data := bytes.Repeat([]byte("layer"), 500_000) // 2.5 MB: three chunks
	fake := &fakeAgent{export: data}
	c := serve(t, fake)
	var got bytes.Buffer
	n, err := c.ExportChanges(context.Background(), "c1", true, &got, 10<<20)
	if err != nil || n != 3 || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("ExportChanges = %d, %v, %d bytes; want 3, nil, %d bytes", n, err, got.Len(), len(data))
	}
	drops := func() int {
		k := 0
		for _, r := range fake.requests() {
			if _, ok := r.(*agentapi.ExportRequest); ok {
				k++
			}
		}
		return k
	}
	if drops() != 1 {
		t.Errorf("%d DropExport calls, want 1", drops())
	}
	if _, err := c.ExportChanges(context.Background(), "c1", false, io.Discard, 1<<20); err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("export over the limit: %v", err)
	}
	fake.exportSize = 10 // claims 10 bytes, sends 2.5 MB
	if _, err := c.ExportChanges(context.Background(), "c1", false, io.Discard, 10<<20); err == nil {
		t.Error("an export larger than it claimed was accepted")
	}
	if drops() != 3 {
		t.Errorf("%d DropExport calls after the failures, want 3", drops())
	}
}

// A copy out reads the archive to its end; a copy in uploads in chunks
// at growing offsets, then extracts.
func TestCopyOutAndIn(t *testing.T) {
	data := bytes.Repeat([]byte("tar"), 700_000)
	fake := &fakeAgent{export: data}
	c := serve(t, fake)
	var got bytes.Buffer
	st, err := c.ArchivePath(context.Background(), "c1", "/etc", &got, 10<<20)
	if err != nil || st.Name != "f" || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("ArchivePath = %+v, %v, %d bytes", st, err, got.Len())
	}
	if err := c.CopyIn(context.Background(), "c1", "/tmp", bytes.NewReader(data), false, false); err != nil {
		t.Fatal(err)
	}
	var offs []uint64
	for _, r := range fake.requests() {
		if w, ok := r.(*agentapi.WriteUploadRequest); ok {
			offs = append(offs, w.Offset)
		}
	}
	if !bytes.Equal(fake.uploaded, data) || len(offs) != 3 || offs[1] != 1<<20 || offs[2] != 2<<20 {
		t.Errorf("uploaded %d bytes at offsets %v", len(fake.uploaded), offs)
	}
}

// TestClientRestored checks what a restored guest is told: a fresh seed of
// its own per call, the host's time, and each template address's NIC.
func TestClientRestored(t *testing.T) {
	fake := &fakeAgent{}
	c := serve(t, fake)
	macs := map[string]net.HardwareAddr{"02:76:6d:74:00:00": {2, 0x42, 0xac, 0x1e, 0, 2}}
	for range 2 {
		if err := c.Restored(ctxT(t), macs); err != nil {
			t.Fatal(err)
		}
	}
	reqs := fake.requests()
	if len(reqs) != 2 {
		t.Fatalf("agent got %d requests, want 2", len(reqs))
	}
	var seeds [][]byte
	for _, r := range reqs {
		req := r.(*agentapi.RestoredRequest)
		if len(req.GetSeed()) != restoredSeedBytes {
			t.Errorf("seed of %d bytes, want %d", len(req.GetSeed()), restoredSeedBytes)
		}
		seeds = append(seeds, req.GetSeed())
		if d := time.Since(time.Unix(0, req.GetUnixNanos())); d < 0 || d > 5*time.Second {
			t.Errorf("time %v away from now", d)
		}
		want := []*agentapi.MACChange{{From: "02:76:6d:74:00:00", To: "02:42:ac:1e:00:02"}}
		if len(req.GetMacs()) != 1 || !proto.Equal(req.GetMacs()[0], want[0]) {
			t.Errorf("macs = %v, want %v", req.GetMacs(), want)
		}
	}
	if bytes.Equal(seeds[0], seeds[1]) {
		t.Error("two calls sent the same seed")
	}
}
