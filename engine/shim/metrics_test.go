package shim

import (
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/task"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/vmctl/vmctl/engine/agent"
)

// memoryStatKeys are the memory.stat keys the metrics carry, each with a
// value of its own below.
var memoryStatKeys = []string{
	"anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback",
	"anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
	"slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
	"workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate",
	"pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
}

// fullStats has every field and every known key set, each to a value no
// other has, so that a field mapped from the wrong source shows.
func fullStats() agent.Stats {
	stat := map[string]uint64{}
	for i, k := range memoryStatKeys {
		stat[k] = 1000 + uint64(i)
	}
	// Keys the metrics have no field for are left out.
	stat["zswap"] = 99999
	return agent.Stats{
		Time: time.Unix(1_700_000_000, 0),
		CPU:  agent.CPUStats{UsageUsec: 11, UserUsec: 12, SystemUsec: 13, NrPeriods: 14, NrThrottled: 15, ThrottledUsec: 16},
		Memory: agent.MemoryStats{
			Usage: 21, Limit: 22, Peak: 23, SwapUsage: 24, SwapLimit: 25, Stat: stat,
			Events: map[string]uint64{"low": 31, "high": 32, "max": 33, "oom": 34, "oom_kill": 35},
		},
		Pids: agent.PidsStats{Current: 41, Limit: 42},
		IO: []agent.IOStats{
			{Major: 254, Minor: 1, ReadBytes: 51, WriteBytes: 52, ReadIOs: 53, WriteIOs: 54},
			{Major: 254, Minor: 16, ReadBytes: 55, WriteBytes: 56, ReadIOs: 57, WriteIOs: 58},
		},
		Networks: []agent.NetworkStats{
			{Name: "eth0", RxBytes: 61, RxPackets: 62, RxErrors: 63, RxDropped: 64, TxBytes: 65, TxPackets: 66, TxErrors: 67, TxDropped: 68},
			{Name: "eth1", RxBytes: 71, RxPackets: 72, RxErrors: 73, RxDropped: 74, TxBytes: 75, TxPackets: 76, TxErrors: 77, TxDropped: 78},
		},
		SystemCPU: 5 * time.Second, OnlineCPUs: 2, GuestMemory: 192 << 20,
	}
}

func TestCgroupMetrics(t *testing.T) {
	got := cgroupMetrics(fullStats())
	want := &stats.Metrics{
		Pids: &stats.PidsStat{Current: 41, Limit: 42},
		CPU:  &stats.CPUStat{UsageUsec: 11, UserUsec: 12, SystemUsec: 13, NrPeriods: 14, NrThrottled: 15, ThrottledUsec: 16},
		Memory: &stats.MemoryStat{
			Usage: 21, UsageLimit: 22, MaxUsage: 23, SwapUsage: 24, SwapLimit: 25,
			Anon: 1000, File: 1001, KernelStack: 1002, Slab: 1003, Sock: 1004, Shmem: 1005, FileMapped: 1006,
			FileDirty: 1007, FileWriteback: 1008, AnonThp: 1009, InactiveAnon: 1010, ActiveAnon: 1011,
			InactiveFile: 1012, ActiveFile: 1013, Unevictable: 1014, SlabReclaimable: 1015, SlabUnreclaimable: 1016,
			Pgfault: 1017, Pgmajfault: 1018, WorkingsetRefault: 1019, WorkingsetActivate: 1020,
			WorkingsetNodereclaim: 1021, Pgrefill: 1022, Pgscan: 1023, Pgsteal: 1024, Pgactivate: 1025,
			Pgdeactivate: 1026, Pglazyfree: 1027, Pglazyfreed: 1028, ThpFaultAlloc: 1029, ThpCollapseAlloc: 1030,
		},
		MemoryEvents: &stats.MemoryEvents{Low: 31, High: 32, Max: 33, Oom: 34, OomKill: 35},
		Io: &stats.IOStat{Usage: []*stats.IOEntry{
			{Major: 254, Minor: 1, Rbytes: 51, Wbytes: 52, Rios: 53, Wios: 54},
			{Major: 254, Minor: 16, Rbytes: 55, Wbytes: 56, Rios: 57, Wios: 58},
		}},
		Network: []*stats.NetworkStat{
			{Name: "eth0", RxBytes: 61, RxPackets: 62, RxErrors: 63, RxDropped: 64, TxBytes: 65, TxPackets: 66, TxErrors: 67, TxDropped: 68},
			{Name: "eth1", RxBytes: 71, RxPackets: 72, RxErrors: 73, RxDropped: 74, TxBytes: 75, TxPackets: 76, TxErrors: 77, TxDropped: 78},
		},
	}
	if !proto.Equal(got, want) {
		t.Errorf("cgroupMetrics =\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
	}

	// Every field of the metrics is set, but those the guest has no
	// source for: a field added to the metrics, or to the mapping, shows.
	noSource := map[protoreflect.FullName]bool{
		"io.containerd.cgroups.v2.Metrics.rdma":                true,
		"io.containerd.cgroups.v2.Metrics.hugetlb":             true,
		"io.containerd.cgroups.v2.CPUStat.psi":                 true,
		"io.containerd.cgroups.v2.CPUStat.nr_bursts":           true,
		"io.containerd.cgroups.v2.CPUStat.burst_usec":          true,
		"io.containerd.cgroups.v2.MemoryStat.psi":              true,
		"io.containerd.cgroups.v2.MemoryStat.swap_max_usage":   true,
		"io.containerd.cgroups.v2.MemoryEvents.oom_group_kill": true,
		"io.containerd.cgroups.v2.IOStat.psi":                  true,
	}
	var unset []protoreflect.FullName
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		fields := m.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			if noSource[fd.FullName()] {
				continue
			}
			if !m.Has(fd) {
				unset = append(unset, fd.FullName())
				continue
			}
			switch {
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for j := 0; j < m.Get(fd).List().Len(); j++ {
					walk(m.Get(fd).List().Get(j).Message())
				}
			case fd.Kind() == protoreflect.MessageKind:
				walk(m.Get(fd).Message())
			}
		}
	}
	walk(got.ProtoReflect())
	if len(unset) > 0 {
		t.Errorf("cgroupMetrics leaves unset: %v", unset)
	}
}

