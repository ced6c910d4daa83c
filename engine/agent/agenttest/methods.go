package agenttest

// The agent API's methods, each with its garbage, huge and valid answers.

import (
	"context"
	"math"
	"math/rand/v2"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

// empty is the shapes of the calls whose success says nothing.
var empty = shapes[*agentapi.Empty]{
	garbage: func(r *rand.Rand) (*agentapi.Empty, error) {
		if r.IntN(3) == 0 {
			return garbageFields(r, &agentapi.Empty{}), nil
		}
		return nil, garbageStatus(r)
	},
	huge: func(n int) (*agentapi.Empty, error) {
		if n%2 == 0 {
			return withMillionFields(&agentapi.Empty{}), nil
		}
		return nil, status.Error(codes.Internal, hugeText(3<<20))
	},
	valid: func() (*agentapi.Empty, error) { return &agentapi.Empty{}, nil },
}

func (a *Agent) Health(ctx context.Context, req *agentapi.HealthRequest) (*agentapi.HealthResponse, error) {
	return answer(ctx, a, "Health", shapes[*agentapi.HealthResponse]{
		garbage: func(r *rand.Rand) (*agentapi.HealthResponse, error) {
			if r.IntN(4) == 0 {
				return nil, garbageStatus(r)
			}
			return garbageFields(r, &agentapi.HealthResponse{
				AgentVersion: garbageString(r, 4096), KernelRelease: garbageString(r, 4096), Transport: garbageString(r, 64),
			}), nil
		},
		huge: func(int) (*agentapi.HealthResponse, error) {
			return &agentapi.HealthResponse{AgentVersion: hugeText(1 << 20), KernelRelease: hugeText(1 << 20), Transport: hugeText(1 << 20)}, nil
		},
		valid: func() (*agentapi.HealthResponse, error) {
			return &agentapi.HealthResponse{AgentVersion: "agenttest", KernelRelease: "6.1.0", Transport: contract.TransportVsock}, nil
		},
	})
}

func (a *Agent) ConfigureNetwork(ctx context.Context, _ *agentapi.ConfigureNetworkRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "ConfigureNetwork", empty)
}

func (a *Agent) CreateContainer(ctx context.Context, _ *agentapi.CreateContainerRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "CreateContainer", empty)
}

func (a *Agent) StartContainer(ctx context.Context, _ *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "StartContainer", empty)
}

func (a *Agent) RemoveContainer(ctx context.Context, _ *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "RemoveContainer", empty)
}

func (a *Agent) PauseContainer(ctx context.Context, _ *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "PauseContainer", empty)
}

func (a *Agent) ResumeContainer(ctx context.Context, _ *agentapi.ContainerRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "ResumeContainer", empty)
}

func (a *Agent) ExecProcess(ctx context.Context, _ *agentapi.ExecProcessRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "ExecProcess", empty)
}

func (a *Agent) WaitProcess(ctx context.Context, _ *agentapi.ProcessRequest) (*agentapi.WaitProcessResponse, error) {
	return answer(ctx, a, "WaitProcess", shapes[*agentapi.WaitProcessResponse]{
		garbage: func(r *rand.Rand) (*agentapi.WaitProcessResponse, error) {
			if r.IntN(4) == 0 {
				return nil, garbageStatus(r)
			}
			st := []int32{-1, math.MinInt32, 256, math.MaxInt32, int32(r.Uint32())}[r.IntN(5)]
			return garbageFields(r, &agentapi.WaitProcessResponse{ExitStatus: st, OomKilled: r.IntN(2) == 0}), nil
		},
		huge: func(int) (*agentapi.WaitProcessResponse, error) {
			return withMillionFields(&agentapi.WaitProcessResponse{ExitStatus: math.MaxInt32, OomKilled: true}), nil
		},
		valid: func() (*agentapi.WaitProcessResponse, error) { return &agentapi.WaitProcessResponse{}, nil },
	})
}

func (a *Agent) SignalProcess(ctx context.Context, _ *agentapi.SignalProcessRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "SignalProcess", empty)
}

