package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
)

func TestWriteTop(t *testing.T) {
	var b bytes.Buffer
	writeTop(&b, []string{"UID", "PID", "CMD"}, [][]string{{"root", "1", "sh -c sleep 1000 & wait"}, {"1000", "27", "sleep 1000"}})
	want := "UID                 PID                 CMD\n" +
		"root                1                   sh -c sleep 1000 & wait\n" +
		"1000                27                  sleep 1000\n"
	if b.String() != want {
		t.Errorf("top table =\n%s\nwant\n%s", b.String(), want)
	}
}

// statsRecord is a record of a container running a busy loop for a
// second on one of its VM's two CPUs, with 20 MiB in a tmpfs.
func statsRecord() container.StatsResponse {
	return container.StatsResponse{
		ID: strings.Repeat("ab", 32), Name: "/web", Read: time.Now(),
		PreCPUStats: container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: 1e9}, SystemUsage: 10e9, OnlineCPUs: 2},
		CPUStats:    container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: 2e9}, SystemUsage: 12e9, OnlineCPUs: 2},
		MemoryStats: container.MemoryStats{Usage: 23 << 20, Limit: 64 << 20, Stats: map[string]uint64{"inactive_file": 1 << 20, "shmem": 20 << 20}},
		Networks:    map[string]container.NetworkStats{"eth0": {RxBytes: 1500, TxBytes: 700}, "eth1": {RxBytes: 500, TxBytes: 300}},
		BlkioStats: container.BlkioStats{IoServiceBytesRecursive: []container.BlkioStatEntry{
			{Major: 254, Minor: 0, Op: "read", Value: 4 << 20}, {Major: 254, Minor: 0, Op: "write", Value: 1 << 20},
			{Major: 254, Minor: 16, Op: "Read", Value: 1 << 20}, {Major: 254, Minor: 16, Op: "Total", Value: 9 << 20}}},
		PidsStats: container.PidsStats{Current: 3, Limit: 100},
	}
}

func TestWriteStats(t *testing.T) {
	table := &statsTable{}
	web, _ := table.add("web")
	table.set(web, statsRecord(), nil)
	gone, _ := table.add("gone")
	table.set(gone, container.StatsResponse{}, errors.New("No such container: gone"))
	for _, tc := range []struct {
		name, format string
		trunc        bool
		want         []string // lines, with runs of spaces collapsed
	}{
		{name: "table", format: "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}", trunc: true, want: []string{
			"CONTAINER ID NAME CPU % MEM USAGE / LIMIT MEM % NET I/O BLOCK I/O PIDS",
			// 1 s of a CPU in 2 s of 2 CPUs: 100 % of one. 23 MiB less
			// 1 MiB of inactive page cache.
			"abababababab web 100.00% 22MiB / 64MiB 34.38% 2kB / 1kB 5.24MB / 1.05MB 3",
			"gone -- -- -- / -- -- -- -- --",
		}},
		{name: "template", format: "{{.Container}}: {{.MemUsage}} {{.PIDs}}", want: []string{"web: 22MiB / 64MiB 3", "gone: -- / -- --"}},
		{name: "no-trunc", format: "{{.ID}}", want: []string{strings.Repeat("ab", 32), "gone"}},
		{name: "json", format: "json", want: []string{
			`{"BlockIO":"5.24MB / 1.05MB","CPUPerc":"100.00%","Container":"web","ID":"` + strings.Repeat("ab", 32) + `","MemPerc":"34.38%","MemUsage":"22MiB / 64MiB","Name":"web","NetIO":"2kB / 1kB","PIDs":"3"}`,
			`{"BlockIO":"--","CPUPerc":"--","Container":"gone","ID":"gone","MemPerc":"--","MemUsage":"-- / --","Name":"--","NetIO":"--","PIDs":"--"}`,
		}},
	} {
		var b bytes.Buffer
		if err := writeStats(&b, table.snapshot(), tc.format, tc.trunc); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			got = append(got, strings.Join(strings.Fields(line), " "))
		}
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: stats =\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
	if err := writeStats(&bytes.Buffer{}, nil, "{{.Nope", true); err == nil {
		t.Errorf("a bad template was taken")
	}
}

func TestCPUPercentAndMemory(t *testing.T) {
	rec := statsRecord()
	if got := cpuPercent(rec.PreCPUStats, rec.CPUStats); got != 100 {
		t.Errorf("cpuPercent = %v, want 100", got)
	}
	// The first record of a stream has no previous one.
	if got := cpuPercent(container.CPUStats{}, container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: 5}}); got != 0 {
		t.Errorf("cpuPercent without a system delta = %v, want 0", got)
	}
	for _, tc := range []struct {
		m    container.MemoryStats
		want float64
	}{
		{container.MemoryStats{Usage: 10, Stats: map[string]uint64{"inactive_file": 4}}, 6},
		{container.MemoryStats{Usage: 10, Stats: map[string]uint64{"total_inactive_file": 3, "inactive_file": 4}}, 7},
		{container.MemoryStats{Usage: 10, Stats: map[string]uint64{"inactive_file": 11}}, 10},
		{container.MemoryStats{Usage: 10}, 10},
	} {
		if got := memoryUsage(tc.m); got != tc.want {
			t.Errorf("memoryUsage(%+v) = %v, want %v", tc.m, got, tc.want)
		}
	}
}
