package images

import (
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func hashN(n byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string("0123456789abcdef"[n%16]), 64)}
}

func TestProgressBoard(t *testing.T) {
	a, b := hashN(1), hashN(2)
	type step struct {
		p       Progress
		wantRow int
	}
	for _, tc := range []struct {
		name       string
		steps      []step
		wantStates []ProgressState
		done, tot  int64
	}{
		{
			name: "two layers, one already there",
			steps: []step{
				{Progress{Digest: a, State: StateWaiting, Total: 100}, 0},
				{Progress{Digest: b, State: StateWaiting, Total: 50}, 1},
				{Progress{Digest: b, State: StateAlreadyExists, Total: 50}, 1},
				{Progress{Digest: a, State: StateDownloading, Current: 40, Total: 100}, 0},
			},
			wantStates: []ProgressState{StateDownloading, StateAlreadyExists},
			done:       40, tot: 100,
		},
		{
			name: "stale and repeated events change nothing",
			steps: []step{
				{Progress{Digest: a, State: StateDownloading, Current: 60, Total: 100}, 0},
				{Progress{Digest: a, State: StateDownloading, Current: 60, Total: 100}, -1},
				{Progress{Digest: a, State: StateDone, Current: 100, Total: 100}, 0},
				{Progress{Digest: a, State: StateDownloading, Current: 80, Total: 100}, -1},
				{Progress{Digest: a, State: StateWaiting}, -1},
			},
			wantStates: []ProgressState{StateDone},
			done:       100, tot: 100,
		},
		{
			name: "byte count clamped to size, size kept when later events omit it",
			steps: []step{
				{Progress{Digest: a, State: StatePreparing, Total: 10}, 0},
				{Progress{Digest: a, State: StatePushing, Current: 25, Total: 10}, 0},
				{Progress{Digest: b, State: StateLayerExists, Total: 7}, 1},
				{Progress{Digest: a, State: StatePushed}, 0},
			},
			wantStates: []ProgressState{StatePushed, StateLayerExists},
			done:       10, tot: 10,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var board ProgressBoard
			for i, s := range tc.steps {
				if got := board.Update(s.p); got != s.wantRow {
					t.Errorf("step %d: Update(%+v) = %d, want %d", i, s.p, got, s.wantRow)
				}
			}
			rows := board.Rows()
			if len(rows) != len(tc.wantStates) {
				t.Fatalf("Rows() has %d rows, want %d", len(rows), len(tc.wantStates))
			}
			for i, r := range rows {
				if r.State != tc.wantStates[i] {
					t.Errorf("row %d state %q, want %q", i, r.State, tc.wantStates[i])
				}
			}
			if d, tot := board.Totals(); d != tc.done || tot != tc.tot {
				t.Errorf("Totals() = %d/%d, want %d/%d", d, tot, tc.done, tc.tot)
			}
		})
	}
}

func TestBar(t *testing.T) {
	d := hashN(3)
	for _, tc := range []struct {
		p    Progress
		want string
	}{
		{Progress{Digest: d, State: StateDownloading, Current: 0, Total: 100}, "[          ]"},
		{Progress{Digest: d, State: StateDownloading, Current: 50, Total: 100}, "[====>     ]"},
		{Progress{Digest: d, State: StatePushing, Current: 100, Total: 100}, "[==========]"},
		{Progress{Digest: d, State: StateDone, Current: 100, Total: 100}, ""},
		{Progress{Digest: d, State: StateDownloading, Current: 5}, ""},
	} {
		if got := Bar(tc.p, 12); got != tc.want {
			t.Errorf("Bar(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
	if id := (Progress{Digest: d}).ID(); id != "333333333333" {
		t.Errorf("ID() = %q", id)
	}
}

func TestReporterThrottlesByteCounts(t *testing.T) {
	var got []Progress
	r := newReporter(func(p Progress) { got = append(got, p) })
	d := hashN(4)
	r.emit(Progress{Digest: d, State: StateDownloading, Total: 100})
	for i := int64(1); i < 100; i++ {
		r.emit(Progress{Digest: d, State: StateDownloading, Current: i, Total: 100})
	}
	r.emit(Progress{Digest: d, State: StateDownloading, Current: 100, Total: 100})
	r.emit(Progress{Digest: d, State: StateDone, Current: 100, Total: 100})
	// The start, the end of the transfer and every state change get
	// through; counts in between are limited to one per interval, and
	// this loop takes far less than one.
	if len(got) > 4 {
		t.Errorf("%d events reached the callback, want at most 4", len(got))
	}
	if last := got[len(got)-1]; last.State != StateDone {
		t.Errorf("last event %+v, want the final state", last)
	}
	time.Sleep(progressInterval)
	r.emit(Progress{Digest: d, State: StateDownloading, Current: 50, Total: 100})
	if got[len(got)-1].Current != 50 {
		t.Errorf("a byte count after the interval was dropped")
	}
	var nilRep *reporter
	nilRep.emit(Progress{Digest: d}) // must not panic
}

func TestProgressTransferring(t *testing.T) {
	for _, s := range []ProgressState{StateWaiting, StateDownloading, StateVerifying, StateAlreadyExists, StateDone,
		StatePreparing, StatePushing, StateLayerExists, StatePushed} {
		want := s == StateDownloading || s == StatePushing
		if got := (Progress{State: s}).Transferring(); got != want {
			t.Errorf("Progress{State: %q}.Transferring() = %v, want %v", s, got, want)
		}
	}
}