func (a *Agent) WriteStdin(ctx context.Context, req *agentapi.WriteStdinRequest) (*agentapi.WriteStdinResponse, error) {
	given := uint32(len(req.GetData()))
	return answer(ctx, a, "WriteStdin", shapes[*agentapi.WriteStdinResponse]{
		garbage: func(r *rand.Rand) (*agentapi.WriteStdinResponse, error) {
			if r.IntN(4) == 0 {
				return nil, garbageStatus(r)
			}
			n := []uint32{given + 1, math.MaxUint32, r.Uint32()}[r.IntN(3)]
			return garbageFields(r, &agentapi.WriteStdinResponse{Len: n}), nil
		},
		huge: func(int) (*agentapi.WriteStdinResponse, error) {
			return withMillionFields(&agentapi.WriteStdinResponse{Len: math.MaxUint32}), nil
		},
		valid: func() (*agentapi.WriteStdinResponse, error) { return &agentapi.WriteStdinResponse{Len: given}, nil },
	})
}

func (a *Agent) CloseStdin(ctx context.Context, _ *agentapi.ProcessRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "CloseStdin", empty)
}

// output is the shapes of ReadStdout and ReadStderr.
func output(req *agentapi.ReadOutputRequest) shapes[*agentapi.ReadOutputResponse] {
	off, max := req.GetOffset(), int(req.GetMaxLen())
	return shapes[*agentapi.ReadOutputResponse]{
		garbage: func(r *rand.Rand) (*agentapi.ReadOutputResponse, error) {
			if r.IntN(5) == 0 {
				return nil, garbageStatus(r)
			}
			// Before the offset asked for (wrapping at 0), past it, at
			// the end of all offsets, or at it.
			at := []uint64{off - 1, off + 1 + uint64(r.IntN(1<<20)), math.MaxUint64, off}[r.IntN(4)]
			n := r.IntN(min(2*max+2, 1<<20))
			return garbageFields(r, &agentapi.ReadOutputResponse{Data: garbageBytes(r, n+1), Offset: at, Eof: r.IntN(2) == 0}), nil
		},
		huge: func(int) (*agentapi.ReadOutputResponse, error) {
			return &agentapi.ReadOutputResponse{Data: hugeBlob(), Offset: off}, nil
		},
		valid: func() (*agentapi.ReadOutputResponse, error) {
			return &agentapi.ReadOutputResponse{Offset: off, Eof: true}, nil
		},
	}
}

func (a *Agent) ReadStdout(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	return answer(ctx, a, "ReadStdout", output(req))
}

func (a *Agent) ReadStderr(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	return answer(ctx, a, "ReadStderr", output(req))
}

func (a *Agent) ResizeTty(ctx context.Context, _ *agentapi.ResizeTtyRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "ResizeTty", empty)
}

func (a *Agent) ExportChanges(ctx context.Context, _ *agentapi.ExportChangesRequest) (*agentapi.ExportChangesResponse, error) {
	return answer(ctx, a, "ExportChanges", shapes[*agentapi.ExportChangesResponse]{
		garbage: func(r *rand.Rand) (*agentapi.ExportChangesResponse, error) {
			if r.IntN(4) == 0 {
				return nil, garbageStatus(r)
			}
			return garbageFields(r, &agentapi.ExportChangesResponse{
				ExportId: garbageString(r, 256), Size: garbageUint64(r), Entries: r.Uint32(),
			}), nil
		},
		huge: func(int) (*agentapi.ExportChangesResponse, error) {
			return &agentapi.ExportChangesResponse{ExportId: hugeText(2 << 20), Size: math.MaxUint64, Entries: math.MaxUint32}, nil
		},
		valid: func() (*agentapi.ExportChangesResponse, error) {
			return &agentapi.ExportChangesResponse{ExportId: "0123456789abcdef"}, nil
		},
	})
}

