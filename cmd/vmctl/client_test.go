package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

func TestCheckHost(t *testing.T) {
	for _, tc := range []struct {
		host    string
		wantErr string // empty: accepted
	}{
		{"unix:///run/vmctld.sock", ""},
		{"tcp://127.0.0.1:2375", ""},
		{"tcp://daemon.example:2375", ""},
		{"unix://", "needs a socket path"},
		{"tcp://127.0.0.1", "needs a port"},
		{"tcp://", "needs a port"},
		{"ssh://user@host", "want unix:///path/to/socket or tcp://host:port"},
		{"/run/vmctld.sock", "want unix:///path/to/socket or tcp://host:port"},
		{"%zz", "invalid host"},
	} {
		err := checkHost(tc.host)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("checkHost(%q) = %v, want nil", tc.host, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("checkHost(%q) = %v, want an error containing %q", tc.host, err, tc.wantErr)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("checkHost(%q) = %q, want one line", tc.host, err)
		}
	}
}

func TestSplitRepoTag(t *testing.T) {
	for _, tc := range []struct{ in, repo, tag string }{
		{"busybox:latest", "busybox", "latest"},
		{"localhost:5000/app:v1", "localhost:5000/app", "v1"},
		{"localhost:5000/app", "localhost:5000/app", "<none>"},
		{"app", "app", "<none>"},
	} {
		repo, tag := splitRepoTag(tc.in)
		if repo != tc.repo || tag != tc.tag {
			t.Errorf("splitRepoTag(%q) = %q, %q, want %q, %q", tc.in, repo, tag, tc.repo, tc.tag)
		}
	}
}

// A fake daemon answers with Docker's error body; fail must show the
// daemon's message alone and keep the error's class.
func TestRemoteFail(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Header().Set("Api-Version", "1.41")
			w.Write([]byte("OK"))
		case strings.Contains(r.URL.Path, "/containers/missing"):
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such container: missing"}`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"message":"disk full\nwhile writing"}`))
		}
	})}
	go srv.Serve(l)
	defer srv.Close()

	g := &globalOptions{host: "unix://" + sock}
	r, err := g.connect("ps", true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()

	_, err = r.api.ContainerInspect(ctx, "missing", client.ContainerInspectOptions{})
	got := r.fail(err)
	if got.Error() != "No such container: missing" || !errdefs.IsNotFound(got) {
		t.Errorf("fail(404) = %q (not found: %v), want the daemon's message, class not found", got, errdefs.IsNotFound(got))
	}
	_, err = r.api.ContainerInspect(ctx, "other", client.ContainerInspectOptions{})
	if got := r.fail(err).Error(); got != "disk full; while writing" {
		t.Errorf("fail(500) = %q, want the message on one line", got)
	}

	gone := &globalOptions{host: "unix://" + filepath.Join(t.TempDir(), "none.sock")}
	r2, err := gone.connect("ps", true)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	_, err = r2.api.ContainerList(ctx, client.ContainerListOptions{})
	got = r2.fail(err)
	if !strings.HasPrefix(got.Error(), "cannot connect to vmctld at unix://") || !client.IsErrConnectionFailed(got) {
		t.Errorf("fail(no daemon) = %q, want cannot connect, classed as a connection failure", got)
	}
	if r2.fail(nil) != nil {
		t.Errorf("fail(nil) != nil")
	}
	var se *statusError
	if _, err := (&globalOptions{host: "nope"}).connect("ps", false); !errors.As(err, &se) || se.code != 125 {
		t.Errorf("connect() with a bad host = %v, want status 125", err)
	}
}

func TestRunLabels(t *testing.T) {
	tests := []struct {
		labels  []string
		want    map[string]string
		wantErr bool
	}{
		{nil, nil, false},
		{[]string{"a=1", "b", "c=x=y"}, map[string]string{"a": "1", "b": "", "c": "x=y"}, false},
		{[]string{"a=1", "a=2"}, map[string]string{"a": "2"}, false},
		{[]string{"=v"}, nil, true},
	}
	for _, tt := range tests {
		o := &runOptions{labels: tt.labels, hypervisor: "auto", pull: "missing"}
		req, err := o.request("busybox", nil)
		if (err != nil) != tt.wantErr {
			t.Errorf("labels %q: err = %v, want error %v", tt.labels, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(req.Config.Labels, tt.want) {
			t.Errorf("labels %q = %v, want %v", tt.labels, req.Config.Labels, tt.want)
		}
	}
}
