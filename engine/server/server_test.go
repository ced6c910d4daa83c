package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services"
)

// newTestServices are a real engine's services on a temp data root.
// Nothing here boots a VM: without images, create fails before any start.
func newTestServices(t testing.TB) services.Services {
	t.Helper()
	dir := t.TempDir()
	// Guest files that exist, so that create gets past the driver check
	// to the image lookup.
	for _, f := range []string{"vmlinuz", "initramfs.img"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("not booted"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := engine.New(engine.Config{DataRoot: dir + "/data", ExecRoot: dir + "/exec",
		Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initramfs.img")})
	if err != nil {
		t.Fatal(err)
	}
	return eng.Services()
}

// newTestServer serves newTestServices.
func newTestServer(t testing.TB) *Server {
	t.Helper()
	return New(newTestServices(t))
}

func TestMuxWriterRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		writes []struct {
			stderr bool
			data   string
		}
		stdout, stderr string
	}{
		{"empty", nil, "", ""},
		{"interleaved", []struct {
			stderr bool
			data   string
		}{{false, "a\n"}, {true, "b\n"}, {false, "c"}}, "a\nc", "b\n"},
		{"large", []struct {
			stderr bool
			data   string
		}{{false, strings.Repeat("x", maxFrame+5)}}, strings.Repeat("x", maxFrame+5), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			out, errw := outputWriters(&buf, false)
			for _, w := range tt.writes {
				target := out
				if w.stderr {
					target = errw
				}
				if n, err := target.Write([]byte(w.data)); n != len(w.data) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			var gotOut, gotErr bytes.Buffer
			if _, err := stdcopy.StdCopy(&gotOut, &gotErr, &buf); err != nil {
				t.Fatalf("StdCopy: %v", err)
			}
			if gotOut.String() != tt.stdout || gotErr.String() != tt.stderr {
				t.Errorf("demuxed stdout %d bytes, stderr %q; want %d bytes, %q", gotOut.Len(), gotErr.String(), len(tt.stdout), tt.stderr)
			}
		})
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{errs.New(errdefs.ErrNotFound, "x"), 404},
		{errs.New(errdefs.ErrInvalidArgument, "x"), 400},
		{errs.New(errdefs.ErrConflict, "x"), 409},
		{errs.New(errdefs.ErrNotModified, "x"), 304},
		{errs.Class(errdefs.ErrInvalidArgument, &http.MaxBytesError{Limit: 1}), 413},
		{errors.New("disk on fire"), 500},
	}
	for _, tt := range tests {
		if got := statusOf(tt.err); got != tt.want {
			t.Errorf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestParseHost(t *testing.T) {
	tests := []struct {
		in      string
		want    Host
		wantErr bool
	}{
		{"unix:///run/vmctl/vmctl.sock", Host{"unix", "/run/vmctl/vmctl.sock"}, false},
		{"/tmp/x.sock", Host{"unix", "/tmp/x.sock"}, false},
		{"tcp://127.0.0.1:2375", Host{"tcp", "127.0.0.1:2375"}, false},
		{"unix://relative", Host{}, true},
		{"tcp://nohost", Host{}, true},
		{"ssh://a", Host{}, true},
		{"", Host{}, true},
	}
	for _, tt := range tests {
		got, err := ParseHost(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseHost(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestHandler(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"HEAD", "/_ping", "", 200, ""},
		{"GET", "/v1.41/_ping", "", 200, "OK"},
		{"GET", "/v1.56/version", "", 200, `"ApiVersion":"1.41"`},
		{"GET", "/v0.9/version", "", 400, "minimum supported"},
		{"GET", "/v1.57/version", "", 400, "client version 1.57 is too new"},
		{"GET", "/v1.41/images/json", "", 200, "[]"},
		{"GET", "/v1.41/containers/json?all=1", "", 200, "[]"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox"}`, 404, "No such image"},
		{"POST", "/v1.41/containers/create", `{"Image":`, 400, "invalid JSON"},
		{"POST", "/v1.41/containers/abc/start", "", 404, "no such container"},
		{"POST", "/v1.41/containers/abc/resize?h=x&w=1", "", 400, "invalid terminal size"},
		{"DELETE", "/v1.41/images/library/busybox:latest", "", 404, "No such image"},
		{"POST", "/v1.41/images/create", "", 400, "fromImage is required"},
		{"POST", "/v1.41/images/create?fromImage=Bad%20Name", "", 400, ""},
		{"PUT", "/v1.41/containers/json", "", 404, "page not found"},
		// docker run --runtime picks the hypervisor; an unknown one is
		// refused before the image is looked up.
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Runtime":"runc"}}`, 400, "unknown or invalid runtime name: runc"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Runtime":"qemu"}}`, 404, "No such image"},
		// Create options that are not honoured are refused, each by name,
		// before the image is looked up; their default values pass.
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"OomKillDisable":true}}`, 400, "HostConfig.OomKillDisable"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]}}`, 400, "HostConfig.Devices"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"PidMode":"host"}}`, 400, "HostConfig.PidMode"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"UTSMode":"host"}}`, 400, "HostConfig.UTSMode"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"DeviceRequests":[{"Count":1}]}}`, 400, "HostConfig.DeviceRequests"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"CpuShares":512}}`, 400, "HostConfig.CpuShares"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"CpusetCpus":"0"}}`, 400, "HostConfig.CpusetCpus"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"DeviceCgroupRules":["c 1:3 r"]}}`, 400, "HostConfig.DeviceCgroupRules"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Isolation":"hyperv"}}`, 400, "HostConfig.Isolation"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"VolumesFrom":["x"]}}`, 400, "HostConfig.VolumesFrom"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"LogConfig":{"Type":"syslog"}}}`, 400, "syslog\\\" is not supported"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Links":["a:b"]}}`, 400, "container links are not supported"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","Healthcheck":{"Test":["NONE"]},"HostConfig":{"Init":false,"PidMode":"","Isolation":"default","LogConfig":{"Type":"json-file","Config":{}}}}`, 404, "No such image"},
		// --privileged and seccomp profiles are honoured; a profile the
		// guest cannot run is refused before the image is looked up.
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Privileged":true}}`, 404, "No such image"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]}}`, 404, "No such image"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_NOTIFY\"}"]}}`, 400, "SCMP_ACT_NOTIFY is not supported"},
		{"POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"SecurityOpt":["seccomp={"]}}`, 400, "invalid --security-opt seccomp profile"},
		// Swarm and plugins, as a dockerd in no swarm and without plugins.
		{"POST", "/v1.41/swarm/leave?force=1", "", 503, "This node is not part of a swarm"},
		{"GET", "/v1.41/swarm", "", 503, "This node is not a swarm manager"},
		{"GET", "/v1.41/services", "", 503, "This node is not a swarm manager"},
		{"DELETE", "/v1.41/secrets/x", "", 503, "This node is not a swarm manager"},
		{"GET", "/v1.41/nodes/abc", "", 503, "This node is not a swarm manager"},
		{"POST", "/v1.41/swarm/init", "{}", 503, "not supported"},
		{"GET", "/v1.41/plugins", "", 200, "[]"},
		{"DELETE", "/v1.41/containers/web/db?link=1", "", 400, "container links are not supported"},
		{"DELETE", "/v1.41/containers/web/db", "", 404, "No such container"},
		{"GET", "/v1.41/plugins/x/json", "", 404, "not found"},
		{"GET", "/v1.41/info", "", 200, `"DefaultRuntime":"auto"`},
		{"GET", "/v1.41/info", "", 200, `"qemu":{}`},
		{"POST", "/v1.41/auth", `{"username":"u","password":"p","serveraddress":"bad host"}`, 400, "invalid registry"},
		{"POST", "/v1.41/auth", `{"serveraddress":"127.0.0.1:1"}`, 400, "a username and a password are needed"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tt.code || !strings.Contains(string(body), tt.want) {
			t.Errorf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, rec.Code, body, tt.code, tt.want)
		}
		if rec.Header().Get("Api-Version") != APIVersion {
			t.Errorf("%s %s: Api-Version header %q", tt.method, tt.path, rec.Header().Get("Api-Version"))
		}
		if rec.Code >= 400 {
			var e struct{ Message string }
			if err := json.Unmarshal(body, &e); err != nil || e.Message == "" {
				t.Errorf("%s %s: error body %q is not {\"message\": ...}", tt.method, tt.path, body)
			}
		}
	}
}

