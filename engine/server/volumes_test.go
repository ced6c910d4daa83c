package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/volume"
)

func volumeRequest(t *testing.T, s *Server, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

func TestVolumeAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("makes ext4 disks")
	}
	s := newTestServer(t)
	rec := volumeRequest(t, s, "POST", "/v1.41/volumes/create", `{"Name":"data","DriverOpts":{"size":"64m"},"Labels":{"app":"db"}}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create = %d %s", rec.Code, rec.Body)
	}
	var v volume.Volume
	json.Unmarshal(rec.Body.Bytes(), &v)
	if v.Name != "data" || v.Driver != "local" || v.Scope != "local" || v.Options["size"] != "64m" || v.Labels["app"] != "db" {
		t.Errorf("created volume = %+v", v)
	}
	if rec := volumeRequest(t, s, "POST", "/volumes/create", `{"Name":"data"}`); rec.Code != http.StatusCreated {
		t.Errorf("create of an existing name = %d %s, want 201", rec.Code, rec.Body)
	}
	rec = volumeRequest(t, s, "POST", "/volumes/create", `{}`)
	json.Unmarshal(rec.Body.Bytes(), &v)
	if rec.Code != http.StatusCreated || len(v.Name) != 64 {
		t.Errorf("create without a name = %d %s, want a 64-hex name", rec.Code, rec.Body)
	}
	anon := v.Name

	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/volumes/create", `{"Name":"a"}`},
		{"POST", "/volumes/create", `{"Name":"../x"}`},
		{"POST", "/volumes/create", `{"Name":"v2","DriverOpts":{"type":"nfs"}}`},
		{"POST", "/volumes/create", `{"Name":"v2","DriverOpts":{"size":"huge"}}`},
		{"GET", `/volumes?filters={"color":["red"]}`, ""},
		{"DELETE", "/volumes/data?force=maybe", ""},
	} {
		if rec := volumeRequest(t, s, tc.method, tc.path, tc.body); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"message"`) {
			t.Errorf("%s %s %s = %d %s, want 400 with a message", tc.method, tc.path, tc.body, rec.Code, rec.Body)
		}
	}
	if rec := volumeRequest(t, s, "POST", "/volumes/create", `{"Name":"v2","Driver":"nfs"}`); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `plugin \"nfs\" not found`) {
		t.Errorf("create with driver nfs = %d %s, want 404 as dockerd answers", rec.Code, rec.Body)
	}

	list := func(query string) []string {
		rec := volumeRequest(t, s, "GET", "/volumes"+query, "")
		var l volume.ListResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("list%s = %d %s", query, rec.Code, rec.Body)
		}
		var names []string
		for _, v := range l.Volumes {
			names = append(names, v.Name)
		}
		return names
	}
	if got := list(""); len(got) != 2 {
		t.Errorf("list = %v, want data and %s", got, anon)
	}
	if got := list(`?filters={"name":{"dat":true}}`); len(got) != 1 || got[0] != "data" {
		t.Errorf("list name=dat = %v, want [data]", got)
	}
	if got := list(`?filters={"label":["app=db"],"dangling":["true"]}`); len(got) != 1 || got[0] != "data" {
		t.Errorf("list label=app=db dangling = %v, want [data]", got)
	}

	if rec := volumeRequest(t, s, "GET", "/volumes/data", ""); rec.Code != http.StatusOK {
		t.Errorf("inspect = %d %s", rec.Code, rec.Body)
	}
	if rec := volumeRequest(t, s, "GET", "/volumes/nope", ""); rec.Code != http.StatusNotFound {
		t.Errorf("inspect of a missing volume = %d, want 404", rec.Code)
	}
	if rec := volumeRequest(t, s, "DELETE", "/volumes/nope", ""); rec.Code != http.StatusNotFound {
		t.Errorf("delete of a missing volume = %d, want 404", rec.Code)
	}
	if rec := volumeRequest(t, s, "DELETE", "/volumes/nope?force=1", ""); rec.Code != http.StatusNoContent {
		t.Errorf("forced delete of a missing volume = %d, want 204", rec.Code)
	}
	if rec := volumeRequest(t, s, "DELETE", "/volumes/data", ""); rec.Code != http.StatusNoContent {
		t.Errorf("delete = %d %s", rec.Code, rec.Body)
	}
	if got := list(""); len(got) != 1 || got[0] != anon {
		t.Errorf("list after delete = %v, want [%s]", got, anon)
	}
}

