package server

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"

	"github.com/vmctl/vmctl/engine/errs"
	engevents "github.com/vmctl/vmctl/engine/events"
)

// eventMessage is an event on the wire: moby's events.Message plus the
// status/id/from fields that API 1.41 still sends for container and image
// events, which older clients read.
type eventMessage struct {
	Status string `json:"status,omitempty"`
	ID     string `json:"id,omitempty"`
	From   string `json:"from,omitempty"`
	events.Message
}

func wireEvent(e engevents.Event) eventMessage {
	m := eventMessage{Message: events.Message{
		Type: events.Type(e.Type), Action: events.Action(e.Action),
		Actor: events.Actor{ID: e.ID, Attributes: e.Attributes},
		Scope: "local", Time: e.Time.Unix(), TimeNano: e.Time.UnixNano(),
	}}
	if m.Actor.Attributes == nil {
		m.Actor.Attributes = map[string]string{}
	}
	if e.Type == engevents.TypeContainer || e.Type == engevents.TypeImage {
		m.Status, m.ID = e.Action, e.ID
		if e.Type == engevents.TypeContainer {
			m.From = e.Attributes["image"]
		}
	}
	return m
}

// eventStreams are the open GET /events responses, ended by Server.Close
// so that a daemon shutting down does not wait for its event readers.
type eventStreams struct {
	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by closeAll; made on first use
}

func (es *eventStreams) doneChan() <-chan struct{} {
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.done == nil {
		es.done = make(chan struct{})
	}
	return es.done
}

func (es *eventStreams) closeAll() {
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.done == nil {
		es.done = make(chan struct{})
	}
	if !es.closed {
		es.closed = true
		close(es.done)
	}
}

// systemEvents is GET /events: the kept events since ?since= that match
// ?filters=, then the live ones, until ?until= or until the client goes.
// Without since or until, only live events; with an until in the past,
// only kept ones.
func (s *Server) systemEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := parseTimestamp("since", q.Get("since"))
	if err != nil {
		writeError(w, err)
		return
	}
	until, err := parseTimestamp("until", q.Get("until"))
	if err != nil {
		writeError(w, err)
		return
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "since time (%s) cannot be after until time (%s)", q.Get("since"), q.Get("until")))
		return
	}
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	filter, err := engevents.NewFilter(terms)
	if err != nil {
		writeError(w, err)
		return
	}
	// dockerd replays its kept events when either bound is given: an until
	// alone means the history up to it (docker events --until 0s).
	replayFrom := since
	if replayFrom.IsZero() && !until.IsZero() {
		replayFrom = time.Unix(0, 0)
	}
	past, sub := s.events.Subscribe(replayFrom, filter.Match)
	defer sub.Close()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	// send reports whether the stream goes on.
	send := func(e engevents.Event) bool {
		if !until.IsZero() && e.Time.After(until) {
			return false
		}
		if err := enc.Encode(wireEvent(e)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, e := range past {
		if !send(e) {
			return
		}
	}
	var deadline <-chan time.Time
	if !until.IsZero() {
		wait := time.Until(until)
		if wait <= 0 {
			return
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		deadline = timer.C
	}
	closing := s.streams.doneChan()
	for {
		select {
		case e, ok := <-sub.C():
			if !ok || !send(e) {
				// A reader too slow for the event rate is disconnected
				// (engine/events); it sees its stream end.
				return
			}
		case <-deadline:
			return
		case <-closing:
			return
		case <-r.Context().Done():
			return
		}
	}
}
