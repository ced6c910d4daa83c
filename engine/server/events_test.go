package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/containers"
	engevents "github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/images"
)

func TestFilterTerms(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string
		bad  bool
	}{
		{"", "map[]", false},
		{`{"status":{"exited":true,"created":true}}`, "map[status:[created exited]]", false},
		{`{"name":{"web":true,"off":false}}`, "map[name:[web]]", false},
		{`{"status":["running"]}`, "map[status:[running]]", false},
		{`{"status":"running"}`, "", true},
		{`[`, "", true},
	} {
		r := httptest.NewRequest("GET", "/containers/json?filters="+url.QueryEscape(tc.raw), nil)
		got, err := filterTerms(r)
		if tc.bad {
			if err == nil {
				t.Errorf("filterTerms(%s) = %v, want an error", tc.raw, got)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != tc.want && !(len(got) == 0 && tc.want == "map[]") {
			t.Errorf("filterTerms(%s) = %v, %v; want %s", tc.raw, got, err, tc.want)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "", want: time.Time{}},
		{in: "1700000000", want: time.Unix(1700000000, 0)},
		{in: "1700000000.5", want: time.Unix(1700000000, 500000000)},
		{in: "1700000000.000000001", want: time.Unix(1700000000, 1)},
		{in: "2023-11-14T22:13:20Z", want: time.Unix(1700000000, 0)},
		{in: "1700000000.", bad: true},
		{in: "1700000000.1234567890", bad: true},
		{in: "yesterday", bad: true},
	} {
		got, err := parseTimestamp("since", tc.in)
		if tc.bad != (err != nil) || !got.Equal(tc.want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v (error: %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// readEvents decodes a finished /events response.
func readEvents(t *testing.T, body string) []eventMessage {
	t.Helper()
	var out []eventMessage
	dec := json.NewDecoder(strings.NewReader(body))
	for dec.More() {
		var m eventMessage
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("decode %q: %v", body, err)
		}
		out = append(out, m)
	}
	return out
}

func TestEventsReplay(t *testing.T) {
	svc := newTestServices(t)
	s := New(svc)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	for i, e := range []engevents.Event{
		{Type: engevents.TypeContainer, Action: "create", ID: "c1", Attributes: map[string]string{"name": "web", "image": "busybox"}},
		{Type: engevents.TypeContainer, Action: "die", ID: "c1", Attributes: map[string]string{"name": "web", "image": "busybox", "exitCode": "3"}},
		{Type: engevents.TypeImage, Action: "pull", ID: "busybox:latest", Attributes: map[string]string{"name": "busybox:latest"}},
		{Type: engevents.TypeContainer, Action: "destroy", ID: "c2", Attributes: map[string]string{"name": "db"}},
	} {
		e.Time = t0.Add(time.Duration(i) * time.Second)
		svc.Events.Publish(e)
	}
	ts := func(d time.Duration) string { return fmt.Sprintf("%d.%09d", t0.Add(d).Unix(), 0) }
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"since=" + ts(0) + "&until=" + ts(10*time.Second), "container/create/c1 container/die/c1 image/pull/busybox:latest container/destroy/c2"},
		{"since=" + ts(time.Second) + "&until=" + ts(2*time.Second), "container/die/c1 image/pull/busybox:latest"},
		{"since=" + ts(0) + "&until=" + ts(10*time.Second) + "&filters=" + url.QueryEscape(`{"type":{"image":true}}`), "image/pull/busybox:latest"},
		{"since=" + ts(0) + "&until=" + ts(10*time.Second) + "&filters=" + url.QueryEscape(`{"container":{"web":true},"event":{"die":true}}`), "container/die/c1"},
	} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/v1.41/events?"+tc.query, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /events?%s = %d %s", tc.query, rec.Code, rec.Body)
		}
		var got []string
		for _, m := range readEvents(t, rec.Body.String()) {
			got = append(got, fmt.Sprintf("%s/%s/%s", m.Type, m.Action, m.Actor.ID))
			if m.Scope != "local" || m.TimeNano == 0 || m.Time != m.TimeNano/1e9 {
				t.Errorf("event %+v: want scope local and matching time, timeNano", m)
			}
			if m.Type == "container" && (m.Status != string(m.Action) || m.ID != m.Actor.ID) {
				t.Errorf("container event %+v: want the 1.41 status and id fields", m)
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("GET /events?%s = %s, want %s", tc.query, strings.Join(got, " "), tc.want)
		}
	}
	// --until alone replays the kept events up to it, as dockerd does
	// (docker events --until without --since shows the history).
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/v1.41/events?until="+ts(2*time.Second), nil))
	var got []string
	for _, m := range readEvents(t, rec.Body.String()) {
		got = append(got, string(m.Action))
	}
	if strings.Join(got, " ") != "create die pull" {
		t.Errorf("GET /events?until=t0+2s = %v, want create die pull", got)
	}
	die := readEvents(t, func() string {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/events?since="+ts(time.Second)+"&until="+ts(time.Second), nil))
		return rec.Body.String()
	}())
	if len(die) != 1 || die[0].Actor.Attributes["exitCode"] != "3" || die[0].From != "busybox" {
		t.Errorf("die event = %+v, want exitCode 3 from busybox", die)
	}
}

