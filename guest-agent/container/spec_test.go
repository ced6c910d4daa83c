package container

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }

func TestValidateSpec(t *testing.T) {
	ok := func() *specs.Spec { return testSpec("true") }
	tests := []struct {
		name   string
		mutate func(*specs.Spec)
		valid  bool
	}{
		{"ok", func(*specs.Spec) {}, true},
		{"no process", func(s *specs.Spec) { s.Process = nil }, false},
		{"empty args", func(s *specs.Spec) { s.Process.Args = nil }, false},
		{"NUL in arg", func(s *specs.Spec) { s.Process.Args = []string{"a\x00b"} }, false},
		{"env without =", func(s *specs.Spec) { s.Process.Env = []string{"PATH"} }, false},
		{"relative cwd", func(s *specs.Spec) { s.Process.Cwd = "tmp" }, false},
		{"no linux", func(s *specs.Spec) { s.Linux = nil }, false},
		{"user ns", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		}, false},
		{"ns path", func(s *specs.Spec) { s.Linux.Namespaces[0].Path = "/proc/1/ns/pid" }, false},
		{"ns twice", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
		}, false},
		{"hostname without uts", func(s *specs.Spec) {
			s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace}}
		}, false},
		{"relative mount", func(s *specs.Spec) { s.Mounts[0].Destination = "proc" }, false},
		{"dotdot mount", func(s *specs.Spec) { s.Mounts[0].Destination = "/a/../../etc" }, false},
		{"mount over root", func(s *specs.Spec) { s.Mounts[0].Destination = "/" }, false},
		{"relative bind source", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Source: "x", Options: []string{"rbind"}})
		}, false},
		{"bad sysctl", func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"../x": "1"} }, false},
		{"device outside dev", func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/etc/x", Type: "c"}}
		}, false},
		{"bad rlimit", func(s *specs.Spec) { s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}} }, false},
		{"bad capability", func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_BOGUS"}}
		}, false},
		{"docker caps", func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_KILL"}}
		}, true},
		{"negative memory", func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-5)}}
		}, false},
		{"zero cpu period", func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(1000), Period: u64(0)}}
		}, false},
		{"huge console", func(s *specs.Spec) { s.Process.ConsoleSize = &specs.Box{Height: 1 << 20, Width: 80} }, false},
	}
	for _, tt := range tests {
		s := ok()
		tt.mutate(s)
		valid, err := ValidateSpec(s)
		if tt.valid && (err != nil || valid.spec != s) {
			t.Errorf("%s: ValidateSpec = %v, want the spec and no error", tt.name, err)
		}
		if !tt.valid && (!errors.Is(err, ErrInvalid) || valid.spec != nil) {
			t.Errorf("%s: ValidateSpec = %v, want ErrInvalid and no spec", tt.name, err)
		}
	}
	if _, err := ValidateSpec(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("ValidateSpec(nil) = %v", err)
	}
}

// TestCreateTakesOnlyValidSpecs: a spec that did not go through
// ValidateSpec is refused before anything is created.
func TestCreateTakesOnlyValidSpecs(t *testing.T) {
	rt, err := New(Config{Reaper: testReaper, CgroupRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Create(context.Background(), "c1", ValidSpec{}, t.TempDir()); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create with an unchecked spec = %v, want ErrInvalid", err)
	}
	if ids := rt.IDs(); len(ids) != 0 {
		t.Errorf("Create of an unchecked spec left containers %v", ids)
	}
}

func TestValidID(t *testing.T) {
	tests := map[string]bool{
		"abc": true, "a-b_c.1": true, "": false, ".": false, "..": false, "a/b": false, "a b": false,
		string(make([]byte, 129)): false,
	}
	for id, want := range tests {
		if got := ValidID(id) == nil; got != want {
			t.Errorf("ValidID(%q) ok = %v, want %v", id, got, want)
		}
	}
}

func TestInRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755)
	os.Symlink("/usr/lib", filepath.Join(root, "lib"))
	os.Symlink("../../../../etc", filepath.Join(root, "usr/escape"))
	os.Symlink("loop2", filepath.Join(root, "loop1"))
	os.Symlink("loop1", filepath.Join(root, "loop2"))
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"/proc", "/proc", false},
		{"/lib/x", "/usr/lib/x", false},
		{"/usr/escape/passwd", "/etc/passwd", false},
		{"/../../etc", "/etc", false},
		{"/loop1/x", "", true},
	}
	for _, tt := range tests {
		got, err := inRoot(root, tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("inRoot(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != filepath.Join(root, tt.want) {
			t.Errorf("inRoot(%q) = %q, %v; want %q", tt.in, got, err, filepath.Join(root, tt.want))
		}
	}
}

