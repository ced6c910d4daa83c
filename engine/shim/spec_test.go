package shim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCheckSpec(t *testing.T) {
	for _, tt := range []struct {
		name    string
		linux   *specs.Linux
		refused string // the namespace path named in the error; "" if accepted
	}{
		{name: "no linux section"},
		{name: "no namespaces", linux: &specs.Linux{}},
		{name: "new namespaces", linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.MountNamespace},
			{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
		}}},
		{name: "the host's network namespace", linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"},
		}}, refused: "/proc/1/ns/net"},
		{name: "a pod's pid namespace", linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace, Path: "/proc/4242/ns/pid"}, {Type: specs.MountNamespace},
		}}, refused: "/proc/4242/ns/pid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSpec(&specs.Spec{Linux: tt.linux})
			if tt.refused == "" {
				if err != nil {
					t.Errorf("checkSpec = %v, want nil", err)
				}
				return
			}
			if err == nil || !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), tt.refused) {
				t.Errorf("checkSpec = %v, want errdefs.ErrNotImplemented naming %s", err, tt.refused)
			}
		})
	}
}

// writeBundle makes a bundle holding config.json with body.
func writeBundle(t *testing.T, body string) string {
	t.Helper()
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// specJSON is a minimal spec for a process running args.
func specJSON(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReadSpec(t *testing.T) {
	good := specJSON(t, &specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}, Root: &specs.Root{Path: "rootfs"}})
	spec, err := readSpec(writeBundle(t, good))
	if err != nil {
		t.Fatalf("readSpec(a good bundle) = %v", err)
	}
	if got := spec.Process.Args; len(got) != 1 || got[0] != "true" || spec.Root.Path != "rootfs" {
		t.Errorf("readSpec = process %q, root %+v; want [true], rootfs", got, spec.Root)
	}

	for _, tt := range []struct {
		name, want string
		bundle     func(t *testing.T) string
	}{
		{"no config.json", "config.json", func(t *testing.T) string { return t.TempDir() }},
		{"no bundle", "no-such-bundle", func(t *testing.T) string { return filepath.Join(t.TempDir(), "no-such-bundle") }},
		{"config.json a directory", "config.json", func(t *testing.T) string {
			b := t.TempDir()
			if err := os.Mkdir(filepath.Join(b, "config.json"), 0o700); err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"bad JSON", "config.json", func(t *testing.T) string { return writeBundle(t, `{"ociVersion": "1.0.2", "process": {`) }},
		{"JSON of the wrong shape", "config.json", func(t *testing.T) string { return writeBundle(t, `{"process": {"args": "true"}}`) }},
		{"empty file", "config.json", func(t *testing.T) string { return writeBundle(t, "") }},
		{"no process", "no process", func(t *testing.T) string {
			return writeBundle(t, `{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}`)
		}},
		{"null process", "no process", func(t *testing.T) string { return writeBundle(t, `{"process": null}`) }},
		{"JSON null", "no process", func(t *testing.T) string { return writeBundle(t, "null") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bundle := tt.bundle(t)
			spec, err := readSpec(bundle)
			if err == nil {
				t.Fatalf("readSpec = %+v, nil; want an error", spec)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("readSpec = %v: want errdefs.ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), bundle) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("readSpec = %q: want it to name the bundle and %q", err, tt.want)
			}
		})
	}
}
