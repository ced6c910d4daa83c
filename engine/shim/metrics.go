package shim

import (
	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/task"

	"github.com/vmctl/vmctl/engine/agent"
)

// cgroupMetrics converts the agent's statistics to the cgroup v2 metrics
// containerd's clients decode (io.containerd.cgroups.v2.Metrics: `ctr task
// metrics`, CRI's container stats). They are the container's cgroup in the
// guest.
func cgroupMetrics(st agent.Stats) *stats.Metrics {
	m := st.Memory.Stat
	metrics := &stats.Metrics{
		Pids: &stats.PidsStat{Current: st.Pids.Current, Limit: st.Pids.Limit},
		CPU: &stats.CPUStat{
			UsageUsec: st.CPU.UsageUsec, UserUsec: st.CPU.UserUsec, SystemUsec: st.CPU.SystemUsec,
			NrPeriods: st.CPU.NrPeriods, NrThrottled: st.CPU.NrThrottled, ThrottledUsec: st.CPU.ThrottledUsec,
		},
		Memory: &stats.MemoryStat{
			Usage: st.Memory.Usage, UsageLimit: st.Memory.Limit, MaxUsage: st.Memory.Peak,
			SwapUsage: st.Memory.SwapUsage, SwapLimit: st.Memory.SwapLimit,
			Anon: m["anon"], File: m["file"], KernelStack: m["kernel_stack"], Slab: m["slab"], Sock: m["sock"],
			Shmem: m["shmem"], FileMapped: m["file_mapped"], FileDirty: m["file_dirty"], FileWriteback: m["file_writeback"],
			AnonThp: m["anon_thp"], InactiveAnon: m["inactive_anon"], ActiveAnon: m["active_anon"],
			InactiveFile: m["inactive_file"], ActiveFile: m["active_file"], Unevictable: m["unevictable"],
			SlabReclaimable: m["slab_reclaimable"], SlabUnreclaimable: m["slab_unreclaimable"],
			Pgfault: m["pgfault"], Pgmajfault: m["pgmajfault"], WorkingsetRefault: m["workingset_refault"],
			WorkingsetActivate: m["workingset_activate"], WorkingsetNodereclaim: m["workingset_nodereclaim"],
			Pgrefill: m["pgrefill"], Pgscan: m["pgscan"], Pgsteal: m["pgsteal"], Pgactivate: m["pgactivate"],
			Pgdeactivate: m["pgdeactivate"], Pglazyfree: m["pglazyfree"], Pglazyfreed: m["pglazyfreed"],
			ThpFaultAlloc: m["thp_fault_alloc"], ThpCollapseAlloc: m["thp_collapse_alloc"],
		},
		MemoryEvents: &stats.MemoryEvents{
			Low: st.Memory.Events["low"], High: st.Memory.Events["high"], Max: st.Memory.Events["max"],
			Oom: st.Memory.Events["oom"], OomKill: st.Memory.Events["oom_kill"],
		},
		Io: &stats.IOStat{},
	}
	for _, d := range st.IO {
		metrics.Io.Usage = append(metrics.Io.Usage, &stats.IOEntry{
			Major: uint64(d.Major), Minor: uint64(d.Minor),
			Rbytes: d.ReadBytes, Wbytes: d.WriteBytes, Rios: d.ReadIOs, Wios: d.WriteIOs,
		})
	}
	for _, n := range st.Networks {
		metrics.Network = append(metrics.Network, &stats.NetworkStat{
			Name:    n.Name,
			RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped,
		})
	}
	return metrics
}

// processInfos lists the container's processes by their pids in the
// container's pid namespace, as `ps` inside it shows them.
func processInfos(procs []agent.ProcessInfo) []*task.ProcessInfo {
	out := make([]*task.ProcessInfo, 0, len(procs))
	for _, p := range procs {
		out = append(out, &task.ProcessInfo{Pid: uint32(p.ContainerPid)})
	}
	return out
}
