package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
)

func TestParseFilters(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		bad  bool
	}{
		{in: nil, want: "{}"},
		{in: []string{"name=web", "status=exited", "name=db"}, want: `{"name":{"db":true,"web":true},"status":{"exited":true}}`},
		{in: []string{"label=a=b"}, want: `{"label":{"a=b":true}}`},
		{in: []string{"Status=running"}, want: `{"status":{"running":true}}`},
		{in: []string{"web"}, bad: true},
		{in: []string{"=x"}, bad: true},
	} {
		f, err := parseFilters(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseFilters(%q) = %v, want an error", tc.in, f)
			}
			continue
		}
		b, _ := json.Marshal(f)
		if err != nil || string(b) != tc.want {
			t.Errorf("parseFilters(%q) = %s, %v; want %s", tc.in, b, err, tc.want)
		}
	}
}

func TestWriteContainers(t *testing.T) {
	list := []container.Summary{{
		ID: strings.Repeat("ab", 32), Names: []string{"/web"}, Image: "busybox", Command: "sh -c 'sleep 100'",
		Created: time.Now().Add(-time.Hour).Unix(), State: "exited", Status: "Exited (3) 2 minutes ago",
		Labels: map[string]string{"tier": "front"},
	}}
	for _, tc := range []struct {
		name, format   string
		quiet, noTrunc bool
		want           []string // lines, with runs of spaces collapsed
	}{
		{name: "default", want: []string{
			"CONTAINER ID IMAGE COMMAND CREATED STATUS PORTS NAMES",
			`abababababab busybox "sh -c 'sleep 100'" About an hour ago Exited (3) 2 minutes ago web`}},
		{name: "template", format: "{{.Names}} {{.Status}}", want: []string{"web Exited (3) 2 minutes ago"}},
		{name: "table", format: "table {{.ID}}\t{{.Label \"tier\"}}", want: []string{"CONTAINER ID tier", "abababababab front"}},
		{name: "no-trunc", format: "{{.ID}}", noTrunc: true, want: []string{strings.Repeat("ab", 32)}},
		{name: "quiet", quiet: true, want: []string{"abababababab"}},
		{name: "labels", format: "{{.Labels}} {{.State}}", want: []string{"tier=front exited"}},
	} {
		var out bytes.Buffer
		if err := writeContainers(&out, list, tc.format, tc.quiet, tc.noTrunc); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		for i := range got {
			got[i] = strings.Join(strings.Fields(got[i]), " ")
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s: output\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
	var out bytes.Buffer
	if err := writeContainers(&out, list, "json", false, false); err != nil {
		t.Fatal(err)
	}
	var row map[string]any
	if err := json.Unmarshal(out.Bytes(), &row); err != nil || row["Names"] != "web" || row["State"] != "exited" {
		t.Errorf("json output %s (%v): want one object with Names web", out.String(), err)
	}
	if err := writeContainers(&out, list, "{{.Names", false, false); err == nil {
		t.Error("a broken template gave no error")
	}
}

func TestWriteInspect(t *testing.T) {
	c := container.InspectResponse{ID: "abc123", Name: "/web", State: &container.State{Status: "running", ExitCode: 0},
		Config: &container.Config{Image: "busybox", Labels: map[string]string{"tier": "front"}}}
	raw, _ := json.Marshal(c)
	objs := []inspected{{typed: c, raw: raw}}
	for _, tc := range []struct {
		format, want string
		bad          bool
	}{
		{format: "{{.State.Status}} {{.Config.Image}}", want: "running busybox\n"},
		{format: "{{.ID}}", want: "abc123\n"}, // the Go field
		{format: "{{.Id}}", want: "abc123\n"}, // the JSON key, through the raw fallback
		{format: "{{json .Config.Labels}}", want: `{"tier":"front"}` + "\n"},
		{format: "{{index .Config.Labels \"tier\"}}", want: "front\n"},
		{format: "{{.Nope}}", bad: true},
	} {
		var out bytes.Buffer
		err := writeInspect(&out, objs, tc.format)
		if tc.bad {
			if err == nil {
				t.Errorf("writeInspect(%q) = %q, want an error", tc.format, out.String())
			}
			continue
		}
		if err != nil || out.String() != tc.want {
			t.Errorf("writeInspect(%q) = %q, %v; want %q", tc.format, out.String(), err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := writeInspect(&out, objs, ""); err != nil {
		t.Fatal(err)
	}
	var arr []map[string]any
	if err := json.Unmarshal(out.Bytes(), &arr); err != nil || len(arr) != 1 || arr[0]["Id"] != "abc123" {
		t.Errorf("default inspect output %s (%v): want a JSON array of the record", out.String(), err)
	}
}

func TestWriteEvent(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	m := events.Message{Type: "container", Action: "die", Actor: events.Actor{ID: "abc", Attributes: map[string]string{"name": "web", "exitCode": "3"}},
		Scope: "local", Time: at.Unix(), TimeNano: at.UnixNano()}
	var out bytes.Buffer
	if err := writeEvent(&out, nil, m); err != nil {
		t.Fatal(err)
	}
	want := " container die abc (exitCode=3, name=web)\n"
	if !strings.HasSuffix(out.String(), want) || !strings.HasPrefix(out.String(), time.Unix(0, at.UnixNano()).Format("2006-01-02T15:04:05.000000000")) {
		t.Errorf("default line = %q, want the time then %q", out.String(), want)
	}
	for _, tc := range []struct{ format, want string }{
		{"{{.Type}} {{.Action}} {{.Actor.Attributes.name}}", "container die web\n"},
		{"json", `{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"3","name":"web"}},"scope":"local","time":` +
			jsonInt(at.Unix()) + `,"timeNano":` + jsonInt(at.UnixNano()) + "}\n"},
	} {
		tmpl, err := eventTemplate(tc.format)
		if err != nil {
			t.Fatal(err)
		}
		out.Reset()
		if err := writeEvent(&out, tmpl, m); err != nil || out.String() != tc.want {
			t.Errorf("format %q: %q, %v; want %q", tc.format, out.String(), err, tc.want)
		}
	}
	if _, err := eventTemplate("{{.Type"); err == nil {
		t.Error("a broken template gave no error")
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
