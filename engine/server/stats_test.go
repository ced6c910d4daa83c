package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// statsContainers answers Top and Stats for "web" (running) and "db"
// (stopped): each Stats of web is its next sample, its CPU time one
// second more than the last.
type statsContainers struct {
	ContainerService

	mu      sync.Mutex
	samples int
	psArgs  []string
	// fail makes the next Stats of web fail; removed makes every Stats
	// after it not find web.
	fail, removed bool
}

const (
	webID = "1111111111111111111111111111111111111111111111111111111111111111"
	dbID  = "2222222222222222222222222222222222222222222222222222222222222222"
)

func (f *statsContainers) Top(_ context.Context, ref, psArgs string) (containersvc.TopResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.psArgs = append(f.psArgs, psArgs)
	switch {
	case ref == "db":
		return containersvc.TopResult{}, errs.New(errdefs.ErrConflict, "Container %s is not running", dbID)
	case ref != "web":
		return containersvc.TopResult{}, errs.New(errdefs.ErrNotFound, "No such container: %s", ref)
	case psArgs == "-l":
		return containersvc.TopResult{}, errs.New(errdefs.ErrInvalidArgument, "ps option -l is not supported")
	}
	return containersvc.TopResult{Titles: []string{"PID", "CMD"}, Processes: [][]string{{"1", "sh"}, {"2", "sleep 1000"}}}, nil
}

func (f *statsContainers) Stats(_ context.Context, ref string) (containersvc.StatsSample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case ref == "db" || ref == dbID:
		return containersvc.StatsSample{ID: dbID, Name: "db"}, nil
	case ref != "web" && ref != webID, f.removed:
		return containersvc.StatsSample{}, errs.New(errdefs.ErrNotFound, "No such container: %s", ref)
	case f.fail:
		f.fail = false
		return containersvc.StatsSample{}, errors.New("the guest did not answer")
	}
	f.samples++
	n := uint64(f.samples)
	return containersvc.StatsSample{ID: webID, Name: "web", Running: true, Stats: agent.Stats{
		Time: time.Date(2025, 1, 1, 0, 0, int(n), 0, time.UTC),
		CPU:  agent.CPUStats{UsageUsec: n * 1e6, UserUsec: n * 7e5, SystemUsec: n * 3e5, NrPeriods: 10, NrThrottled: 2, ThrottledUsec: 5},
		Memory: agent.MemoryStats{Usage: 30 << 20, Limit: 64 << 20, Stat: map[string]uint64{"inactive_file": 1 << 20, "shmem": 20 << 20},
			Events: map[string]uint64{"oom": 3}},
		Pids:      agent.PidsStats{Current: 3, Limit: 32000},
		IO:        []agent.IOStats{{Major: 254, Minor: 16, ReadBytes: 4096, WriteBytes: 8192, ReadIOs: 1, WriteIOs: 2}},
		Networks:  []agent.NetworkStats{{Name: "eth0", RxBytes: 100 * n, TxBytes: 50 * n, RxPackets: 1, TxPackets: 2}},
		SystemCPU: time.Duration(n) * 2 * time.Second, OnlineCPUs: 2, GuestMemory: 192 << 20,
	}}, nil
}

func statsServer(t *testing.T) (*Server, *statsContainers) {
	t.Helper()
	old := statsInterval
	statsInterval = 20 * time.Millisecond
	t.Cleanup(func() { statsInterval = old })
	f := &statsContainers{}
	return newServer(f, nil, nil, nil, fakeSystem{}, nil), f
}

func TestContainerTop(t *testing.T) {
	s, f := statsServer(t)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/v1.41/containers/web/top?ps_args=-o+pid,comm", nil))
	var got container.TopResponse
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
		t.Fatalf("top: %d %s", rec.Code, rec.Body)
	}
	want := container.TopResponse{Titles: []string{"PID", "CMD"}, Processes: [][]string{{"1", "sh"}, {"2", "sleep 1000"}}}
	if !reflect.DeepEqual(got, want) || f.psArgs[0] != "-o pid,comm" {
		t.Errorf("top = %+v with ps args %q, want %+v with -o pid,comm", got, f.psArgs[0], want)
	}
	for path, code := range map[string]int{
		"/containers/db/top":             http.StatusConflict,
		"/containers/nosuch/top":         http.StatusNotFound,
		"/containers/web/top?ps_args=-l": http.StatusBadRequest,
	} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != code || !strings.Contains(rec.Body.String(), `"message"`) {
			t.Errorf("GET %s = %d %s, want %d with a message", path, rec.Code, rec.Body, code)
		}
	}
}

