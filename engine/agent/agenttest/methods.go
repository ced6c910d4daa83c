package agenttest

// The agent API's methods, each with its garbage, huge and valid answers.

import (
	"context"
	"fmt"
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

func (a *Agent) Restored(ctx context.Context, _ *agentapi.RestoredRequest) (*agentapi.Empty, error) {
	return answer(ctx, a, "Restored", empty)
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

// garbageCount is a count around a bound: below it, at it, just past it,
// or far past it.
func garbageCount(r *rand.Rand, bound int) int {
	switch r.IntN(4) {
	case 0:
		return bound
	case 1:
		return bound + 1
	case 2:
		return bound + r.IntN(4*bound)
	}
	return r.IntN(bound/4 + 2)
}

func garbageProcess(r *rand.Rand) *agentapi.ProcessInfo {
	p := &agentapi.ProcessInfo{
		Pid: []uint32{0, 1, math.MaxUint32, r.Uint32()}[r.IntN(4)], Ppid: r.Uint32(),
		ContainerPid: r.Uint32(), ContainerPpid: r.Uint32(), Uid: r.Uint32(), Gid: r.Uint32(),
		User: garbageString(r, 256), State: garbageString(r, 4),
		StartTimeUnixNano: int64(garbageUint64(r)), CpuTimeNanos: garbageUint64(r),
		Tty: garbageString(r, 128), Comm: garbageString(r, 128), Threads: r.Uint32(),
		VszBytes: garbageUint64(r), RssBytes: garbageUint64(r),
	}
	for range garbageCount(r, contract.MaxProcessArgs) % 200 {
		p.Args = append(p.Args, garbageString(r, 256))
	}
	return p
}

func (a *Agent) ListProcesses(ctx context.Context, _ *agentapi.ContainerRequest) (*agentapi.ListProcessesResponse, error) {
	return answer(ctx, a, "ListProcesses", shapes[*agentapi.ListProcessesResponse]{
		garbage: func(r *rand.Rand) (*agentapi.ListProcessesResponse, error) {
			if r.IntN(5) == 0 {
				return nil, garbageStatus(r)
			}
			resp := &agentapi.ListProcessesResponse{TimeUnixNano: int64(garbageUint64(r))}
			// Mostly few processes (each one has many ways to be wrong),
			// sometimes more than the contract allows.
			n := r.IntN(8)
			if r.IntN(6) == 0 {
				n = garbageCount(r, contract.MaxListedProcesses)
			}
			for range n {
				resp.Processes = append(resp.Processes, garbageProcess(r))
			}
			return garbageFields(r, resp), nil
		},
		huge: func(n int) (*agentapi.ListProcessesResponse, error) {
			switch n % 3 {
			case 0:
				// Ten times the processes the contract allows, each small.
				resp := &agentapi.ListProcessesResponse{}
				for i := range 10 * contract.MaxListedProcesses {
					resp.Processes = append(resp.Processes, &agentapi.ProcessInfo{Pid: uint32(i + 1), State: "S", Comm: "x"})
				}
				return resp, nil
			case 1:
				// One process whose argv is megabytes.
				return &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
					{Pid: 1, State: "S", Comm: "sh", Args: []string{hugeText(3 << 20)}},
				}}, nil
			}
			return withMillionFields(&agentapi.ListProcessesResponse{}), nil
		},
		valid: func() (*agentapi.ListProcessesResponse, error) {
			const now = int64(1_700_000_000) * 1e9
			return &agentapi.ListProcessesResponse{TimeUnixNano: now, Processes: []*agentapi.ProcessInfo{
				{Pid: 40, Ppid: 1, ContainerPid: 1, User: "root", State: "S", StartTimeUnixNano: now - 5e9,
					CpuTimeNanos: 1e7, Comm: "sh", Args: []string{"sh", "-c", "sleep 1000 & wait"}, Threads: 1, VszBytes: 1 << 20, RssBytes: 1 << 16},
				{Pid: 41, Ppid: 40, ContainerPid: 2, ContainerPpid: 1, User: "root", State: "S", StartTimeUnixNano: now - 4e9,
					Comm: "sleep", Args: []string{"sleep", "1000"}, Threads: 1},
			}}, nil
		},
	})
}

func garbageKeys(r *rand.Rand) map[string]uint64 {
	m := map[string]uint64{}
	n := r.IntN(8)
	if r.IntN(4) == 0 {
		n = garbageCount(r, contract.MaxMemoryStatKeys)
	}
	for i := range n {
		k := garbageString(r, 2*contract.MaxStatKeyLen)
		if r.IntN(2) == 0 {
			k = fmt.Sprintf("key_%d", i)
		}
		m[k] = garbageUint64(r)
	}
	return m
}