func (a *Agent) ReadExport(ctx context.Context, req *agentapi.ReadExportRequest) (*agentapi.ReadExportResponse, error) {
	max := int(req.GetMaxLen())
	return answer(ctx, a, "ReadExport", shapes[*agentapi.ReadExportResponse]{
		garbage: func(r *rand.Rand) (*agentapi.ReadExportResponse, error) {
			if r.IntN(5) == 0 {
				return nil, garbageStatus(r)
			}
			n := r.IntN(min(2*max+2, 2<<20))
			return garbageFields(r, &agentapi.ReadExportResponse{Data: garbageBytes(r, n+1), Eof: r.IntN(2) == 0}), nil
		},
		huge: func(int) (*agentapi.ReadExportResponse, error) {
			return &agentapi.ReadExportResponse{Data: hugeBlob()}, nil
		},
		valid: func() (*agentapi.ReadExportResponse, error) { return &agentapi.ReadExportResponse{Eof: true}, nil },
	})
}

func (a *Agent) DropExport(ctx context.Context, _ *agentapi.ExportRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "DropExport", empty)
}

func garbagePathStat(r *rand.Rand) *agentapi.PathStat {
	return garbageFields(r, &agentapi.PathStat{
		Name: garbageString(r, 1024), Size: int64(garbageUint64(r)), Mode: r.Uint32(),
		MtimeUnixNano: int64(garbageUint64(r)), LinkTarget: garbageString(r, 8192),
	})
}

func hugePathStat() *agentapi.PathStat {
	return &agentapi.PathStat{Name: hugeText(2 << 20), Size: math.MaxInt64, Mode: math.MaxUint32,
		MtimeUnixNano: math.MinInt64, LinkTarget: hugeText(3 << 19)}
}

func (a *Agent) StatPath(ctx context.Context, _ *agentapi.PathRequest) (*agentapi.PathStat, error) {
	return answer(ctx, a, "StatPath", shapes[*agentapi.PathStat]{
		garbage: func(r *rand.Rand) (*agentapi.PathStat, error) {
			if r.IntN(4) == 0 {
				return nil, garbageStatus(r)
			}
			return garbagePathStat(r), nil
		},
		huge:  func(int) (*agentapi.PathStat, error) { return hugePathStat(), nil },
		valid: func() (*agentapi.PathStat, error) { return &agentapi.PathStat{Name: "f"}, nil },
	})
}

func (a *Agent) ArchivePath(ctx context.Context, _ *agentapi.PathRequest) (*agentapi.ArchivePathResponse, error) {
	return answer(ctx, a, "ArchivePath", shapes[*agentapi.ArchivePathResponse]{
		garbage: func(r *rand.Rand) (*agentapi.ArchivePathResponse, error) {
			if r.IntN(4) == 0 {
				return nil, garbageStatus(r)
			}
			resp := &agentapi.ArchivePathResponse{ExportId: garbageString(r, 256), Size: garbageUint64(r)}
			if r.IntN(3) > 0 {
				resp.Stat = garbagePathStat(r)
			}
			return garbageFields(r, resp), nil
		},
		huge: func(int) (*agentapi.ArchivePathResponse, error) {
			st := hugePathStat()
			st.Name, st.LinkTarget = hugeText(1<<20), hugeText(1<<20)
			return &agentapi.ArchivePathResponse{ExportId: hugeText(1 << 20), Size: math.MaxUint64, Stat: st}, nil
		},
		valid: func() (*agentapi.ArchivePathResponse, error) {
			return &agentapi.ArchivePathResponse{ExportId: "0123456789abcdef", Stat: &agentapi.PathStat{Name: "f"}}, nil
		},
	})
}

func (a *Agent) WriteUpload(ctx context.Context, _ *agentapi.WriteUploadRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "WriteUpload", empty)
}

func (a *Agent) ExtractUpload(ctx context.Context, _ *agentapi.ExtractUploadRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "ExtractUpload", empty)
}

func (a *Agent) Shutdown(ctx context.Context, _ *agentapi.ShutdownRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "Shutdown", empty)
}
