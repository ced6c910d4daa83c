package main

// vmctl top and vmctl stats: docker top's and docker stats's commands, with
// their output, over GET /containers/{id}/top and /containers/{id}/stats.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/cli/command/formatter/tabwriter"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func newTopCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top CONTAINER [ps OPTIONS]",
		Short: "Show a container's processes as ps would: -ef by default, aux, -e, ax, -o FORMAT",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.onEngine("top", false, func(r *remote) error {
				res, err := r.api.ContainerTop(cmd.Context(), args[0], client.ContainerTopOptions{Arguments: args[1:]})
				if err != nil {
					return r.fail(err)
				}
				writeTop(os.Stdout, res.Titles, res.Processes)
				return nil
			})
		},
	}
	// Everything after the container is ps's.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// writeTop prints a ps table as docker top does.
func writeTop(out io.Writer, titles []string, procs [][]string) {
	w := tabwriter.NewWriter(out, 20, 1, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(titles, "\t"))
	for _, p := range procs {
		fmt.Fprintln(w, strings.Join(p, "\t"))
	}
	w.Flush()
}

type statsOptions struct {
	all, noStream, noTrunc bool
	format                 string
}

func newStatsCommand(g *globalOptions) *cobra.Command {
	var o statsOptions
	cmd := &cobra.Command{
		Use:   "stats [-a] [--no-stream] [--no-trunc] [--format F] [CONTAINER...]",
		Short: "Show containers' CPU, memory, network, block I/O and PIDs, live (all running containers by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.onEngine("stats", false, func(r *remote) error { return r.stats(ctx, args, o) })
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.all, "all", "a", false, "show all containers, not only running ones")
	f.BoolVar(&o.noStream, "no-stream", false, "print one sample and exit")
	f.BoolVar(&o.noTrunc, "no-trunc", false, "do not truncate IDs")
	f.StringVar(&o.format, "format", "", `"table", "json", "table TEMPLATE" or a Go template ({{.Name}}, {{.CPUPerc}}, {{.MemUsage}}...)`)
	return cmd
}

// statsRow is one container's figures, as docker stats computes them from
// a record.
type statsRow struct {
	ref                               string // what it was asked for by
	id, name                          string
	cpuPercent, mem, memLimit, memPct float64
	netRx, netTx, blkRead, blkWrite   float64
	pids                              uint64
	valid                             bool
	err                               error
}

// statsTable holds the rows being collected, in the order they came.
type statsTable struct {
	mu   sync.Mutex
	rows []*statsRow
}

func (t *statsTable) add(ref string) (*statsRow, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.rows {
		if r.ref == ref || r.id == ref {
			return r, false
		}
	}
	r := &statsRow{ref: ref}
	t.rows = append(t.rows, r)
	return r, true
}

func (t *statsTable) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, r := range t.rows {
		if r.id == id || r.ref == id {
			t.rows = append(t.rows[:i], t.rows[i+1:]...)
			return
		}
	}
}

func (t *statsTable) snapshot() []statsRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]statsRow, len(t.rows))
	for i, r := range t.rows {
		out[i] = *r
	}
	return out
}

func (t *statsTable) set(r *statsRow, rec container.StatsResponse, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		r.err, r.valid = err, false
		return
	}
	r.err, r.valid = nil, true
	r.id, r.name = rec.ID, strings.TrimPrefix(rec.Name, "/")
	r.cpuPercent = cpuPercent(rec.PreCPUStats, rec.CPUStats)
	r.mem = memoryUsage(rec.MemoryStats)
	r.memLimit = float64(rec.MemoryStats.Limit)
	r.memPct = 0
	if r.memLimit > 0 {
		r.memPct = r.mem / r.memLimit * 100
	}
	r.netRx, r.netTx = 0, 0
	for _, n := range rec.Networks {
		r.netRx += float64(n.RxBytes)
		r.netTx += float64(n.TxBytes)
	}
	r.blkRead, r.blkWrite = 0, 0
	for _, e := range rec.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			r.blkRead += float64(e.Value)
		case "write":
			r.blkWrite += float64(e.Value)
		}
	}
	r.pids = rec.PidsStats.Current
}

