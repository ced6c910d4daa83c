package nested

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
)

// fakeKernel is a Kernel whose files exist but hold no kernel: enough to
// build images.
func fakeKernel(t *testing.T) Kernel {
	t.Helper()
	dir := t.TempDir()
	k := Kernel{Dir: dir, Release: "test", Vmlinuz: filepath.Join(dir, "vmlinuz")}
	os.WriteFile(k.Vmlinuz, []byte("kernel"), 0o644)
	for _, m := range []string{"irqbypass", "kvm", "kvm-amd"} {
		k.Modules = append(k.Modules, m)
		f := filepath.Join(dir, m+".ko")
		if err := os.WriteFile(f, []byte("module "+m), 0o644); err != nil {
			t.Fatal(err)
		}
		k.ModuleFiles = append(k.ModuleFiles, f)
	}
	return k
}

func staticBusybox(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is missing: install busybox-static")
	}
	return "/bin/busybox"
}

func TestWriteImage(t *testing.T) {
	host := filepath.Join(t.TempDir(), "tool.sh")
	if err := os.WriteFile(host, []byte("#!/bin/sh\necho tool\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Kernel:  fakeKernel(t),
		Busybox: staticBusybox(t),
		Scenarios: []Scenario{
			{Name: "one", Script: "echo one"},
			{Name: "two", Script: "echo two", Timeout: 90 * time.Second},
		},
		Files: []File{
			{Path: "/nested/bin/tool", Source: host},
			{Path: "nested/guest/deep/data", Data: []byte("d")},
		},
	}
	var buf bytes.Buffer
	if err := WriteImage(&buf, cfg); err != nil {
		t.Fatalf("WriteImage: %v", err)
	}
	got := map[string]*cpio.Header{}
	data := map[string]string{}
	r := cpio.NewReader(&buf)
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		b, _ := io.ReadAll(r)
		got[h.Name], data[h.Name] = h, string(b)
	}
	for name, mode := range map[string]cpio.FileMode{
		"init": 0o755, "bin/busybox": 0o755, "nested/bin/tool": 0o755, "nested/guest/deep/data": 0o644,
		"nested/modules/irqbypass.ko": 0o644, "nested/modules/kvm.ko": 0o644, "nested/modules/kvm-amd.ko": 0o644,
		"nested/scenarios/one.sh": 0o644, "nested/scenarios/two.sh": 0o644, "nested/plan": 0o644,
	} {
		h, ok := got[name]
		if !ok {
			t.Errorf("%s missing from the image", name)
			continue
		}
		if h.Mode.Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, h.Mode.Perm(), mode)
		}
	}
	for _, d := range []string{"usr/sbin", "nested/guest/deep", "nested/bin", "dev"} {
		if h, ok := got[d]; !ok || !h.Mode.IsDir() {
			t.Errorf("directory %s missing from the image", d)
		}
	}
	if !strings.HasPrefix(data["init"], "#!/bin/busybox sh") {
		t.Errorf("init is not init.sh: %.40q", data["init"])
	}
	wantPlan := "NESTED_DEADLINE=220\nNESTED_MODULES=\"irqbypass kvm kvm-amd\"\nNESTED_SCENARIOS=\"one:60 two:90\"\n"
	if data["nested/plan"] != wantPlan {
		t.Errorf("plan = %q, want %q", data["nested/plan"], wantPlan)
	}
	if data["nested/modules/kvm.ko"] != "module kvm" || data["nested/scenarios/two.sh"] != "echo two" {
		t.Errorf("module or scenario content wrong")
	}
}