func getStats(t *testing.T, s *Server, path string) (int, []container.StatsResponse, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	var out []container.StatsResponse
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	for rec.Code == http.StatusOK && dec.More() {
		var r container.StatsResponse
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, rec.Body)
		}
		out = append(out, r)
	}
	return rec.Code, out, rec.Body.String()
}

func TestContainerStatsOnce(t *testing.T) {
	s, f := statsServer(t)
	// one-shot: one sample, taken at once; no previous one.
	code, recs, body := getStats(t, s, "/v1.41/containers/web/stats?stream=false&one-shot=true")
	if code != http.StatusOK || len(recs) != 1 {
		t.Fatalf("one-shot: %d %s", code, body)
	}
	want := container.StatsResponse{
		ID: webID, Name: "/web", Read: time.Date(2025, 1, 1, 0, 0, 1, 0, time.UTC),
		CPUStats: container.CPUStats{
			CPUUsage:    container.CPUUsage{TotalUsage: 1e9, UsageInKernelmode: 3e8, UsageInUsermode: 7e8},
			SystemUsage: 2e9, OnlineCPUs: 2,
			ThrottlingData: container.ThrottlingData{Periods: 10, ThrottledPeriods: 2, ThrottledTime: 5000},
		},
		MemoryStats: container.MemoryStats{Usage: 30 << 20, Limit: 64 << 20, Failcnt: 3,
			Stats: map[string]uint64{"inactive_file": 1 << 20, "shmem": 20 << 20}},
		PidsStats: container.PidsStats{Current: 3, Limit: 32000},
		BlkioStats: container.BlkioStats{
			IoServiceBytesRecursive: []container.BlkioStatEntry{{Major: 254, Minor: 16, Op: "read", Value: 4096}, {Major: 254, Minor: 16, Op: "write", Value: 8192}},
			IoServicedRecursive:     []container.BlkioStatEntry{{Major: 254, Minor: 16, Op: "read", Value: 1}, {Major: 254, Minor: 16, Op: "write", Value: 2}},
		},
		Networks: map[string]container.NetworkStats{"eth0": {RxBytes: 100, TxBytes: 50, RxPackets: 1, TxPackets: 2}},
	}
	if !reflect.DeepEqual(recs[0], want) {
		t.Errorf("one-shot =\n%+v\nwant\n%+v", recs[0], want)
	}
	// API 1.41 has no os_type; 1.52 does.
	if strings.Contains(body, "os_type") {
		t.Errorf("a 1.41 record has os_type: %s", body)
	}
	if _, recs, _ := getStats(t, s, "/v1.52/containers/web/stats?stream=0&one-shot=1"); len(recs) != 1 || recs[0].OSType != "linux" {
		t.Errorf("a 1.52 record = %+v, want os_type linux", recs)
	}

	// Without one-shot: two samples an interval apart, the first as
	// precpu_stats, so that a CPU share can be had from one record.
	f.samples = 0
	code, recs, body = getStats(t, s, "/containers/web/stats?stream=false")
	if code != http.StatusOK || len(recs) != 1 || f.samples != 2 {
		t.Fatalf("stream=false: %d, %d samples taken: %s", code, f.samples, body)
	}
	if r := recs[0]; r.CPUStats.CPUUsage.TotalUsage != 2e9 || r.PreCPUStats.CPUUsage.TotalUsage != 1e9 ||
		r.PreCPUStats.SystemUsage != 2e9 || !r.PreRead.Equal(time.Date(2025, 1, 1, 0, 0, 1, 0, time.UTC)) {
		t.Errorf("stream=false record: cpu %+v precpu %+v preread %s; want the second sample over the first", r.CPUStats, r.PreCPUStats, r.PreRead)
	}

	// A stopped container: its name and ID, and nothing else, as dockerd.
	code, recs, body = getStats(t, s, "/containers/db/stats?stream=false")
	if code != http.StatusOK || len(recs) != 1 || !reflect.DeepEqual(recs[0], container.StatsResponse{ID: dbID, Name: "/db"}) {
		t.Errorf("stats of a stopped container: %d %s", code, body)
	}
	if !strings.Contains(body, `"read":"0001-01-01T00:00:00Z"`) {
		t.Errorf("stats of a stopped container has no zero read time: %s", body)
	}

	for path, want := range map[string]int{
		"/containers/nosuch/stats?stream=false":       http.StatusNotFound,
		"/containers/web/stats?stream=maybe":          http.StatusBadRequest,
		"/containers/web/stats?one-shot=1":            http.StatusBadRequest, // streams by default
		"/containers/web/stats?stream=1&one-shot=1":   http.StatusBadRequest,
		"/containers/web/stats?stream=0&one-shot=no!": http.StatusBadRequest,
	} {
		if code, _, body := getStats(t, s, path); code != want {
			t.Errorf("GET %s = %d %s, want %d", path, code, body, want)
		}
	}
}

