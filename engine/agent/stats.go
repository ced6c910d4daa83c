package agent

import (
	"context"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

// Stats is a running container's resource statistics as its guest read
// them: its cgroup v2 files (cpu, memory, pids, io), the guest's own CPU
// time, and the counters of the container's network namespace. Counters
// are cumulative since the container started (the CPU time of the guest
// since it booted); a rate is the difference of two samples. It holds
// what docker stats shows and what containerd's cgroups v2 metrics carry.
type Stats struct {
	// Time is when the answer came, on the host's clock.
	Time   time.Time
	CPU    CPUStats
	Memory MemoryStats
	Pids   PidsStats
	// IO is one entry per block device, from the cgroup's io.stat; or,
	// with IOWholeGuest, from the guest's disks' own counters (the guest
	// kernel has no io controller): then it is the whole VM's I/O, which
	// is the container's and little else (its agent, its mounts).
	IO           []IOStats
	IOWholeGuest bool
	// Networks are the interfaces of the container's network namespace,
	// lo left out: the VM's NICs (eth0...) for a container on a network,
	// none for --network none.
	Networks []NetworkStats
	// SystemCPU is the CPU time of the whole guest, every CPU, busy or
	// idle (/proc/stat's cpu line, as dockerd's system_cpu_usage), and
	// OnlineCPUs the guest's CPUs: a container's CPU share between two
	// samples is ΔCPU.Usage / ΔSystemCPU × OnlineCPUs.
	SystemCPU  time.Duration
	OnlineCPUs int
	// GuestMemory is the guest's RAM (MemTotal).
	GuestMemory uint64
}

// CPUStats is the cgroup's cpu.stat.
type CPUStats struct {
	// UsageUsec, UserUsec and SystemUsec are the CPU time the container
	// used, in all and in user and kernel mode, in microseconds.
	UsageUsec, UserUsec, SystemUsec uint64
	// NrPeriods, NrThrottled and ThrottledUsec are the CFS bandwidth
	// periods (of --cpus), those in which it was throttled, and the time
	// it was.
	NrPeriods, NrThrottled, ThrottledUsec uint64
}

// Usage is UsageUsec as a duration.
func (c CPUStats) Usage() time.Duration { return usec(c.UsageUsec) }

// usec converts microseconds to a duration, saturating.
func usec(n uint64) time.Duration {
	if n > math.MaxInt64/uint64(time.Microsecond) {
		return math.MaxInt64
	}
	return time.Duration(n) * time.Microsecond
}

// MemoryStats is the cgroup's memory controller, in bytes.
type MemoryStats struct {
	// Usage is memory.current: everything charged to the container, its
	// page cache and tmpfs files included.
	Usage uint64
	// Limit is memory.max; without one, the guest's RAM, which bounds the
	// container as well.
	Limit uint64
	// Peak is memory.peak, 0 where the guest kernel has none.
	Peak uint64
	// SwapUsage and SwapLimit are memory.swap.current and
	// memory.swap.max (no limit: the guest's swap); 0 without swap.
	SwapUsage, SwapLimit uint64
	// Stat is memory.stat, key by key: anon, file, kernel_stack, slab,
	// sock, shmem, file_mapped, file_dirty, file_writeback, pgfault,
	// pgmajfault, inactive_file, active_file... (at most
	// contract.MaxMemoryStatKeys keys).
	Stat map[string]uint64
	// Events is memory.events: low, high, max, oom, oom_kill...
	Events map[string]uint64
}

// PidsStats is the cgroup's pids controller.
type PidsStats struct {
	// Current is pids.current: the container's tasks (threads
	// included). Limit is pids.max, 0 for none.
	Current, Limit uint64
}

// IOStats is one block device's I/O: bytes and operations read and
// written.
type IOStats struct {
	Major, Minor          uint32
	ReadBytes, WriteBytes uint64
	ReadIOs, WriteIOs     uint64
}

// NetworkStats is one interface's counters.
type NetworkStats struct {
	// Name is the interface's name in the guest (eth0).
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// maxOnlineCPUs is more CPUs than a VM the engine starts has (KVM allows
// 1024 vCPUs); a guest claiming more is not telling the truth.
const maxOnlineCPUs = 4096

// maxInterfaceName is the longest network interface name (IFNAMSIZ less
// its NUL).
const maxInterfaceName = 15

// Stats reads a running container's resource statistics. Maps and lists
// beyond the contract's bounds, keys that are no cgroup keys, interface
// names that are none, or a guest claiming more CPUs than a VM has fail
// with ErrBadAnswer. The call has a deadline of its own (queryTimeout).
func (c *Client) Stats(ctx context.Context, containerID string) (Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	resp, err := c.api.Stats(ctx, &agentapi.ContainerRequest{ContainerId: containerID})
	if err != nil {
		return Stats{}, c.convert(err)
	}
	bad := func(format string, args ...any) (Stats, error) { return Stats{}, badAnswer("Stats", format, args...) }
	mem := resp.GetMemory()
	switch {
	case resp.GetOnlineCpus() > maxOnlineCPUs:
		return bad("%d online CPUs", resp.GetOnlineCpus())
	case len(resp.GetIo()) > contract.MaxIODevices:
		return bad("%d block devices, more than the %d the contract allows", len(resp.GetIo()), contract.MaxIODevices)
	case len(resp.GetNetworks()) > contract.MaxNetworkInterfaces:
		return bad("%d network interfaces, more than the %d the contract allows", len(resp.GetNetworks()), contract.MaxNetworkInterfaces)
	case !validKeys(mem.GetStat()):
		return bad("a memory.stat of %d keys, or a key that is none (at most %d keys of [a-z0-9_])", len(mem.GetStat()), contract.MaxMemoryStatKeys)
	case !validKeys(mem.GetEvents()):
		return bad("a memory.events of %d keys, or a key that is none (at most %d keys of [a-z0-9_])", len(mem.GetEvents()), contract.MaxMemoryStatKeys)
	}
	cpu := resp.GetCpu()
	st := Stats{
		Time: time.Now(),
		CPU: CPUStats{UsageUsec: cpu.GetUsageUsec(), UserUsec: cpu.GetUserUsec(), SystemUsec: cpu.GetSystemUsec(),
			NrPeriods: cpu.GetNrPeriods(), NrThrottled: cpu.GetNrThrottled(), ThrottledUsec: cpu.GetThrottledUsec()},
		Memory: MemoryStats{Usage: mem.GetUsage(), Limit: mem.GetLimit(), Peak: mem.GetPeak(),
			SwapUsage: mem.GetSwapUsage(), SwapLimit: mem.GetSwapLimit(),
			Stat: maps.Clone(mem.GetStat()), Events: maps.Clone(mem.GetEvents())},
		Pids:         PidsStats{Current: resp.GetPids().GetCurrent(), Limit: resp.GetPids().GetLimit()},
		IOWholeGuest: resp.GetIoWholeGuest(),
		SystemCPU:    time.Duration(min(resp.GetSystemCpuNanos(), math.MaxInt64)),
		OnlineCPUs:   int(resp.GetOnlineCpus()),
		GuestMemory:  resp.GetGuestMemoryBytes(),
	}
	if st.Memory.Stat == nil {
		st.Memory.Stat = map[string]uint64{}
	}
	if st.Memory.Events == nil {
		st.Memory.Events = map[string]uint64{}
	}
	for _, d := range resp.GetIo() {
		st.IO = append(st.IO, IOStats{Major: d.GetMajor(), Minor: d.GetMinor(), ReadBytes: d.GetReadBytes(), WriteBytes: d.GetWriteBytes(),
			ReadIOs: d.GetReadIos(), WriteIOs: d.GetWriteIos()})
	}
	names := map[string]bool{}
	for _, n := range resp.GetNetworks() {
		name := n.GetName()
		if name == "" || len(name) > maxInterfaceName || strings.ContainsAny(name, "/: ") || printable(name) != name || names[name] {
			return bad("a network interface named %.32q", name)
		}
		names[name] = true
		st.Networks = append(st.Networks, NetworkStats{Name: name,
			RxBytes: n.GetRxBytes(), RxPackets: n.GetRxPackets(), RxErrors: n.GetRxErrors(), RxDropped: n.GetRxDropped(),
			TxBytes: n.GetTxBytes(), TxPackets: n.GetTxPackets(), TxErrors: n.GetTxErrors(), TxDropped: n.GetTxDropped()})
	}
	return st, nil
}

// validKeys reports whether m is a cgroup flat keyed file the contract
// allows: at most contract.MaxMemoryStatKeys keys of lower case letters,
// digits and underscores, each at most contract.MaxStatKeyLen bytes.
func validKeys(m map[string]uint64) bool {
	if len(m) > contract.MaxMemoryStatKeys {
		return false
	}
	for k := range m {
		if k == "" || len(k) > contract.MaxStatKeyLen {
			return false
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				return false
			}
		}
	}
	return true
}