func TestWithDevMounts(t *testing.T) {
	dests := func(ms []specs.Mount) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Destination)
		}
		return out
	}
	tests := []struct {
		in, want []string
	}{
		{[]string{"/proc"}, []string{"/dev", "/proc", "/dev/pts", "/dev/shm"}},
		{[]string{"/proc", "/dev", "/dev/pts"}, []string{"/proc", "/dev", "/dev/pts", "/dev/shm"}},
		{[]string{"/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"}, []string{"/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"}},
	}
	for _, tt := range tests {
		var in []specs.Mount
		for _, d := range tt.in {
			in = append(in, specs.Mount{Destination: d})
		}
		if got := dests(withDevMounts(in, false)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("withDevMounts(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	// The device policy: only a privileged container's /dev allows nodes.
	for _, privileged := range []bool{false, true, false} {
		dev := withDevMounts(nil, privileged)[0]
		if dev.Destination != "/dev" || slices.Contains(dev.Options, "nodev") == privileged {
			t.Errorf("withDevMounts(privileged %v) mounts %s with %v", privileged, dev.Destination, dev.Options)
		}
	}
}

func TestCgroupFiles(t *testing.T) {
	type w = struct{ file, value string }
	tests := []struct {
		name string
		r    *specs.LinuxResources
		swap bool
		want []w
	}{
		{"none", nil, true, nil},
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20)}}, true,
			[]w{{"memory.max", "67108864"}, {"memory.swap.max", "0"}}},
		{"memory without swap file", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(1 << 20)}}, false,
			[]w{{"memory.max", "1048576"}}},
		{"memory with swap", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(100), Swap: i64(300)}}, true,
			[]w{{"memory.max", "100"}, {"memory.swap.max", "200"}}},
		{"unlimited swap", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(100), Swap: i64(-1)}}, true,
			[]w{{"memory.max", "100"}, {"memory.swap.max", "max"}}},
		{"pids", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(32)}}, true, []w{{"pids.max", "32"}}},
		{"cpu", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000), Shares: u64(1024)}}, true,
			[]w{{"cpu.weight", "39"}, {"cpu.max", "50000 100000"}}},
		{"cpu period", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(20000), Period: u64(40000)}}, true,
			[]w{{"cpu.max", "20000 40000"}}},
	}
	for _, tt := range tests {
		got := cgroupFiles(tt.r, tt.swap)
		if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("%s: cgroupFiles = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "run"), []byte("x"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "data"), []byte("x"), 0o755)
	tests := []struct {
		file, path string
		want       string
		kind       error
	}{
		{"run", dir, filepath.Join(dir, "run"), nil},
		{"data", dir + ":" + other, filepath.Join(other, "data"), nil},
		{"data", dir, "", ErrPermission},
		{"nope", dir, "", ErrNotFound},
		{filepath.Join(dir, "run"), "", filepath.Join(dir, "run"), nil},
		{filepath.Join(dir, "data"), "", "", ErrPermission},
		{filepath.Join(dir, "nope"), "", "", ErrNotFound},
	}
	for _, tt := range tests {
		got, err := lookPath(tt.file, tt.path)
		if got != tt.want || (tt.kind == nil) != (err == nil) || (tt.kind != nil && !errors.Is(err, tt.kind)) {
			t.Errorf("lookPath(%q, %q) = %q, %v; want %q, %v", tt.file, tt.path, got, err, tt.want, tt.kind)
		}
	}
}

func TestPathEnv(t *testing.T) {
	tests := []struct {
		env  []string
		want string
	}{
		{nil, DefaultPath},
		{[]string{"A=1", "PATH=/x"}, "/x"},
		{[]string{"PATH=/x", "PATH=/y"}, "/y"},
		{[]string{"PATHX=/x"}, DefaultPath},
	}
	for _, tt := range tests {
		if got := pathEnv(tt.env); got != tt.want {
			t.Errorf("pathEnv(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestJoinGuestNetwork(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.MountNamespace},
	}}}
	JoinGuestNetwork(s)
	if hasNamespace(s, specs.NetworkNamespace) || !hasNamespace(s, specs.PIDNamespace) || !hasNamespace(s, specs.MountNamespace) {
		t.Errorf("namespaces after JoinGuestNetwork = %+v, want pid and mnt only", s.Linux.Namespaces)
	}
	if cloneFlags(s)&unix.CLONE_NEWNET != 0 {
		t.Errorf("clone flags %#x still create a network namespace", cloneFlags(s))
	}
	// A namespace to join by path is not silently dropped: ValidateSpec
	// refuses it.
	byPath := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"}}}}
	JoinGuestNetwork(byPath)
	if len(byPath.Linux.Namespaces) != 1 {
		t.Errorf("JoinGuestNetwork dropped a namespace given by path: %+v", byPath.Linux.Namespaces)
	}
	JoinGuestNetwork(nil)
	JoinGuestNetwork(&specs.Spec{})
}
