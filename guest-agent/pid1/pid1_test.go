package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestHasKernelFlag(t *testing.T) {
	tests := []struct {
		cmdline, flag string
		want          bool
	}{
		{"console=ttyS0 vmctl.selftest quiet", "vmctl.selftest", true},
		{"vmctl.selftest=1", "vmctl.selftest", true},
		{"vmctl.selftests", "vmctl.selftest", false},
		{"xvmctl.selftest", "vmctl.selftest", false},
		{"", "vmctl.selftest", false},
		{"reboot=t\n", "reboot", true},
	}
	for _, tt := range tests {
		if got := HasKernelFlag(tt.cmdline, tt.flag); got != tt.want {
			t.Errorf("HasKernelFlag(%q, %q) = %v, want %v", tt.cmdline, tt.flag, got, tt.want)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/run/a", "/run/a"},
		{`/run/a\040b`, "/run/a b"},
		{`/x\011y\134`, "/x\ty\\"},
		{`/bad\09`, `/bad\09`},
		{`/short\04`, `/short\04`},
	}
	for _, tt := range tests {
		if got := unescapeOctal(tt.in); got != tt.want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEnableControllers(t *testing.T) {
	tests := []struct {
		available string
		want      string
	}{
		{"cpuset cpu io memory hugetlb pids rdma misc\n", "+cpu +memory +pids +io"},
		// A kernel without CONFIG_BLK_CGROUP has no io controller.
		{"cpuset cpu memory pids\n", "+cpu +memory +pids"},
		{"memory\n", "+memory"},
		{"", ""},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(tt.available), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := EnableControllers(dir, CgroupControllers); err != nil {
			t.Fatalf("EnableControllers with %q: %v", tt.available, err)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if string(got) != tt.want {
			t.Errorf("EnableControllers with %q wrote %q, want %q", tt.available, got, tt.want)
		}
	}
}

func TestUnmountAllSkipsKernelMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tmpfs")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "disk with space")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	escaped := strings.ReplaceAll(target, " ", `\040`)
	info := "22 1 0:21 / /proc rw - proc proc rw\n" +
		"23 1 0:22 / /dev rw - devtmpfs devtmpfs rw\n" +
		"99 1 0:50 / " + escaped + " rw - tmpfs tmpfs rw\n"
	infoPath := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(infoPath, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := UnmountAll(infoPath); err != nil {
		t.Fatalf("UnmountAll: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Errorf("%s is still a tmpfs after UnmountAll", target)
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Errorf("/proc is gone after UnmountAll: %v", err)
	}
}

func TestSetupAndRebootRefuseOutsidePID1(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("running as PID 1")
	}
	if err := Setup(); err == nil {
		t.Error("Setup outside PID 1: got nil error")
	}
	if err := Reboot(); err == nil {
		t.Error("Reboot outside PID 1: got nil error")
	}
}

func TestLineWriter(t *testing.T) {
	tests := []struct {
		prefix string
		writes []string
		want   []string
	}{
		{"<3>", []string{"a\nb\n"}, []string{"<3>a\n", "<3>b\n"}},
		{"", []string{"one line\n"}, []string{"one line\n"}},
		{"<3>", []string{"no newline"}, []string{"<3>no newline"}},
	}
	for _, tt := range tests {
		rec := &recorder{}
		w := &lineWriter{w: rec, prefix: tt.prefix}
		for _, s := range tt.writes {
			if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
				t.Errorf("Write(%q) = %d, %v", s, n, err)
			}
		}
		if strings.Join(rec.writes, "|") != strings.Join(tt.want, "|") {
			t.Errorf("writes %q with prefix %q gave records %q, want %q", tt.writes, tt.prefix, rec.writes, tt.want)
		}
	}
}

// recorder keeps each write(2)-sized record.
type recorder struct{ writes []string }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func TestPrefixWriter(t *testing.T) {
	rec := &recorder{}
	logMu.Lock()
	saved := logOut
	logOut = rec
	logMu.Unlock()
	defer func() {
		logMu.Lock()
		logOut = saved
		logMu.Unlock()
	}()
	prefixWriter{}.Write([]byte("level=error msg=a\nlevel=error msg=b\n"))
	Logf("disk %s gone\n", "vda")
	want := []string{"vmctl-agent: level=error msg=a\n", "vmctl-agent: level=error msg=b\n", "vmctl-agent: disk vda gone\n"}
	if strings.Join(rec.writes, "") != strings.Join(want, "") {
		t.Errorf("log output = %q, want %q", rec.writes, want)
	}
}