// FuzzHandler throws arbitrary requests at the API: it must never answer
// 5xx for them, nor panic.
func FuzzHandler(f *testing.F) {
	s := newTestServer(f)
	f.Add("POST", "/v1.41/containers/create?name=x", `{"Image":"busybox","HostConfig":{"Memory":1}}`)
	f.Add("GET", "/v1.41/containers/json?all=1&limit=2", "")
	f.Add("POST", "/containers/x/kill?signal=HUP", "")
	f.Add("GET", "/v1.41/containers/x/logs?stdout=1&tail=3", "")
	f.Add("POST", "/v1.41/containers/x/wait?condition=removed", "")
	f.Add("GET", "/images/a/b/c/json", "")
	f.Add("POST", "/v1.41/volumes/create", `{"Name":"data","DriverOpts":{"size":"16m"},"Labels":{"a":"b"}}`)
	f.Add("GET", "/v1.41/volumes?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D", "")
	f.Add("DELETE", "/v1.41/volumes/data?force=1", "")
	f.Add("POST", "/v1.41/volumes/prune?filters=%7B%22all%22%3A%7B%22true%22%3Atrue%7D%7D", "")
	f.Add("POST", "/v1.41/images/load?quiet=1", "not a tarball")
	f.Add("POST", "/v1.41/images/busybox/tag?repo=x/y&tag=1", "")
	f.Add("GET", "/v1.41/images/get?names=busybox", "")
	f.Add("GET", "/v1.41/containers/json?filters=%7B%22status%22%3A%5B%22exited%22%5D%7D", "")
	f.Fuzz(func(t *testing.T, method, path, body string) {
		switch method {
		case "GET", "POST", "DELETE", "HEAD", "PUT":
		default:
			return
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") {
			return
		}
		// A pull or push would go to the network, and an event stream
		// without an end runs until the client leaves; their parameter
		// handling has tests of its own.
		if strings.Contains(path, "images/create") || strings.Contains(path, "push") || strings.Contains(path, "events") {
			return
		}
		req, err := http.NewRequest(method, "http://vmctld"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Errorf("%s %s %q = %d %q", method, path, body, rec.Code, rec.Body.String())
		}
	})
}