func (a *Agent) Stats(ctx context.Context, _ *agentapi.ContainerRequest) (*agentapi.StatsResponse, error) {
	return answer(ctx, a, "Stats", shapes[*agentapi.StatsResponse]{
		garbage: func(r *rand.Rand) (*agentapi.StatsResponse, error) {
			if r.IntN(5) == 0 {
				return nil, garbageStatus(r)
			}
			resp := &agentapi.StatsResponse{
				TimeUnixNano: int64(garbageUint64(r)), SystemCpuNanos: garbageUint64(r), OnlineCpus: r.Uint32(),
				GuestMemoryBytes: garbageUint64(r), IoWholeGuest: r.IntN(2) == 0,
			}
			if r.IntN(4) > 0 {
				resp.Cpu = &agentapi.CPUStats{UsageUsec: garbageUint64(r), UserUsec: garbageUint64(r), SystemUsec: garbageUint64(r),
					NrPeriods: garbageUint64(r), NrThrottled: garbageUint64(r), ThrottledUsec: garbageUint64(r)}
			}
			if r.IntN(4) > 0 {
				resp.Memory = &agentapi.MemoryStats{Usage: garbageUint64(r), Limit: garbageUint64(r), Peak: garbageUint64(r),
					SwapUsage: garbageUint64(r), SwapLimit: garbageUint64(r), Stat: garbageKeys(r), Events: garbageKeys(r)}
			}
			if r.IntN(4) > 0 {
				resp.Pids = &agentapi.PidsStats{Current: garbageUint64(r), Limit: garbageUint64(r)}
			}
			for range r.IntN(4) {
				n := r.IntN(3)
				if r.IntN(3) == 0 {
					n = garbageCount(r, contract.MaxIODevices)
				}
				for range n {
					resp.Io = append(resp.Io, &agentapi.IODeviceStats{Major: r.Uint32(), Minor: r.Uint32(),
						ReadBytes: garbageUint64(r), WriteBytes: garbageUint64(r), ReadIos: garbageUint64(r), WriteIos: garbageUint64(r)})
				}
				n = r.IntN(3)
				if r.IntN(3) == 0 {
					n = garbageCount(r, contract.MaxNetworkInterfaces)
				}
				for range n {
					name := garbageString(r, 32)
					if r.IntN(3) == 0 {
						name = "eth0" // duplicates
					}
					resp.Networks = append(resp.Networks, &agentapi.NetworkStats{Name: name,
						RxBytes: garbageUint64(r), TxBytes: garbageUint64(r), RxPackets: garbageUint64(r), TxDropped: garbageUint64(r)})
				}
			}
			return garbageFields(r, resp), nil
		},
		huge: func(n int) (*agentapi.StatsResponse, error) {
			switch n % 3 {
			case 0:
				// A memory.stat of a hundred thousand keys.
				stat := make(map[string]uint64, 100_000)
				for i := range 100_000 {
					stat[fmt.Sprintf("key_%d", i)] = uint64(i)
				}
				return &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Stat: stat}}, nil
			case 1:
				return &agentapi.StatsResponse{Networks: []*agentapi.NetworkStats{{Name: hugeText(3 << 20)}}}, nil
			}
			return withMillionFields(&agentapi.StatsResponse{}), nil
		},
		valid: func() (*agentapi.StatsResponse, error) {
			return &agentapi.StatsResponse{
				TimeUnixNano: int64(1_700_000_000) * 1e9,
				Cpu:          &agentapi.CPUStats{UsageUsec: 1500, UserUsec: 1000, SystemUsec: 500},
				Memory: &agentapi.MemoryStats{Usage: 8 << 20, Limit: 64 << 20,
					Stat: map[string]uint64{"anon": 4 << 20, "inactive_file": 1 << 20}, Events: map[string]uint64{"oom": 0}},
				Pids:           &agentapi.PidsStats{Current: 3, Limit: 100},
				Io:             []*agentapi.IODeviceStats{{Major: 254, Minor: 0, ReadBytes: 4096, ReadIos: 1}},
				Networks:       []*agentapi.NetworkStats{{Name: "eth0", RxBytes: 100, TxBytes: 50}},
				SystemCpuNanos: 5e9, OnlineCpus: 1, GuestMemoryBytes: 192 << 20,
			}, nil
		},
	})
}