func TestConfigErrors(t *testing.T) {
	k := fakeKernel(t)
	bb := staticBusybox(t)
	dynamic := filepath.Join(t.TempDir(), "dyn")
	if self, err := os.ReadFile("/bin/ls"); err == nil { // dynamically linked on Debian
		os.WriteFile(dynamic, self, 0o755)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no kernel", Config{Busybox: bb}, "no L1 kernel"},
		{"bad name", Config{Kernel: k, Busybox: bb, Scenarios: []Scenario{{Name: "a b"}}}, "invalid scenario name"},
		{"reserved", Config{Kernel: k, Busybox: bb, Scenarios: []Scenario{{Name: KVMCheck}}}, "reserved"},
		{"twice", Config{Kernel: k, Busybox: bb, Scenarios: []Scenario{{Name: "a"}, {Name: "a"}}}, "used twice"},
		{"short timeout", Config{Kernel: k, Busybox: bb, Scenarios: []Scenario{{Name: "a", Timeout: time.Millisecond}}}, "under a second"},
		{"tiny machine", Config{Kernel: k, Busybox: bb, MemoryMiB: 64}, "too small"},
		{"escaping path", Config{Kernel: k, Busybox: bb, Files: []File{{Path: "../x"}}}, "invalid path"},
		{"init clash", Config{Kernel: k, Busybox: bb, Files: []File{{Path: "/init"}}}, "invalid path"},
		{"plan clash", Config{Kernel: k, Busybox: bb, Files: []File{{Path: "nested/plan"}}}, "twice or clashes"},
		{"missing source", Config{Kernel: k, Busybox: bb, Files: []File{{Path: "x", Source: "/nonexistent"}}}, "no such file"},
		{"dynamic busybox", Config{Kernel: k, Busybox: dynamic}, "dynamically linked"},
		{"dynamic file", Config{Kernel: k, Busybox: bb, Files: []File{{Path: "bin/ls", Source: dynamic}}}, "dynamically linked"},
	}
	for _, tt := range tests {
		err := WriteImage(io.Discard, tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: WriteImage = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	// Dynamic executables are allowed on request.
	ok := Config{Kernel: k, Busybox: bb, Files: []File{{Path: "bin/ls", Source: dynamic, Dynamic: true}}}
	if err := WriteImage(io.Discard, ok); err != nil {
		t.Errorf("WriteImage with Dynamic: %v", err)
	}
}

func TestFindKernel(t *testing.T) {
	root := t.TempDir()
	if _, err := FindKernel(root); !errors.Is(err, ErrNotPrepared) {
		t.Errorf("FindKernel(empty) = %v, want ErrNotPrepared", err)
	}
	dir := filepath.Join(root, "nested", "6.1.0-1-cloud-amd64")
	os.MkdirAll(dir, 0o755)
	os.Symlink("6.1.0-1-cloud-amd64", filepath.Join(root, "nested", "current"))
	for _, f := range []string{"vmlinuz", ".complete"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "kernel.release"), []byte("6.1.0-1-cloud-amd64\n"), 0o644)
	if _, err := FindKernel(root); !errors.Is(err, ErrNotPrepared) || !strings.Contains(err.Error(), "modules.order") {
		t.Errorf("FindKernel(no modules.order) = %v, want ErrNotPrepared naming modules.order", err)
	}
	// A cache prepared before a module joined RequiredModules is not
	// prepared enough.
	short := RequiredModules[:len(RequiredModules)-1]
	os.WriteFile(filepath.Join(dir, "modules.order"), []byte(strings.Join(short, "\n")+"\n"), 0o644)
	last := RequiredModules[len(RequiredModules)-1]
	if _, err := FindKernel(root); !errors.Is(err, ErrNotPrepared) || !strings.Contains(err.Error(), last) {
		t.Errorf("FindKernel(short modules.order) = %v, want ErrNotPrepared naming %s", err, last)
	}
	order := append([]string{"libcrc32c"}, RequiredModules...)
	os.WriteFile(filepath.Join(dir, "modules.order"), []byte(strings.Join(order, "\n")+"\n"), 0o644)
	for _, m := range order[:len(order)-1] {
		os.WriteFile(filepath.Join(dir, m+".ko"), nil, 0o644)
	}
	if _, err := FindKernel(root); !errors.Is(err, ErrNotPrepared) || !strings.Contains(err.Error(), last+".ko") {
		t.Errorf("FindKernel(no %s.ko) = %v, want ErrNotPrepared naming it", last, err)
	}
	os.WriteFile(filepath.Join(dir, last+".ko"), nil, 0o644)
	k, err := FindKernel(root)
	if err != nil {
		t.Fatalf("FindKernel: %v", err)
	}
	if k.Release != "6.1.0-1-cloud-amd64" || k.Dir != dir || len(k.Modules) != len(order) || len(k.ModuleFiles) != len(order) ||
		k.Modules[0] != "libcrc32c" || filepath.Base(k.ModuleFiles[0]) != "libcrc32c.ko" {
		t.Errorf("FindKernel = %+v", k)
	}
}

func TestHostTSC(t *testing.T) {
	if !haveTSC {
		t.Skip("no TSC on this architecture")
	}
	khz := hostTSCkHz()
	if khz == 0 {
		t.Fatal("hostTSCkHz = 0: TSC measurement failed")
	}
	t.Logf("host TSC %d kHz", khz)
}
