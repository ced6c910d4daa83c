package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

var guestNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func process(pid uint32, edit func(*agentapi.ProcessInfo)) *agentapi.ProcessInfo {
	p := &agentapi.ProcessInfo{Pid: pid, Ppid: 1, ContainerPid: 1, State: "S", Comm: "sh", Args: []string{"sh"},
		StartTimeUnixNano: guestNow.Add(-time.Hour).UnixNano(), Threads: 1}
	if edit != nil {
		edit(p)
	}
	return p
}

func TestListProcesses(t *testing.T) {
	fake := &fakeAgent{procs: &agentapi.ListProcessesResponse{TimeUnixNano: guestNow.UnixNano(), Processes: []*agentapi.ProcessInfo{
		{Pid: 40, Ppid: 7, ContainerPid: 1, Uid: 0, Gid: 0, User: "root", State: "S",
			StartTimeUnixNano: guestNow.Add(-90 * time.Minute).UnixNano(), CpuTimeNanos: uint64(1500 * time.Millisecond),
			Tty: "pts/0", Comm: "sh", Args: []string{"sh", "-c", "sleep 1000 & wait"}, Threads: 1, VszBytes: 4 << 20, RssBytes: 1 << 20},
		// Escapes in names and arguments reach the engine as '?'; a start
		// a tick after the guest's now is a start now.
		{Pid: 41, Ppid: 40, ContainerPid: 2, ContainerPpid: 1, Uid: 1000, Gid: 100, State: "Z",
			StartTimeUnixNano: guestNow.Add(time.Millisecond).UnixNano(), Comm: "a\x1b[2Jb", Args: []string{"x\ny", "\uFFFD"}},
	}}}
	c := serve(t, fake)
	before := time.Now()
	got, err := c.ListProcesses(ctxT(t), "c1")
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if reqs := fake.requests(); len(reqs) != 1 || !proto.Equal(reqs[0], &agentapi.ContainerRequest{ContainerId: "c1"}) {
		t.Errorf("agent got %v, want one ContainerRequest for c1", reqs)
	}
	if len(got) != 2 {
		t.Fatalf("ListProcesses = %+v, want 2 processes", got)
	}
	// Start times are the guest's ages of the processes taken from the
	// host's clock: the guest's clock, in 2030, does not matter.
	for i, age := range []time.Duration{90 * time.Minute, 0} {
		if st := got[i].StartTime; st.Before(before.Add(-age)) || st.After(after.Add(-age)) {
			t.Errorf("process %d started at %s, want %s before the call (%s)", got[i].Pid, st, age, before)
		}
		got[i].StartTime = time.Time{}
	}
	want := []ProcessInfo{
		{Pid: 40, PPid: 7, ContainerPid: 1, User: "root", State: 'S', CPUTime: 1500 * time.Millisecond, TTY: "pts/0",
			Command: "sh", Args: []string{"sh", "-c", "sleep 1000 & wait"}, Threads: 1, VSZ: 4 << 20, RSS: 1 << 20},
		{Pid: 41, PPid: 40, ContainerPid: 2, ContainerPPid: 1, UID: 1000, GID: 100, State: 'Z', Command: "a?[2Jb",
			Args: []string{"x?y", "?"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListProcesses =\n%+v\nwant\n%+v", got, want)
	}
}

func TestListProcessesRefusesWhatTheContractDoesNot(t *testing.T) {
	many := make([]*agentapi.ProcessInfo, contract.MaxListedProcesses+1)
	for i := range many {
		many[i] = process(uint32(i+1), nil)
	}
	tooManyArgs := make([]string, contract.MaxProcessArgs+1)
	tests := []struct {
		name string
		resp *agentapi.ListProcessesResponse
	}{
		{"too many processes", &agentapi.ListProcessesResponse{Processes: many}},
		{"a time before 1970", &agentapi.ListProcessesResponse{TimeUnixNano: -1}},
		{"pid 0", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{process(0, nil)}}},
		{"pid past a kernel's", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{process(1<<31, nil)}}},
		{"a parent past a kernel's", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.ContainerPpid = 1 << 31 })}}},
		{"a pid twice", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{process(5, nil), process(5, nil)}}},
		{"no state", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.State = "" })}}},
		{"an unknown state", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.State = "Q" })}}},
		{"a long state", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.State = "SS" })}}},
		{"a long command name", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.Comm = strings.Repeat("c", contract.MaxProcessNameLen+1) })}}},
		{"a long user name", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.User = strings.Repeat("u", contract.MaxProcessNameLen+1) })}}},
		{"a long terminal name", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.Tty = strings.Repeat("t", contract.MaxProcessNameLen+1) })}}},
		{"too many arguments", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.Args = tooManyArgs })}}},
		{"too long arguments", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) {
				p.Args = []string{"a", strings.Repeat("b", contract.MaxProcessArgsBytes)}
			})}}},
		{"a start before 1970", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.StartTimeUnixNano = -5 })}}},
		{"CPU time past a duration", &agentapi.ListProcessesResponse{Processes: []*agentapi.ProcessInfo{
			process(5, func(p *agentapi.ProcessInfo) { p.CpuTimeNanos = 1 << 63 })}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, &fakeAgent{procs: tt.resp})
			got, err := c.ListProcesses(ctxT(t), "c1")
			if !errors.Is(err, ErrBadAnswer) || !errdefs.IsDataLoss(err) || strings.Contains(err.Error(), "\n") || got != nil {
				t.Errorf("ListProcesses = %d processes, %v; want a one-line ErrBadAnswer", len(got), err)
			}
		})
	}
	// The edges are answers an agent may give.
	edge := make([]string, contract.MaxProcessArgs)
	edge[0] = strings.Repeat("a", contract.MaxProcessArgsBytes)
	full := &agentapi.ListProcessesResponse{Processes: append(many[:contract.MaxListedProcesses:contract.MaxListedProcesses],
		process(1<<31-1, func(p *agentapi.ProcessInfo) {
			p.Args, p.Comm, p.State = edge, strings.Repeat("c", contract.MaxProcessNameLen), "I"
		}))[1:]}
	c := serve(t, &fakeAgent{procs: full})
	if got, err := c.ListProcesses(ctxT(t), "c1"); err != nil || len(got) != contract.MaxListedProcesses {
		t.Errorf("ListProcesses at the contract's bounds = %d processes, %v", len(got), err)
	}
}

