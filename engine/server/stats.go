package server

// docker top and docker stats: GET /containers/{id}/top and
// GET /containers/{id}/stats, in API 1.41's shapes, from the container
// service's process table and samples (which the guest agent reads in the
// container's VM).

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// statsInterval is how often a stats stream sends a record, and how far
// apart the two samples of a record without one-shot are: dockerd's
// collection interval. A variable for the tests.
var statsInterval = time.Second

// containerTop is GET /containers/{id}/top?ps_args=: the container's
// processes as ps would list them (containersvc.Top says which options).
func (s *Server) containerTop(w http.ResponseWriter, r *http.Request) {
	res, err := s.containers.Top(r.Context(), r.PathValue("id"), r.URL.Query().Get("ps_args"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, container.TopResponse{Titles: res.Titles, Processes: res.Processes})
}

// containerStats is GET /containers/{id}/stats?stream=&one-shot=, as
// dockerd answers it: with stream (the default) a record every
// statsInterval, each with the previous one's CPU figures as precpu_stats,
// until the client goes, the container is removed or the daemon stops;
// without, one record: taken after a first sample one interval earlier
// (precpu_stats), or at once with one-shot. A container that does not run
// gets records holding only its name and ID, as from dockerd.
func (s *Server) containerStats(w http.ResponseWriter, r *http.Request) {
	stream := true
	if r.URL.Query().Has("stream") {
		var err error
		if stream, err = boolParam(r, "stream"); err != nil {
			writeError(w, err)
			return
		}
	}
	oneShot, err := boolParam(r, "one-shot")
	if err != nil {
		writeError(w, err)
		return
	}
	if stream && oneShot {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "cannot have stream=true and one-shot=true"))
		return
	}
	ctx := r.Context()
	// The next sample is due an interval after this one was asked for,
	// however long the guest took to answer: the docker CLI gives up on a
	// record that takes two.
	due := time.Now().Add(statsInterval)
	sample, err := s.containers.Stats(ctx, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	withOSType := apiAtLeast(r, 52)
	var prev container.StatsResponse
	if !stream {
		if sample.Running && !oneShot {
			// The first sample primes precpu_stats, so that the record
			// gives a CPU share over the interval.
			prev = statsRecord(sample, nil, withOSType)
			if !sleepCtx(ctx, time.Until(due)) {
				return
			}
			if sample, err = s.containers.Stats(ctx, sample.ID); err != nil {
				writeError(w, err)
				return
			}
		}
		rec := statsRecord(sample, &prev, withOSType)
		writeJSON(w, http.StatusOK, &rec)
		return
	}

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	closing := s.streams.doneChan()
	ticker := time.NewTicker(statsInterval)
	defer ticker.Stop()
	for {
		rec := statsRecord(sample, &prev, withOSType)
		if enc.Encode(&rec) != nil || rc.Flush() != nil {
			return
		}
		prev = rec
		select {
		case <-ticker.C:
		case <-closing:
			return
		case <-ctx.Done():
			return
		}
		next, err := s.containers.Stats(ctx, sample.ID)
		switch {
		case errdefs.IsNotFound(err):
			return // removed: dockerd ends the stream
		case err != nil:
			// A guest that did not answer this time: dockerd sends an
			// empty record for a sample it could not take.
			next = containersvc.StatsSample{ID: sample.ID, Name: sample.Name}
		}
		sample = next
	}
}

// sleepCtx waits d (nothing if it is not positive), and reports false if
// ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// statsRecord is a sample in the API's shape (dockerd's of a cgroup v2
// host), with prev's CPU figures and time as the previous ones.
func statsRecord(sample containersvc.StatsSample, prev *container.StatsResponse, withOSType bool) container.StatsResponse {
	rec := container.StatsResponse{ID: sample.ID, Name: "/" + sample.Name}
	if withOSType {
		rec.OSType = "linux"
	}
	if prev != nil {
		rec.PreCPUStats, rec.PreRead = prev.CPUStats, prev.Read
	}
	if !sample.Running {
		return rec
	}
	st := sample.Stats
	rec.Read = st.Time
	rec.CPUStats = container.CPUStats{
		CPUUsage: container.CPUUsage{
			TotalUsage:        st.CPU.UsageUsec * 1000,
			UsageInKernelmode: st.CPU.SystemUsec * 1000,
			UsageInUsermode:   st.CPU.UserUsec * 1000,
		},
		SystemUsage: uint64(st.SystemCPU),
		OnlineCPUs:  uint32(st.OnlineCPUs),
		ThrottlingData: container.ThrottlingData{
			Periods: st.CPU.NrPeriods, ThrottledPeriods: st.CPU.NrThrottled, ThrottledTime: st.CPU.ThrottledUsec * 1000,
		},
	}
	limit := st.Memory.Limit
	if st.GuestMemory > 0 && limit > st.GuestMemory {
		// As dockerd caps a limit above the machine's memory.
		limit = st.GuestMemory
	}
	rec.MemoryStats = container.MemoryStats{
		Usage: st.Memory.Usage, Limit: limit, Stats: st.Memory.Stat, Failcnt: st.Memory.Events["oom"],
	}
	rec.PidsStats = container.PidsStats{Current: st.Pids.Current, Limit: st.Pids.Limit}
	for _, d := range st.IO {
		maj, min := uint64(d.Major), uint64(d.Minor)
		rec.BlkioStats.IoServiceBytesRecursive = append(rec.BlkioStats.IoServiceBytesRecursive,
			container.BlkioStatEntry{Major: maj, Minor: min, Op: "read", Value: d.ReadBytes},
			container.BlkioStatEntry{Major: maj, Minor: min, Op: "write", Value: d.WriteBytes})
		rec.BlkioStats.IoServicedRecursive = append(rec.BlkioStats.IoServicedRecursive,
			container.BlkioStatEntry{Major: maj, Minor: min, Op: "read", Value: d.ReadIOs},
			container.BlkioStatEntry{Major: maj, Minor: min, Op: "write", Value: d.WriteIOs})
	}
	if len(st.Networks) > 0 {
		rec.Networks = make(map[string]container.NetworkStats, len(st.Networks))
		for _, n := range st.Networks {
			rec.Networks[n.Name] = container.NetworkStats{
				RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
				TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped,
			}
		}
	}
	return rec
}
