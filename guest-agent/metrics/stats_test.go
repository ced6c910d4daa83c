package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vmctl/vmctl/api/agent/contract"
	agent "github.com/vmctl/vmctl/api/agent/v1"
)

func TestStats(t *testing.T) {
	got, err := Stats(testSource())
	if err != nil {
		t.Fatal(err)
	}
	want := &agent.StatsResponse{
		TimeUnixNano: testNow.UnixNano(),
		Cpu: &agent.CPUStats{UsageUsec: 3500000, UserUsec: 2500000, SystemUsec: 1000000,
			NrPeriods: 40, NrThrottled: 3, ThrottledUsec: 12000},
		Memory: &agent.MemoryStats{Usage: 22020096, Limit: 67108864, Peak: 25165824,
			Stat: map[string]uint64{"anon": 1048576, "file": 20971520, "kernel_stack": 32768, "slab": 262144, "sock": 0,
				"shmem": 20971520, "file_mapped": 0, "file_dirty": 0, "file_writeback": 0, "inactive_file": 20971520,
				"active_file": 0, "pgfault": 1234, "pgmajfault": 5},
			Events: map[string]uint64{"low": 0, "high": 0, "max": 2, "oom": 1, "oom_kill": 1}},
		// pids.max is "max".
		Pids: &agent.PidsStats{Current: 3},
		// No io.stat (no io controller): the guest's disks, not its loop
		// device.
		Io: []*agent.IODeviceStats{
			{Major: 254, Minor: 0, ReadIos: 120, ReadBytes: 4096 * 512, WriteIos: 10, WriteBytes: 64 * 512},
			{Major: 254, Minor: 16, ReadIos: 1, ReadBytes: 8 * 512},
		},
		IoWholeGuest: true,
		Networks: []*agent.NetworkStats{{Name: "eth0", RxBytes: 1048576, RxPackets: 900, RxErrors: 1, RxDropped: 2,
			TxBytes: 524288, TxPackets: 400, TxErrors: 4, TxDropped: 5}},
		// user..steal of the cpu line: 6378 ticks of 10 ms.
		SystemCpuNanos: uint64(63780 * time.Millisecond), OnlineCpus: 2, GuestMemoryBytes: 198212 << 10,
	}
	if !proto.Equal(got, want) {
		t.Errorf("Stats =\n%v\nwant\n%v", got, want)
	}
}

// copyCgroup copies the test container's cgroup files to a directory the
// test changes.
func copyCgroup(t *testing.T) Source {
	t.Helper()
	src := testSource()
	dir := t.TempDir()
	entries, err := os.ReadDir(src.Cgroup)
	must(t, err)
	for _, e := range entries {
		if e.Type().IsRegular() {
			b, err := os.ReadFile(filepath.Join(src.Cgroup, e.Name()))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644))
		}
	}
	src.Cgroup = dir
	return src
}