// cpuPercent is the container's share of the machine's CPUs between two
// records, in percent of one CPU, as docker stats computes it.
func cpuPercent(prev, cur container.CPUStats) float64 {
	cpuDelta := float64(cur.CPUUsage.TotalUsage) - float64(prev.CPUUsage.TotalUsage)
	systemDelta := float64(cur.SystemUsage) - float64(prev.SystemUsage)
	online := float64(cur.OnlineCPUs)
	if online == 0 {
		online = float64(len(cur.CPUUsage.PercpuUsage))
	}
	if systemDelta > 0 && cpuDelta > 0 {
		return cpuDelta / systemDelta * online * 100
	}
	return 0
}

// memoryUsage is the usage less the inactive page cache, as docker stats
// shows it (cgroup v2's inactive_file, v1's total_inactive_file).
func memoryUsage(m container.MemoryStats) float64 {
	if v, ok := m.Stats["total_inactive_file"]; ok && v < m.Usage {
		return float64(m.Usage - v)
	}
	if v := m.Stats["inactive_file"]; v < m.Usage {
		return float64(m.Usage - v)
	}
	return float64(m.Usage)
}

// collect reads ref's stats records into row: one, or with stream every
// one until ctx ends or the stream does. first is told of the first
// record (or of the failure to get one).
func (r *remote) collect(ctx context.Context, t *statsTable, row *statsRow, stream bool, first func()) {
	var once sync.Once
	defer once.Do(first)
	res, err := r.api.ContainerStats(ctx, row.ref, client.ContainerStatsOptions{Stream: stream, IncludePreviousSample: !stream})
	if err != nil {
		t.set(row, container.StatsResponse{}, r.fail(err))
		return
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	for {
		var rec container.StatsResponse
		if err := dec.Decode(&rec); err != nil {
			if ctx.Err() == nil && !errors.Is(err, io.EOF) {
				t.set(row, rec, err)
			}
			return
		}
		t.set(row, rec, nil)
		once.Do(first)
		if !stream {
			return
		}
	}
}

// stats is docker stats: the containers named, or every running one (with
// all, every one) and, streaming, those that start later.
func (r *remote) stats(ctx context.Context, refs []string, o statsOptions) error {
	format := o.format
	if format == "" {
		format = formatter.TableFormatKey
	}
	if format == formatter.TableFormatKey {
		format = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	table := &statsTable{}
	var waitFirst sync.WaitGroup
	start := func(ref string) {
		if row, added := table.add(ref); added {
			waitFirst.Add(1)
			go r.collect(ctx, table, row, !o.noStream, waitFirst.Done)
		}
	}
	showAll := len(refs) == 0
	if showAll {
		if !o.noStream {
			// Asked for before the list, so that no start falls between.
			res := r.api.Events(ctx, client.EventsListOptions{Filters: client.Filters{}.Add("type", string(events.ContainerEventType))})
			go followContainers(ctx, res, table, o.all, start)
		}
		list, err := r.api.ContainerList(ctx, client.ContainerListOptions{All: o.all})
		if err != nil {
			return r.fail(err)
		}
		for _, c := range list.Items {
			start(c.ID)
		}
	}
	for _, ref := range refs {
		start(ref)
	}
	waitFirst.Wait()
	if !showAll {
		var errs []string
		for _, row := range table.snapshot() {
			if row.err != nil {
				errs = append(errs, oneLine(row.err))
			}
		}
		if len(errs) > 0 {
			return errors.New(strings.Join(errs, "; "))
		}
	}
	if o.noStream {
		return writeStats(os.Stdout, table.snapshot(), format, !o.noTrunc)
	}
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	var frame, rendered bytes.Buffer
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		rows := table.snapshot()
		if len(rows) == 0 && !showAll {
			return nil
		}
		rendered.Reset()
		if err := writeStats(&rendered, rows, format, !o.noTrunc); err != nil {
			return err
		}
		// Over the last frame, each line cleared to its end, the rest of
		// the screen below.
		frame.Reset()
		frame.WriteString("\033[H")
		for _, line := range bytes.Split(rendered.Bytes(), []byte{'\n'}) {
			frame.Write(line)
			frame.WriteString("\033[K\n")
		}
		frame.WriteString("\033[J")
		os.Stdout.Write(frame.Bytes())
	}
}

// followContainers adds the containers that start (with all, that are
// created) to the table and drops those that die (with all, that are
// removed), as docker stats does without names.
func followContainers(ctx context.Context, res client.EventsResult, t *statsTable, all bool, start func(string)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-res.Err:
			return
		case e := <-res.Messages:
			switch e.Action {
			case events.ActionStart:
				start(e.Actor.ID)
			case events.ActionCreate:
				if all {
					start(e.Actor.ID)
				}
			case events.ActionDie:
				if !all {
					t.remove(e.Actor.ID)
				}
			case events.ActionDestroy:
				t.remove(e.Actor.ID)
			}
		}
	}
}

