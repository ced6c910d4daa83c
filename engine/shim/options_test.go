package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// runtimeOptions wraps o as containerd sends it: its type URL without
// the "type.googleapis.com/" prefix, as typeurl writes it.
func runtimeOptions(t *testing.T, o proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(o)
	if err != nil {
		t.Fatal(err)
	}
	a.TypeUrl = strings.TrimPrefix(a.TypeUrl, "type.googleapis.com/")
	return a
}

func TestParseOptions(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	qemuFile := write("qemu.json", `{"hypervisor": "qemu"}`)
	unknownFile := write("unknown.json", `{"hypervisor": "qemu", "turbo": true}`)
	emptyFile := write("empty.json", " \n")

	withPrefix, err := anypb.New(&runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor":"auto"}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		in   *anypb.Any
		want Options
		// errWant is a part of the error's text; "" for no error.
		errWant string
	}{
		{name: "nil", in: nil},
		{name: "empty Any", in: &anypb.Any{}},
		{name: "empty runtimeoptions", in: runtimeOptions(t, &runtimeoptions.Options{})},
		{name: "runtimeoptions with an empty value", in: &anypb.Any{TypeUrl: runtimeOptionsURL}},
		{name: "type URL with the googleapis prefix", in: withPrefix, want: Options{Hypervisor: "auto"}},
		{name: "ConfigPath", in: runtimeOptions(t, &runtimeoptions.Options{ConfigPath: qemuFile}), want: Options{Hypervisor: "qemu"}},
		{name: "ConfigPath to an empty file", in: runtimeOptions(t, &runtimeoptions.Options{ConfigPath: emptyFile})},
		{name: "ConfigPath wins over ConfigBody", in: runtimeOptions(t, &runtimeoptions.Options{ConfigPath: qemuFile, ConfigBody: []byte(`{"hypervisor":"kvm"}`)}), want: Options{Hypervisor: "qemu"}},
		{name: "ConfigBody", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor":"kvm"}`)}), want: Options{Hypervisor: "kvm"}},
		{name: "ConfigBody of white space", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte("  \t\n")})},
		{name: "ConfigBody JSON null", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte("null")})},
		{name: "ConfigBody of an empty object", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte("{}")})},
		{name: "missing ConfigPath", in: runtimeOptions(t, &runtimeoptions.Options{ConfigPath: filepath.Join(dir, "nope.json")}), errWant: "runtime config"},
		{name: "unknown key in a file", in: runtimeOptions(t, &runtimeoptions.Options{ConfigPath: unknownFile}), errWant: `unknown field "turbo"`},
		{name: "unknown key in the body", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"memory": 64}`)}), errWant: `unknown field "memory"`},
		{name: "bad hypervisor", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor":"firecracker"}`)}), errWant: `hypervisor "firecracker"`},
		{name: "hypervisor of another case", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor":"QEMU"}`)}), errWant: `hypervisor "QEMU"`},
		{name: "hypervisor not a string", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte(`{"hypervisor":1}`)}), errWant: "runtime config"},
		{name: "body not JSON", in: runtimeOptions(t, &runtimeoptions.Options{ConfigBody: []byte("hypervisor = qemu")}), errWant: "runtime config"},
		{name: "runc's options", in: runtimeOptions(t, &runcoptions.Options{BinaryName: "runc"}), errWant: "containerd.runc.v1.Options"},
		{name: "runc's options, prefixed", in: mustAny(t, &runcoptions.Options{}), errWant: "type.googleapis.com/containerd.runc.v1.Options"},
		{name: "bytes without a type", in: &anypb.Any{Value: []byte{0x0a, 0x01, 'x'}}, errWant: "are not io.containerd.vmctl.v1's"},
		{name: "garbage bytes: truncated varint", in: &anypb.Any{TypeUrl: runtimeOptionsURL, Value: []byte{0xff, 0xff, 0xff}}, errWant: "runtime options"},
		{name: "garbage bytes: length past the end", in: &anypb.Any{TypeUrl: runtimeOptionsURL, Value: []byte{0x12, 0x7f, '{'}}, errWant: "runtime options"},
		{name: "garbage bytes: field 0", in: &anypb.Any{TypeUrl: runtimeOptionsURL, Value: []byte{0x00, 0x00}}, errWant: "runtime options"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOptions(tt.in)
			if tt.errWant == "" {
				if err != nil {
					t.Fatalf("parseOptions = %v, want no error", err)
				}
				if got != tt.want {
					t.Errorf("parseOptions = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseOptions = %+v, nil; want an error containing %q", got, tt.errWant)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("parseOptions error %v: want errdefs.ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.errWant) {
				t.Errorf("parseOptions error %q: want it to contain %q", err, tt.errWant)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("parseOptions error %q: want one line", err)
			}
		})
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseFlags(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		want    flags
		errWant string
	}{
		{
			// What containerd 1.6 runs in the bundle.
			name: "start",
			args: []string{"-namespace", "default", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"},
			want: flags{namespace: "default", id: "c1", address: "/run/containerd/containerd.sock", publishBinary: "/usr/bin/containerd", debug: true, action: "start"},
		},
		{
			name: "delete with a bundle",
			args: []string{"-namespace", "k8s.io", "-address", "/a.sock", "-publish-binary", "/bin/c", "-id", "c2", "-bundle", "/b/c2", "delete"},
			want: flags{namespace: "k8s.io", id: "c2", address: "/a.sock", publishBinary: "/bin/c", bundle: "/b/c2", action: "delete"},
		},
		{
			// The server start re-executes.
			name: "serve",
			args: []string{"-namespace", "default", "-id", "c1", "-address", "/a.sock"},
			want: flags{namespace: "default", id: "c1", address: "/a.sock"},
		},
		{
			name: "serve without an id",
			args: []string{"-namespace", "default"},
			want: flags{namespace: "default"},
		},
		{
			name: "flags the shim ignores",
			args: []string{"-namespace", "default", "-socket", "/x", "-v", "-id", "c1", "start"},
			want: flags{namespace: "default", id: "c1", action: "start"},
		},
		{name: "no namespace", args: []string{"-id", "c1", "start"}, errWant: "namespace cannot be empty"},
		{name: "empty namespace", args: []string{"-namespace", "", "-id", "c1"}, errWant: "namespace cannot be empty"},
		{name: "start without an id", args: []string{"-namespace", "default", "start"}, errWant: "no task id"},
		{name: "delete without an id", args: []string{"-namespace", "default", "-bundle", "/b", "delete"}, errWant: "no task id"},
		{name: "an id after the action is not read", args: []string{"-namespace", "default", "start", "-id", "c1"}, errWant: "no task id"},
		{name: "unknown flag", args: []string{"-namespace", "default", "-turbo", "start"}, errWant: "turbo"},
		{name: "flag without its value", args: []string{"-namespace"}, errWant: "namespace"},
		{name: "bad boolean", args: []string{"-namespace", "default", "-debug=maybe"}, errWant: "debug"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args)
			if tt.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errWant) {
					t.Fatalf("parseFlags(%q) = %+v, %v; want an error containing %q", tt.args, got, err, tt.errWant)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q) = %v", tt.args, err)
			}
			if got != tt.want {
				t.Errorf("parseFlags(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}