func TestStatsVariants(t *testing.T) {
	t.Run("no memory limit", func(t *testing.T) {
		src := copyCgroup(t)
		must(t, os.WriteFile(filepath.Join(src.Cgroup, "memory.max"), []byte("max\n"), 0o644))
		got, err := Stats(src)
		if err != nil {
			t.Fatal(err)
		}
		if got.Memory.Limit != 198212<<10 {
			t.Errorf("limit of memory.max \"max\" = %d, want the guest's RAM %d", got.Memory.Limit, 198212<<10)
		}
	})
	t.Run("io controller", func(t *testing.T) {
		src := copyCgroup(t)
		must(t, os.WriteFile(filepath.Join(src.Cgroup, "io.stat"),
			[]byte("254:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n254:16 rbytes=1 wbytes=x\nbad line\n"), 0o644))
		got, err := Stats(src)
		if err != nil {
			t.Fatal(err)
		}
		want := []*agent.IODeviceStats{{Major: 254, Minor: 0, ReadBytes: 1024, WriteBytes: 2048, ReadIos: 3, WriteIos: 4},
			{Major: 254, Minor: 16, ReadBytes: 1}}
		if got.IoWholeGuest || len(got.Io) != 2 || !proto.Equal(got.Io[0], want[0]) || !proto.Equal(got.Io[1], want[1]) {
			t.Errorf("io = %v (whole guest %v), want %v from io.stat", got.Io, got.IoWholeGuest, want)
		}
	})
	t.Run("controllers off", func(t *testing.T) {
		// cgroup.procs and cpu.stat are all a cgroup without controllers
		// has.
		src := copyCgroup(t)
		entries, _ := os.ReadDir(src.Cgroup)
		for _, e := range entries {
			if e.Name() != "cpu.stat" && e.Name() != "cgroup.procs" {
				must(t, os.Remove(filepath.Join(src.Cgroup, e.Name())))
			}
		}
		got, err := Stats(src)
		if err != nil {
			t.Fatal(err)
		}
		if got.Cpu.UsageUsec != 3500000 || got.Memory.Usage != 0 || got.Pids.Current != 0 || len(got.Memory.Stat) != 0 {
			t.Errorf("Stats without controllers = %v", got)
		}
	})
	t.Run("init gone", func(t *testing.T) {
		// The network namespace is read through another process of the
		// container: none of the test's others has a net/dev.
		src := testSource()
		src.InitPid = 0
		got, err := Stats(src)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Networks) != 1 {
			t.Errorf("networks without the init = %v, want eth0 through pid 100 of cgroup.procs", got.Networks)
		}
	})
	t.Run("garbage in a limit", func(t *testing.T) {
		src := copyCgroup(t)
		must(t, os.WriteFile(filepath.Join(src.Cgroup, "pids.max"), []byte("lots\n"), 0o644))
		if _, err := Stats(src); err == nil || !strings.Contains(err.Error(), "pids.max") {
			t.Errorf("Stats with pids.max \"lots\" = %v, want an error naming it", err)
		}
	})
	t.Run("cgroup gone", func(t *testing.T) {
		src := testSource()
		src.Cgroup = filepath.Join(t.TempDir(), "gone")
		if _, err := Stats(src); err == nil {
			t.Error("Stats of a cgroup that is not there succeeded")
		}
	})
}

func TestParseKeyedIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("Bad_Key 1\nkey-dash 2\nnovalue\n" + strings.Repeat("k", contract.MaxStatKeyLen+1) + " 3\nneg -1\n")
	for i := range 2 * contract.MaxMemoryStatKeys {
		fmt.Fprintf(&b, "key_%d %d\n", i, i)
	}
	got := parseKeyed([]byte(b.String()), contract.MaxMemoryStatKeys)
	if len(got) != contract.MaxMemoryStatKeys {
		t.Errorf("parseKeyed kept %d keys, want %d", len(got), contract.MaxMemoryStatKeys)
	}
	for k := range got {
		if !strings.HasPrefix(k, "key_") {
			t.Errorf("parseKeyed kept the invalid key %q", k)
		}
	}
}

func TestParseNetDevIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("header\nheader\n")
	b.WriteString("averyveryverylongname: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n")
	b.WriteString("short: 1 2 3\nbad: x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n")
	for i := range 2 * contract.MaxNetworkInterfaces {
		fmt.Fprintf(&b, "eth%d: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n", i)
	}
	got := parseNetDev([]byte(b.String()))
	if len(got) != contract.MaxNetworkInterfaces || got[0].Name != "eth0" || got[0].TxBytes != 9 || got[0].TxDropped != 12 {
		t.Errorf("parseNetDev = %d interfaces, first %v; want %d from eth0, tx bytes 9", len(got), got[0], contract.MaxNetworkInterfaces)
	}
}

func TestParseProcStat(t *testing.T) {
	total, cpus := parseProcStat([]byte("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 1 1 1 1 1 1 1 1 1\ncpufreq 1\ncpu1 1\nintr 1\n"))
	if total != 36 || cpus != 2 {
		t.Errorf("parseProcStat = %d ticks, %d CPUs; want 36 (guest time left out) and 2", total, cpus)
	}
}