// writeStats prints rows in format: docker stats's table or a template.
func writeStats(w io.Writer, rows []statsRow, format string, trunc bool) error {
	ctx := formatter.Context{Output: w, Format: formatter.Format(format)}
	header := statsCell{}
	header.Header = formatter.SubHeaderContext{
		"Container": "CONTAINER", "Name": formatter.NameHeader, "ID": formatter.ContainerIDHeader,
		"CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
		"BlockIO": "BLOCK I/O", "PIDs": "PIDS",
	}
	err := ctx.Write(&header, func(format func(formatter.SubContext) error) error {
		for _, r := range rows {
			if err := format(&statsCell{row: r, trunc: trunc}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return formatError(err)
	}
	return nil
}

// statsCell is one row for docker stats's templates.
type statsCell struct {
	formatter.HeaderContext
	row   statsRow
	trunc bool
}

func (c *statsCell) MarshalJSON() ([]byte, error) { return formatter.MarshalJSON(c) }

func (c *statsCell) Container() string { return c.row.ref }

func (c *statsCell) Name() string {
	if c.row.name == "" {
		return "--"
	}
	return c.row.name
}

func (c *statsCell) ID() string {
	id := c.row.id
	if id == "" {
		id = c.row.ref
	}
	if c.trunc {
		return formatter.TruncateID(id)
	}
	return id
}

func (c *statsCell) CPUPerc() string {
	if !c.row.valid {
		return "--"
	}
	return percent(c.row.cpuPercent)
}

func (c *statsCell) MemUsage() string {
	if !c.row.valid {
		return "-- / --"
	}
	return units.BytesSize(c.row.mem) + " / " + units.BytesSize(c.row.memLimit)
}

func (c *statsCell) MemPerc() string {
	if !c.row.valid {
		return "--"
	}
	return percent(c.row.memPct)
}

func (c *statsCell) NetIO() string {
	if !c.row.valid {
		return "--"
	}
	return units.HumanSizeWithPrecision(c.row.netRx, 3) + " / " + units.HumanSizeWithPrecision(c.row.netTx, 3)
}

func (c *statsCell) BlockIO() string {
	if !c.row.valid {
		return "--"
	}
	return units.HumanSizeWithPrecision(c.row.blkRead, 3) + " / " + units.HumanSizeWithPrecision(c.row.blkWrite, 3)
}

func (c *statsCell) PIDs() string {
	if !c.row.valid {
		return "--"
	}
	return strconv.FormatUint(c.row.pids, 10)
}

func percent(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "%" }
