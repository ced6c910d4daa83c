package images

import (
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ProgressState is where one blob of a pull or push stands. The values are
// the status words Docker prints and streams, so a daemon can forward them
// as JSON progress messages unchanged.
type ProgressState string

// Pull states, in the order a layer goes through them.
const (
	StateWaiting     ProgressState = "Waiting"
	StateDownloading ProgressState = "Downloading"
	StateVerifying   ProgressState = "Verifying Checksum"
	// StateAlreadyExists: the layer was in the store, nothing was fetched.
	StateAlreadyExists ProgressState = "Already exists"
	StateDone          ProgressState = "Pull complete"
)

// Push states.
const (
	StatePreparing ProgressState = "Preparing"
	StatePushing   ProgressState = "Pushing"
	// StateLayerExists: the registry had the blob, nothing was sent.
	StateLayerExists ProgressState = "Layer already exists"
	StatePushed      ProgressState = "Pushed"
)

// rank orders states so that a late event never moves a layer backwards.
func (s ProgressState) rank() int {
	switch s {
	case StateWaiting, StatePreparing:
		return 0
	case StateDownloading, StatePushing:
		return 1
	case StateVerifying:
		return 2
	case StateAlreadyExists, StateDone, StateLayerExists, StatePushed:
		return 3
	}
	return -1
}

// Final says whether the state is the last one a layer reaches.
func (s ProgressState) Final() bool { return s.rank() == 3 }

// Progress is one event about one layer.
type Progress struct {
	Digest v1.Hash
	State  ProgressState
	// Current and Total are bytes transferred and the blob's size; Current
	// is meaningful while downloading or pushing.
	Current, Total int64
}

// ID is the short form Docker shows for a layer: 12 hex digits.
func (p Progress) ID() string {
	h := p.Digest.Hex
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// Transferring says whether the blob's bytes are on the move (downloading or
// pushing), the states in which Current and Total count them.
func (p Progress) Transferring() bool {
	return p.State == StateDownloading || p.State == StatePushing
}

// ProgressFunc receives events. Pull and Push never call it from two
// goroutines at once, so it needs no locking of its own.
type ProgressFunc func(Progress)

// reporter serialises events from parallel transfers and throttles byte
// counts, which would otherwise arrive once per read.
type reporter struct {
	mu   sync.Mutex
	fn   ProgressFunc
	last map[v1.Hash]time.Time
}

// progressInterval bounds how often byte counts of one layer are reported.
const progressInterval = 100 * time.Millisecond

func newReporter(fn ProgressFunc) *reporter {
	return &reporter{fn: fn, last: map[v1.Hash]time.Time{}}
}

func (r *reporter) emit(p Progress) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.State == StateDownloading || p.State == StatePushing {
		now := time.Now()
		if p.Current != 0 && p.Current < p.Total && now.Sub(r.last[p.Digest]) < progressInterval {
			return
		}
		r.last[p.Digest] = now
	}
	r.fn(p)
}

// countingReader reports bytes read through it.
type countingReader struct {
	r     interface{ Read([]byte) (int, error) }
	n     int64
	total int64
	state ProgressState
	d     v1.Hash
	rep   *reporter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n += int64(n)
		c.rep.emit(Progress{Digest: c.d, State: c.state, Current: c.n, Total: c.total})
	}
	return n, err
}

// ProgressBoard aggregates events into one row per layer, in the order
// layers were first seen, which is what a front end draws: the CLI as
// progress bars, a daemon as a JSON stream. It is not safe for concurrent
// use; feed it from one ProgressFunc.
type ProgressBoard struct {
	rows  []Progress
	index map[v1.Hash]int
}

// Update applies p and returns the row it changed, or -1 if p changed
// nothing: a stale event that would move a layer back, or a repeat.
func (b *ProgressBoard) Update(p Progress) int {
	if b.index == nil {
		b.index = map[v1.Hash]int{}
	}
	if p.Total > 0 && p.Current > p.Total {
		p.Current = p.Total
	}
	i, ok := b.index[p.Digest]
	if !ok {
		b.index[p.Digest] = len(b.rows)
		b.rows = append(b.rows, p)
		return len(b.rows) - 1
	}
	old := b.rows[i]
	if p.State.rank() < old.State.rank() {
		return -1
	}
	if p.State == old.State && p.Current <= old.Current && p.Total == old.Total {
		return -1
	}
	if p.Total == 0 {
		p.Total = old.Total
	}
	b.rows[i] = p
	return i
}

// Rows returns the current state of every layer seen, in first-seen order.
func (b *ProgressBoard) Rows() []Progress { return append([]Progress(nil), b.rows...) }

// Totals returns bytes transferred and bytes to transfer over the layers
// that needed a transfer (layers the other side already had count for
// neither).
func (b *ProgressBoard) Totals() (done, total int64) {
	for _, r := range b.rows {
		if r.State == StateAlreadyExists || r.State == StateLayerExists {
			continue
		}
		total += r.Total
		switch {
		case r.State.rank() >= 2:
			done += r.Total
		case r.State.rank() == 1:
			done += r.Current
		}
	}
	return done, total
}

// Count returns how many layers are in state s.
func (b *ProgressBoard) Count(s ProgressState) int {
	n := 0
	for _, r := range b.rows {
		if r.State == s {
			n++
		}
	}
	return n
}

// Bar renders a Docker-style bar of width cells for a row in transfer,
// e.g. "[=====>      ]"; it is empty for rows without a byte count.
func Bar(p Progress, width int) string {
	if p.Total <= 0 || width < 3 || p.State.rank() != 1 {
		return ""
	}
	inner := width - 2
	filled := int(int64(inner) * p.Current / p.Total)
	filled = max(0, min(filled, inner))
	var sb strings.Builder
	sb.WriteByte('[')
	if filled > 0 {
		sb.WriteString(strings.Repeat("=", filled-1))
		if filled == inner {
			sb.WriteByte('=')
		} else {
			sb.WriteByte('>')
		}
	}
	sb.WriteString(strings.Repeat(" ", inner-filled))
	sb.WriteByte(']')
	return sb.String()
}