func TestEventsBadInput(t *testing.T) {
	s := newTestServer(t)
	for _, tc := range []struct {
		path string
		msg  string
	}{
		{"/events?filters=" + url.QueryEscape(`{"colour":{"red":true}}`), "invalid filter 'colour'"},
		{"/events?since=soon", `invalid since`},
		{"/events?since=20&until=10", "since time (20) cannot be after until time (10)"},
		{"/containers/json?filters=" + url.QueryEscape(`{"colour":{"red":true}}`), "invalid filter 'colour'"},
		{"/containers/json?filters=" + url.QueryEscape(`{"status":{"asleep":true}}`), "invalid filter 'status=asleep'"},
		{"/containers/json?filters=%7B", "invalid filters"},
	} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.msg) {
			t.Errorf("GET %s = %d %s, want 400 with %q", tc.path, rec.Code, strings.TrimSpace(rec.Body.String()), tc.msg)
		}
	}
}

// A live stream delivers events as they are published and ends when the
// server closes.
func TestEventsLive(t *testing.T) {
	svc := newTestServices(t)
	s := New(svc)
	hs := httptest.NewServer(s)
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/events?filters=" + url.QueryEscape(`{"event":{"start":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The handler subscribes before it sends the headers, so what is
	// published from now on reaches it.
	svc.Events.Publish(engevents.Event{Type: engevents.TypeContainer, Action: "create", ID: "c1"})
	svc.Events.Publish(engevents.Event{Type: engevents.TypeContainer, Action: "start", ID: "c1"})
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() {
		t.Fatalf("no event: %v", lines.Err())
	}
	var m eventMessage
	if err := json.Unmarshal(lines.Bytes(), &m); err != nil || m.Action != "start" || m.Actor.ID != "c1" {
		t.Fatalf("live event = %s (%v), want the start of c1", lines.Text(), err)
	}
	done := make(chan bool)
	go func() { done <- lines.Scan() }()
	s.Close()
	select {
	case more := <-done:
		if more {
			t.Errorf("stream went on after Close: %s", lines.Text())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end on Close")
	}
}

// Image and volume handlers report their events.
func TestImageAndVolumeEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("makes an ext4 disk")
	}
	svc := newTestServices(t)
	s := New(svc)
	_, sub := svc.Events.Subscribe(time.Time{}, nil)
	defer sub.Close()
	img := randomImage(t)
	id := imageID(t, img)
	steps := []struct {
		method, path string
		body         []byte
	}{
		{"POST", "/v1.41/images/load", archiveOf(t, images.NamedImage{Tag: "app:1", Image: img})},
		{"POST", "/v1.41/images/app:1/tag?repo=app&tag=2", nil},
		{"DELETE", "/v1.41/images/app:2", nil},
		{"DELETE", "/v1.41/images/app:1", nil},
		{"POST", "/v1.41/volumes/create", []byte(`{"Name":"data","DriverOpts":{"size":"16m"}}`)},
		{"DELETE", "/v1.41/volumes/data", nil},
	}
	for _, st := range steps {
		var body io.Reader
		if st.body != nil {
			body = bytes.NewReader(st.body)
		}
		req := httptest.NewRequest(st.method, st.path, body)
		if st.body != nil && strings.Contains(st.path, "volumes") {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code >= 300 {
			t.Fatalf("%s %s = %d %s", st.method, st.path, rec.Code, rec.Body)
		}
	}
	want := []string{
		"image load " + id + " name=app:1",
		"image tag " + id + " name=app:2",
		"image untag " + id + " name=app:2",
		"image untag " + id + " name=app:1",
		"image delete " + id + " name=" + id,
		"volume create data driver=local",
		"volume destroy data driver=local",
	}
	for i, w := range want {
		select {
		case e := <-sub.C():
			got := fmt.Sprintf("%s %s %s", e.Type, e.Action, e.ID)
			for _, k := range []string{"name", "driver"} {
				if v, ok := e.Attributes[k]; ok {
					got += " " + k + "=" + v
				}
			}
			if got != w {
				t.Errorf("event %d = %q, want %q", i, got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) never came", i, w)
		}
	}
}

// FuzzFilterInput: no filters parameter, since or until makes the
// handlers' parsing panic.
func FuzzFilterInput(f *testing.F) {
	f.Add(`{"status":{"exited":true}}`, "1700000000.5")
	f.Add(`{"name":["("],"before":["x"]}`, "2023-11-14T22:13:20Z")
	f.Add(`{"label":{"a=b":true},"exited":{"-1":true}}`, "-5.")
	f.Fuzz(func(t *testing.T, filters, ts string) {
		r := httptest.NewRequest("GET", "/containers/json?filters="+url.QueryEscape(filters), nil)
		terms, err := filterTerms(r)
		if err != nil {
			return
		}
		engevents.NewFilter(terms)
		containers.Select([]*containers.Container{{ID: strings.Repeat("a", 64), Name: "web"}}, containers.ListOptions{Filters: terms})
		parseTimestamp("since", ts)
	})
}
