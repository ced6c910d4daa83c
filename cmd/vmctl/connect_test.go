package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Served in-process, the API is the engine's own: its filters, its errors.
func TestInProcessAPI(t *testing.T) {
	dir := t.TempDir()
	g := &globalOptions{dataRoot: dir + "/data", execRoot: dir + "/exec"}
	r, err := g.inProcess("test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	list, err := r.api.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("ContainerList = %v, %v; want an empty list", list.Items, err)
	}
	_, err = r.api.ContainerList(ctx, client.ContainerListOptions{Filters: client.Filters{}.Add("colour", "red")})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "invalid filter 'colour'") {
		t.Errorf("ContainerList with a bad filter = %v, want invalid filter 'colour'", err)
	}
	if _, err := r.api.ContainerInspect(ctx, "nosuch", client.ContainerInspectOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("ContainerInspect(nosuch) = %v, want not found", err)
	}
}

// fakeDaemon answers /_ping and /version on a unix socket, as a vmctld
// would, and returns its host.
func fakeDaemon(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		if strings.HasSuffix(r.URL.Path, "/version") {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"Version":"fake","ApiVersion":"1.41"}`))
			return
		}
		w.Write([]byte("OK"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock
}

// parsed returns the global options of a vmctl command line, as main
// parses them.
func parsed(t *testing.T, args ...string) *globalOptions {
	t.Helper()
	root, g := newRootCommand()
	if err := root.PersistentFlags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return g
}

// Which engine serves a command: -H, engine flags, the default socket's
// daemon, the in-process engine, in that order; daemon-only commands never
// get the in-process engine.
func TestConnectChoice(t *testing.T) {
	for _, env := range []string{"VMCTL_HOST", "VMCTL_DATA_ROOT", "VMCTL_EXEC_ROOT", "VMCTL_KERNEL", "VMCTL_INITRD"} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	daemon := fakeDaemon(t)
	none := "unix://" + filepath.Join(dir, "none.sock")
	stale := filepath.Join(dir, "stale.sock")
	// A socket file nobody listens on: what a killed daemon leaves.
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	state := []string{"--data-root", dir + "/data", "--exec-root", dir + "/exec"}

	tests := []struct {
		name       string
		def        string
		args       []string
		daemonOnly bool
		want       string // "daemon", "in-process", or an error's text
	}{
		{"default daemon answers", daemon, nil, false, "daemon"},
		{"default daemon, daemon-only", daemon, nil, true, "daemon"},
		{"no daemon", none, nil, false, "in-process"},
		{"no daemon, daemon-only", none, nil, true, "exec needs a daemon, and no vmctld answers at " + none},
		{"stale socket", "unix://" + stale, nil, false, "in-process"},
		{"stale socket, daemon-only", "unix://" + stale, nil, true, "needs a daemon"},
		{"engine flags win over the default daemon", daemon, state, false, "in-process"},
		{"engine flags, daemon-only", daemon, state, true, "--data-root asks for the engine in this process"},
		{"-H wins", none, []string{"-H", daemon}, true, "daemon"},
		{"bad default", "ftp://x", nil, false, "VMCTL_DEFAULT_HOST: invalid host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(defaultHostEnv, tt.def)
			g := parsed(t, tt.args...)
			if tt.want == "in-process" {
				// Somewhere for the in-process engine to keep its state
				// (set directly: as flags they would choose the engine).
				g.dataRoot, g.execRoot = filepath.Join(t.TempDir(), "data"), filepath.Join(t.TempDir(), "exec")
			}
			r, err := g.connect("exec", tt.daemonOnly)
			switch tt.want {
			case "daemon", "in-process":
				if err != nil {
					t.Fatalf("connect = %v, want the %s", err, tt.want)
				}
				defer r.Close()
				if got := map[bool]string{true: "in-process", false: "daemon"}[r.inProcess]; got != tt.want {
					t.Errorf("connect chose the %s engine, want the %s", got, tt.want)
				}
				v, err := r.api.ServerVersion(context.Background(), client.ServerVersionOptions{})
				if err != nil {
					t.Fatalf("ServerVersion through the chosen engine: %v", err)
				}
				if (v.Version == "fake") != (tt.want == "daemon") {
					t.Errorf("ServerVersion = %q: answered by the wrong engine", v.Version)
				}
			default:
				var se *statusError
				if !errors.As(err, &se) || se.code != 125 || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("connect = %v, want status 125 and one line containing %q", err, tt.want)
				}
				if strings.Contains(tt.want, "needs a daemon") && !strings.Contains(err.Error(), "start vmctld") {
					t.Errorf("connect = %v, want it to say how to start vmctld", err)
				}
			}
		})
	}
}

// run's and create's flags become the create request the docker CLI sends.
func TestRunRequest(t *testing.T) {
	o := &runOptions{hypervisor: "qemu", pull: "missing", rm: true, interactive: true, memory: "64m", cpus: "1.5",
		volumes: []string{"data:/data"}, entrypoint: "/bin/sh"}
	req, err := o.request("busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	hc, cfg := req.HostConfig, req.Config
	if hc.Runtime != "qemu" || !hc.AutoRemove || hc.Memory != 64<<20 || hc.NanoCPUs != 1.5e9 || len(hc.Binds) != 1 {
		t.Errorf("HostConfig = %+v", hc)
	}
	if cfg.Cmd != nil || len(cfg.Entrypoint) != 1 || !cfg.OpenStdin || !cfg.StdinOnce || !cfg.AttachStdin {
		t.Errorf("Config = %+v; want no Cmd (the image's), the entrypoint, stdin open once", cfg)
	}
	for _, bad := range []runOptions{
		{hypervisor: "xen", pull: "missing"},
		{hypervisor: "auto", pull: "sometimes"},
		{hypervisor: "auto", pull: "missing", memory: "lots"},
		{hypervisor: "auto", pull: "missing", cpus: "-1"},
	} {
		if _, err := bad.request("busybox", nil); err == nil {
			t.Errorf("request(%+v) = nil error, want one", bad)
		}
	}
}

// The in-process connections close half-way, as a unix socket does: the
// client's CloseWrite is what ends a container's stdin.
func TestInProcessHalfClose(t *testing.T) {
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	cw, ok := a.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", a)
	}
	go func() {
		a.Write([]byte("stdin"))
		cw.CloseWrite()
	}()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "stdin" {
		t.Fatalf("read to EOF = %q, %v; want stdin then EOF", got, err)
	}
	// The other direction still works after the half-close.
	if _, err := b.Write([]byte("out")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "out" {
		t.Errorf("read after half-close = %q, %v", buf, err)
	}
}
