package shim

import (
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestVMShape(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	cpu := func(quota int64, period uint64) *specs.LinuxResources {
		return &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(quota), Period: u64(period)}}
	}
	mem := func(limit int64) *specs.LinuxResources {
		return &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(limit)}}
	}
	for _, tt := range []struct {
		name            string
		linux           *specs.Linux
		vcpus, memoryMB int
	}{
		{"no linux section", nil, 1, 256},
		{"no resources", &specs.Linux{}, 1, 256},
		{"empty resources", &specs.Linux{Resources: &specs.LinuxResources{}}, 1, 256},
		{"one CPU of quota", &specs.Linux{Resources: cpu(100000, 100000)}, 1, 256},
		{"one and a half CPUs round up", &specs.Linux{Resources: cpu(150000, 100000)}, 2, 256},
		{"a tenth of a CPU", &specs.Linux{Resources: cpu(10000, 100000)}, 1, 256},
		{"four CPUs on a short period", &specs.Linux{Resources: cpu(40000, 10000)}, 4, 256},
		{"no more than 64", &specs.Linux{Resources: cpu(1000000000, 1000)}, 64, 256},
		{"unlimited quota", &specs.Linux{Resources: cpu(-1, 100000)}, 1, 256},
		{"zero period", &specs.Linux{Resources: cpu(200000, 0)}, 1, 256},
		{"quota without a period", &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(200000)}}}, 1, 256},
		{"shares alone", &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(2048)}}}, 1, 256},
		{"64 MiB", &specs.Linux{Resources: mem(64 << 20)}, 1, 64 + 128},
		{"1 GiB", &specs.Linux{Resources: mem(1 << 30)}, 1, 1024 + 128},
		{"a byte over 64 MiB rounds down", &specs.Linux{Resources: mem(64<<20 + 1)}, 1, 64 + 128},
		{"unlimited memory", &specs.Linux{Resources: mem(-1)}, 1, 256},
		{"zero memory", &specs.Linux{Resources: mem(0)}, 1, 256},
		{"memory without a limit", &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{}}}, 1, 256},
		{"both", &specs.Linux{Resources: &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Quota: i64(250000), Period: u64(100000)},
			Memory: &specs.LinuxMemory{Limit: i64(512 << 20)},
		}}, 3, 512 + 128},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vcpus, memMiB := vmShape(&specs.Spec{Linux: tt.linux})
			if vcpus != tt.vcpus || memMiB != tt.memoryMB {
				t.Errorf("vmShape = %d vCPUs, %d MiB; want %d, %d", vcpus, memMiB, tt.vcpus, tt.memoryMB)
			}
		})
	}
}

func TestSandboxID(t *testing.T) {
	id := sandboxID("default", "web")
	if again := sandboxID("default", "web"); again != id {
		t.Errorf("sandboxID(default, web) = %q, then %q: want it stable", id, again)
	}
	if len(id) != 16 {
		t.Errorf("sandboxID(default, web) = %q: want 16 characters", id)
	}
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		t.Errorf("sandboxID(default, web) = %q: want lower-case hex", id)
	}
	seen := map[string]string{}
	for _, nsID := range [][2]string{
		{"default", "web"}, {"default", "web2"}, {"k8s.io", "web"}, {"default", "Web"},
		{"default", strings.Repeat("a", 64)}, {"default", strings.Repeat("a", 63) + "b"}, {"", "web"}, {"default", ""},
	} {
		got := sandboxID(nsID[0], nsID[1])
		if prev, ok := seen[got]; ok {
			t.Errorf("sandboxID(%q, %q) = %q, the same as for %s", nsID[0], nsID[1], got, prev)
		}
		seen[got] = nsID[0] + "/" + nsID[1]
	}
}

func TestSocketPath(t *testing.T) {
	long := strings.Repeat("f", 64) // a containerd ID as CRI makes them
	f := flags{namespace: "k8s.io", address: "/run/containerd/containerd.sock", id: long}
	var cfg Config
	cfg.setDefaults()
	p := socketPath(cfg, f, f.id)
	if dir := filepath.Join(DefaultStateRoot, "s"); filepath.Dir(p) != dir {
		t.Errorf("socketPath = %q: want it in %s", p, dir)
	}
	// sun_path holds 107 bytes and a NUL; the shim's root may be longer
	// than the default (the tests' is a temporary directory).
	if len(p) > 64 {
		t.Errorf("socketPath = %q (%d bytes): want at most 64 with the default root", p, len(p))
	}
	if short := socketPath(cfg, flags{namespace: f.namespace, address: f.address, id: "a"}, "a"); len(short) != len(p) {
		t.Errorf("socketPath is %d bytes for a 64-character ID and %d for a 1-character one: want its length independent of the ID", len(p), len(short))
	}
	tmpRoot := Config{StateRoot: filepath.Join("/tmp", "ctd1234567890", "shim")}
	if q := socketPath(tmpRoot, f, f.id); len(q) >= 107-32 {
		t.Errorf("socketPath under %s = %q (%d bytes): want well under 107", tmpRoot.StateRoot, q, len(q))
	}
	if again := socketPath(cfg, f, f.id); again != p {
		t.Errorf("socketPath = %q, then %q: want it stable (start and delete must agree)", p, again)
	}
	for _, other := range []flags{
		{namespace: "default", address: f.address, id: f.id},
		{namespace: f.namespace, address: "/tmp/other/containerd.sock", id: f.id},
		{namespace: f.namespace, address: f.address, id: f.id[:63]},
	} {
		if q := socketPath(cfg, other, other.id); q == p {
			t.Errorf("socketPath(%+v) = %q, the same as for %+v", other, q, f)
		}
	}
	// Flags that do not name the task do not move its socket.
	withBundle := f
	withBundle.bundle, withBundle.debug, withBundle.action = "/b", true, "delete"
	if q := socketPath(cfg, withBundle, withBundle.id); q != p {
		t.Errorf("socketPath with -bundle, -debug and delete = %q, want %q as for start", q, p)
	}
}