// readRecords reads n records of a stats stream.
func readRecords(t *testing.T, dec *json.Decoder, n int) []container.StatsResponse {
	t.Helper()
	var out []container.StatsResponse
	for range n {
		var r container.StatsResponse
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("record %d of the stream: %v", len(out), err)
		}
		out = append(out, r)
	}
	return out
}

func TestContainerStatsStream(t *testing.T) {
	s, f := statsServer(t)
	hs := httptest.NewServer(s)
	defer hs.Close()

	resp, err := http.Get(hs.URL + "/v1.41/containers/web/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	recs := readRecords(t, dec, 3)
	// The first record has no previous one; each next one has its
	// predecessor's CPU figures and time.
	if !reflect.DeepEqual(recs[0].PreCPUStats, container.CPUStats{}) || !recs[0].PreRead.IsZero() {
		t.Errorf("first record's precpu %+v preread %s, want none", recs[0].PreCPUStats, recs[0].PreRead)
	}
	for i := 1; i < 3; i++ {
		if !reflect.DeepEqual(recs[i].PreCPUStats, recs[i-1].CPUStats) || !recs[i].PreRead.Equal(recs[i-1].Read) ||
			recs[i].CPUStats.CPUUsage.TotalUsage <= recs[i-1].CPUStats.CPUUsage.TotalUsage {
			t.Errorf("record %d: cpu %+v precpu %+v; want the previous record's cpu as precpu", i, recs[i].CPUStats, recs[i].PreCPUStats)
		}
	}
	// A sample the guest fails to give is an empty record; the stream
	// goes on.
	f.mu.Lock()
	f.fail = true
	f.mu.Unlock()
	var sawEmpty bool
	for _, r := range readRecords(t, dec, 3) {
		if r.ID == webID && r.Read.IsZero() && r.CPUStats.CPUUsage.TotalUsage == 0 {
			sawEmpty = true
		}
	}
	if !sawEmpty {
		t.Errorf("no empty record for the sample the guest did not give")
	}
	// Removed: the stream ends.
	f.mu.Lock()
	f.removed = true
	f.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		for {
			var r container.StatsResponse
			if err := dec.Decode(&r); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a removed container did not end")
	}

	// A stopped container streams empty records.
	resp2, err := http.Get(hs.URL + "/containers/db/stats?stream=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	for _, r := range readRecords(t, json.NewDecoder(resp2.Body), 2) {
		if !reflect.DeepEqual(r, container.StatsResponse{ID: dbID, Name: "/db"}) {
			t.Errorf("record of a stopped container: %+v", r)
		}
	}
}

// A daemon that stops ends its stats streams.
func TestContainerStatsStreamEndsWithTheServer(t *testing.T) {
	s, _ := statsServer(t)
	hs := httptest.NewServer(s)
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/containers/web/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	readRecords(t, dec, 1)
	s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for dec.Decode(&container.StatsResponse{}) == nil {
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stats stream went on after the server closed")
	}
}