// A guest's maps with keys missing (an older kernel's memory.stat, no
// memory.events at all) give zeros, and empty lists give none.
func TestCgroupMetricsMissingKeys(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   agent.Stats
	}{
		{"zero stats", agent.Stats{}},
		{"empty maps", agent.Stats{Memory: agent.MemoryStats{Stat: map[string]uint64{}, Events: map[string]uint64{}}}},
		{"unknown keys alone", agent.Stats{Memory: agent.MemoryStats{
			Stat: map[string]uint64{"zswapped": 5, "hugetlb": 6}, Events: map[string]uint64{"oom_group_kill": 7},
		}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := cgroupMetrics(tt.in)
			want := &stats.Metrics{
				Pids: &stats.PidsStat{}, CPU: &stats.CPUStat{}, Memory: &stats.MemoryStat{},
				MemoryEvents: &stats.MemoryEvents{}, Io: &stats.IOStat{},
			}
			if !proto.Equal(got, want) {
				t.Errorf("cgroupMetrics =\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
			}
		})
	}

	// Some keys present, the others zero.
	in := agent.Stats{Memory: agent.MemoryStats{
		Usage: 8 << 20,
		Stat:  map[string]uint64{"anon": 4 << 20, "inactive_file": 1 << 20},
		// memory.events without oom_kill, as a kernel before 4.13 has it.
		Events: map[string]uint64{"oom": 2},
	}}
	got := cgroupMetrics(in)
	want := &stats.MemoryStat{Usage: 8 << 20, Anon: 4 << 20, InactiveFile: 1 << 20}
	if !proto.Equal(got.Memory, want) {
		t.Errorf("cgroupMetrics memory = %v, want %v", got.Memory, want)
	}
	if e := got.MemoryEvents; !proto.Equal(e, &stats.MemoryEvents{Oom: 2}) {
		t.Errorf("cgroupMetrics memory events = %v, want oom 2 and zeros", e)
	}
}

func TestProcessInfos(t *testing.T) {
	got := processInfos([]agent.ProcessInfo{
		{Pid: 40, PPid: 1, ContainerPid: 1, User: "root"},
		{Pid: 41, PPid: 40, ContainerPid: 7, ContainerPPid: 1, User: "root"},
		{Pid: 45, PPid: 1, ContainerPid: 12, User: "nobody"},
	})
	// By their pids in the container, as ps inside it shows them; in the
	// agent's order.
	want := []*task.ProcessInfo{{Pid: 1}, {Pid: 7}, {Pid: 12}}
	if len(got) != len(want) {
		t.Fatalf("processInfos = %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("processInfos[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if got := processInfos(nil); got == nil || len(got) != 0 {
		t.Errorf("processInfos(nil) = %#v, want an empty list", got)
	}
}