// An Env entry without "=" sets nothing, as dockerd documents for -e NAME.
func TestSetEnv(t *testing.T) {
	got := setEnv([]string{"A=1", "UNSET", "B=", "C=x=y"})
	if strings.Join(got, ",") != "A=1,B=,C=x=y" {
		t.Errorf("setEnv = %q", got)
	}
}

// With LogRequest set, every request is told with its status.
func TestLogRequest(t *testing.T) {
	s := newTestServer(t)
	var got []string
	s.LogRequest = func(method, path string, status int, took time.Duration) {
		got = append(got, fmt.Sprintf("%s %s %d", method, path, status))
	}
	for _, p := range []string{"/v1.41/_ping", "/v1.41/containers/nope/json"} {
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	if want := "GET /_ping 200,GET /containers/nope/json 404"; strings.Join(got, ",") != want {
		t.Errorf("logged %q, want %q", got, want)
	}
}

func TestPruneFilter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old, recent := now.Add(-2*time.Hour), now.Add(-time.Minute)
	for _, tc := range []struct {
		terms   map[string][]string
		created time.Time
		labels  map[string]string
		want    bool
	}{
		{nil, recent, nil, true},
		{map[string][]string{"until": {"1h"}}, old, nil, true},
		{map[string][]string{"until": {"1h"}}, recent, nil, false},
		{map[string][]string{"until": {now.Add(-time.Hour).Format(time.RFC3339)}}, old, nil, true},
		{map[string][]string{"label": {"keep"}}, recent, map[string]string{"keep": ""}, true},
		{map[string][]string{"label": {"tier=web"}}, recent, map[string]string{"tier": "db"}, false},
		{map[string][]string{"label!": {"keep"}}, recent, map[string]string{"keep": "1"}, false},
		{map[string][]string{"label!": {"keep=2"}}, recent, map[string]string{"keep": "1"}, true},
	} {
		match, err := pruneFilter(tc.terms, now)
		if err != nil {
			t.Fatal(err)
		}
		if got := match(tc.created, tc.labels); got != tc.want {
			t.Errorf("filters %v, created %v, labels %v: %v, want %v", tc.terms, tc.created, tc.labels, got, tc.want)
		}
	}
	for _, bad := range []map[string][]string{{"status": {"exited"}}, {"until": {"soon"}}, {"until": {"1h", "2h"}}} {
		if _, err := pruneFilter(bad, now); err == nil {
			t.Errorf("filters %v accepted", bad)
		}
	}
}
