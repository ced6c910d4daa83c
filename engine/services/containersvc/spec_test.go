package containersvc

import (
	"errors"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/containers"
)

func TestResolveArgs(t *testing.T) {
	tests := []struct {
		entry, image, user, want []string
		wantErr                  bool
	}{
		{nil, []string{"sh"}, nil, []string{"sh"}, false},
		{nil, []string{"sh"}, []string{"uname", "-a"}, []string{"uname", "-a"}, false},
		{[]string{"/bin/tini", "--"}, []string{"sh"}, nil, []string{"/bin/tini", "--", "sh"}, false},
		{[]string{"/bin/tini", "--"}, []string{"sh"}, []string{"ls"}, []string{"/bin/tini", "--", "ls"}, false},
		{nil, nil, nil, nil, true},
	}
	for _, tt := range tests {
		got, err := ResolveArgs(tt.entry, tt.image, tt.user)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ResolveArgs(%q, %q, %q) = %q, %v; want %q, err=%v", tt.entry, tt.image, tt.user, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	got, err := MergeEnv([]string{"PATH=/bin", "A=1"}, []string{"A=2", "B=3", "DROP"}, "h1", true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/bin", "A=2", "B=3", "HOSTNAME=h1", "TERM=xterm"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MergeEnv = %q, want %q", got, want)
	}
	got, _ = MergeEnv(nil, nil, "h", false)
	if want := []string{defaultPath, "HOSTNAME=h"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MergeEnv(nil) = %q, want %q", got, want)
	}
	if _, err := MergeEnv(nil, []string{"=x"}, "h", false); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("MergeEnv(=x) err = %v, want invalid argument", err)
	}
}

func TestParseUser(t *testing.T) {
	tests := []struct {
		in       string
		uid, gid uint32
		name     string // for the guest to resolve
		wantErr  bool
	}{
		{"", 0, 0, "", false}, {"1000", 1000, 0, "", false}, {"1000:100", 1000, 100, "", false},
		{"nobody", 0, 0, "nobody", false}, {"1:staff", 0, 0, "1:staff", false}, {"www:1", 0, 0, "www:1", false},
		{":1", 0, 0, "", true}, {"a:", 0, 0, "", true}, {"a:b:c", 0, 0, "", true}, {"a b", 0, 0, "", true}, {"a\nb", 0, 0, "", true},
	}
	for _, tt := range tests {
		uid, gid, name, err := ParseUser(tt.in)
		if (err != nil) != tt.wantErr || uid != tt.uid || gid != tt.gid || name != tt.name {
			t.Errorf("ParseUser(%q) = %d, %d, %q, %v; want %d, %d, %q, err=%v", tt.in, uid, gid, name, err, tt.uid, tt.gid, tt.name, tt.wantErr)
		}
	}
}

func TestBuildSpec(t *testing.T) {
	c := &containers.Container{ID: "x", Config: containers.Config{
		Args: []string{"sh"}, Env: []string{"A=1"}, User: "5:6", Hostname: "web", Tty: true,
		ConsoleRows: 24, ConsoleCols: 80, MemoryBytes: 64 << 20, NanoCPUs: 1.5e9,
	}}
	s, err := BuildSpec(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.User.UID != 5 || s.Process.User.GID != 6 || s.Process.Cwd != "/" || !s.Process.Terminal {
		t.Errorf("process = %+v", s.Process)
	}
	if s.Process.ConsoleSize == nil || s.Process.ConsoleSize.Height != 24 || s.Process.ConsoleSize.Width != 80 {
		t.Errorf("console size = %+v", s.Process.ConsoleSize)
	}
	if *s.Linux.Resources.Memory.Limit != 64<<20 {
		t.Errorf("memory limit = %d", *s.Linux.Resources.Memory.Limit)
	}
	if *s.Linux.Resources.CPU.Quota != 150000 || *s.Linux.Resources.CPU.Period != 100000 {
		t.Errorf("cpu = %d/%d", *s.Linux.Resources.CPU.Quota, *s.Linux.Resources.CPU.Period)
	}
	if s.Hostname != "web" || len(s.Linux.Namespaces) != 5 {
		t.Errorf("hostname %q namespaces %v", s.Hostname, s.Linux.Namespaces)
	}
	c.Config.WorkingDir = "relative"
	if _, err := BuildSpec(c); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("relative cwd: err = %v", err)
	}
}