// The client gives the call a deadline of its own: a guest that never
// answers does not hold a caller without one.
func TestQueriesHaveADeadline(t *testing.T) {
	defer func(d time.Duration) { queryTimeout = d }(queryTimeout)
	queryTimeout = 50 * time.Millisecond
	c := serve(t, &fakeAgent{block: true})
	for name, call := range map[string]func() error{
		"ListProcesses": func() error { _, err := c.ListProcesses(context.Background(), "c1"); return err },
		"Stats":         func() error { _, err := c.Stats(context.Background(), "c1"); return err },
	} {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s of a silent guest = %v, want %v", name, err, context.DeadlineExceeded)
			}
		case <-time.After(hangSlack):
			t.Fatalf("%s of a silent guest without a caller's deadline did not return", name)
		}
	}
}

func TestStats(t *testing.T) {
	fake := &fakeAgent{stats: &agentapi.StatsResponse{
		TimeUnixNano: guestNow.UnixNano(),
		Cpu:          &agentapi.CPUStats{UsageUsec: 3500000, UserUsec: 2500000, SystemUsec: 1000000, NrPeriods: 40, NrThrottled: 3, ThrottledUsec: 12000},
		Memory: &agentapi.MemoryStats{Usage: 21 << 20, Limit: 64 << 20, Peak: 24 << 20, SwapUsage: 1, SwapLimit: 2,
			Stat: map[string]uint64{"anon": 1 << 20, "shmem": 20 << 20}, Events: map[string]uint64{"oom": 1}},
		Pids:           &agentapi.PidsStats{Current: 3, Limit: 100},
		Io:             []*agentapi.IODeviceStats{{Major: 254, Minor: 16, ReadBytes: 1, WriteBytes: 2, ReadIos: 3, WriteIos: 4}},
		IoWholeGuest:   true,
		Networks:       []*agentapi.NetworkStats{{Name: "eth0", RxBytes: 1, RxPackets: 2, RxErrors: 3, RxDropped: 4, TxBytes: 5, TxPackets: 6, TxErrors: 7, TxDropped: 8}},
		SystemCpuNanos: uint64(time.Minute), OnlineCpus: 2, GuestMemoryBytes: 192 << 20,
	}}
	c := serve(t, fake)
	before := time.Now()
	got, err := c.Stats(ctxT(t), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Time.Before(before) || got.Time.After(time.Now()) {
		t.Errorf("Time = %s, want the host's time of the answer", got.Time)
	}
	got.Time = time.Time{}
	want := Stats{
		CPU: CPUStats{UsageUsec: 3500000, UserUsec: 2500000, SystemUsec: 1000000, NrPeriods: 40, NrThrottled: 3, ThrottledUsec: 12000},
		Memory: MemoryStats{Usage: 21 << 20, Limit: 64 << 20, Peak: 24 << 20, SwapUsage: 1, SwapLimit: 2,
			Stat: map[string]uint64{"anon": 1 << 20, "shmem": 20 << 20}, Events: map[string]uint64{"oom": 1}},
		Pids:         PidsStats{Current: 3, Limit: 100},
		IO:           []IOStats{{Major: 254, Minor: 16, ReadBytes: 1, WriteBytes: 2, ReadIOs: 3, WriteIOs: 4}},
		IOWholeGuest: true,
		Networks:     []NetworkStats{{Name: "eth0", RxBytes: 1, RxPackets: 2, RxErrors: 3, RxDropped: 4, TxBytes: 5, TxPackets: 6, TxErrors: 7, TxDropped: 8}},
		SystemCPU:    time.Minute, OnlineCPUs: 2, GuestMemory: 192 << 20,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Stats =\n%+v\nwant\n%+v", got, want)
	}
	if got.CPU.Usage() != 3500*time.Millisecond {
		t.Errorf("CPU.Usage() = %s, want 3.5s", got.CPU.Usage())
	}
	// An agent that leaves parts out gives zeros and empty maps.
	c = serve(t, &fakeAgent{stats: &agentapi.StatsResponse{}})
	if got, err := c.Stats(ctxT(t), "c1"); err != nil || got.Memory.Stat == nil || got.Memory.Events == nil || got.CPU.UsageUsec != 0 {
		t.Errorf("Stats of an empty answer = %+v, %v; want zeros with empty maps", got, err)
	}
}

func TestStatsRefusesWhatTheContractDoesNot(t *testing.T) {
	keys := func(n int) map[string]uint64 {
		m := map[string]uint64{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = 1
		}
		return m
	}
	ifaces := func(names ...string) []*agentapi.NetworkStats {
		var out []*agentapi.NetworkStats
		for _, n := range names {
			out = append(out, &agentapi.NetworkStats{Name: n})
		}
		return out
	}
	manyIfaces := make([]string, contract.MaxNetworkInterfaces+1)
	for i := range manyIfaces {
		manyIfaces[i] = fmt.Sprintf("eth%d", i)
	}
	tests := []struct {
		name string
		resp *agentapi.StatsResponse
	}{
		{"too many memory.stat keys", &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Stat: keys(contract.MaxMemoryStatKeys + 1)}}},
		{"too many memory.events keys", &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Events: keys(contract.MaxMemoryStatKeys + 1)}}},
		{"a key with a capital", &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Stat: map[string]uint64{"Anon": 1}}}},
		{"a key with a newline", &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Events: map[string]uint64{"oom\n": 1}}}},
		{"an empty key", &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Stat: map[string]uint64{"": 1}}}},
		{"a long key", &agentapi.StatsResponse{Memory: &agentapi.MemoryStats{Stat: map[string]uint64{strings.Repeat("k", contract.MaxStatKeyLen+1): 1}}}},
		{"too many devices", &agentapi.StatsResponse{Io: make([]*agentapi.IODeviceStats, contract.MaxIODevices+1)}},
		{"too many interfaces", &agentapi.StatsResponse{Networks: ifaces(manyIfaces...)}},
		{"an interface twice", &agentapi.StatsResponse{Networks: ifaces("eth0", "eth0")}},
		{"an unnamed interface", &agentapi.StatsResponse{Networks: ifaces("")}},
		{"a long interface name", &agentapi.StatsResponse{Networks: ifaces("eth0123456789abc")}},
		{"an interface name with a slash", &agentapi.StatsResponse{Networks: ifaces("../eth0")}},
		{"an interface name with an escape", &agentapi.StatsResponse{Networks: ifaces("e\x1b[2J")}},
		{"more CPUs than a VM has", &agentapi.StatsResponse{OnlineCpus: maxOnlineCPUs + 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, &fakeAgent{stats: tt.resp})
			_, err := c.Stats(ctxT(t), "c1")
			if !errors.Is(err, ErrBadAnswer) || !errdefs.IsDataLoss(err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Stats = %v, want a one-line ErrBadAnswer", err)
			}
		})
	}
	// The edges are answers an agent may give.
	c := serve(t, &fakeAgent{stats: &agentapi.StatsResponse{
		Memory:     &agentapi.MemoryStats{Stat: keys(contract.MaxMemoryStatKeys), Events: map[string]uint64{strings.Repeat("k", contract.MaxStatKeyLen): 1}},
		Io:         make([]*agentapi.IODeviceStats, contract.MaxIODevices),
		Networks:   ifaces(manyIfaces[:contract.MaxNetworkInterfaces]...),
		OnlineCpus: maxOnlineCPUs, SystemCpuNanos: 1<<64 - 1,
	}})
	if got, err := c.Stats(ctxT(t), "c1"); err != nil || len(got.Networks) != contract.MaxNetworkInterfaces || got.SystemCPU < 0 {
		t.Errorf("Stats at the contract's bounds = %+v, %v", got, err)
	}
}