func TestVolumeMounts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hc      container.HostConfig
		want    int
		wantErr string
	}{
		{name: "binds", hc: container.HostConfig{Binds: []string{"data:/data", "/cache", "logs:/logs:ro"}}, want: 3},
		{name: "mount", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: "data", Target: "/data"}}}, want: 1},
		{name: "host bind", hc: container.HostConfig{Binds: []string{"/etc:/data"}}, want: 1},
		{name: "host bind mount", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind, Source: "/etc", Target: "/data"}}}, want: 1},
		{name: "shared propagation", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind, Source: "/etc", Target: "/data",
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationRShared}}}},
			wantErr: `bind propagation "rshared" is not supported: mount propagation does not cross into a VM`},
		{name: "non-recursive", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind, Source: "/etc", Target: "/data",
			BindOptions: &mount.BindOptions{NonRecursive: true}}}},
			wantErr: "non-recursive bind mounts are not supported: a shared directory includes what is mounted below it"},
		{name: "tmpfs", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeTmpfs, Target: "/t"}}},
			wantErr: `mounts of type "tmpfs" are not supported: use a named volume or a bind mount`},
		{name: "nocopy", hc: container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: "d1", Target: "/t", VolumeOptions: &mount.VolumeOptions{NoCopy: true}}}},
			wantErr: "volume-nocopy is not supported: a new volume always takes the image's content"},
	} {
		got, err := volumeMounts(&tc.hc)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr || statusOf(err) != http.StatusBadRequest {
				t.Errorf("%s: volumeMounts = %v, want 400 %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != tc.want {
			t.Errorf("%s: volumeMounts = %+v, %v, want %d mounts", tc.name, got, err, tc.want)
		}
	}
}

// FuzzVolumeFilters: any ?filters= value of a listing or a prune is
// answered, 200 or 400, never a panic or a 500.
func FuzzVolumeFilters(f *testing.F) {
	for _, s := range []string{`{"name":["a"]}`, `{"dangling":{"true":true}}`, `{"label":["a=b"]}`, `{"label!":{"x":true}}`, `[]`, `{"x":1}`} {
		f.Add(s)
	}
	// No volumes: the filters are what is under test, and a prune
	// removes nothing whatever it is asked.
	s := newTestServer(f)
	f.Fuzz(func(t *testing.T, raw string) {
		for _, req := range []struct{ method, path string }{
			{"GET", "/volumes?filters="},
			{"POST", "/volumes/prune?filters="},
		} {
			rec := volumeRequest(t, s, req.method, req.path+url.QueryEscape(raw), "")
			if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
				t.Fatalf("%s %s%s = %d %s", req.method, req.path, raw, rec.Code, rec.Body)
			}
		}
	})
}

// Before API 1.42 prune takes every unused volume; from 1.42 only
// anonymous ones unless all=true, as dockerd does.
func TestVolumePrune(t *testing.T) {
	if testing.Short() {
		t.Skip("makes ext4 disks")
	}
	s := newTestServer(t)
	create := func(name string) {
		if rec := volumeRequest(t, s, "POST", "/volumes/create", `{"Name":"`+name+`","DriverOpts":{"size":"16m"}}`); rec.Code != http.StatusCreated {
			t.Fatalf("create %s = %d %s", name, rec.Code, rec.Body)
		}
	}
	prune := func(path string) []string {
		rec := volumeRequest(t, s, "POST", path, "")
		var rep volume.PruneReport
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("POST %s = %d %s", path, rec.Code, rec.Body)
		}
		return rep.VolumesDeleted
	}
	create("keepme")
	create("other")
	if got := prune(`/v1.44/volumes/prune`); len(got) != 0 {
		t.Errorf("prune at 1.44 removed named volumes %v", got)
	}
	if got := prune(`/v1.44/volumes/prune?filters={"all":["true"],"label!":["x"]}`); len(got) != 2 {
		t.Errorf("prune all at 1.44 removed %v, want both", got)
	}
	create("old")
	if got := prune(`/v1.41/volumes/prune`); len(got) != 1 || got[0] != "old" {
		t.Errorf("prune at 1.41 removed %v, want [old]", got)
	}
	if rec := volumeRequest(t, s, "POST", `/volumes/prune?filters={"until":["1h"]}`, ""); rec.Code != http.StatusBadRequest {
		t.Errorf("prune with an unknown filter = %d, want 400", rec.Code)
	}
}
