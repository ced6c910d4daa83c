package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/vmctl/vmctl/api/agent/contract"
	agent "github.com/vmctl/vmctl/api/agent/v1"
)

var testNow = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// testSource reads testdata: a container whose init is pid 100 (1 in the
// container), with a child (2) and an exec (5) in a sub-cgroup, and a
// guest up for 20 s.
func testSource() Source {
	return Source{
		Cgroup: "testdata/cgroup/c1", InitPid: 100, Proc: "testdata/proc", Sys: "testdata/sys",
		Now: func() time.Time { return testNow }, Uptime: func() time.Duration { return 20 * time.Second },
	}
}

func TestProcesses(t *testing.T) {
	got, err := Processes(testSource())
	if err != nil {
		t.Fatal(err)
	}
	page := uint64(os.Getpagesize())
	want := &agent.ListProcessesResponse{TimeUnixNano: testNow.UnixNano(), Processes: []*agent.ProcessInfo{
		// Started at tick 1500 of a guest up for 20 s: 5 s ago. 3+2 ticks
		// of CPU. Its parent, the agent, is no process of the container.
		{Pid: 100, Ppid: 1, ContainerPid: 1, Uid: 0, Gid: 0, User: "root", State: "S",
			StartTimeUnixNano: testNow.Add(-5 * time.Second).UnixNano(), CpuTimeNanos: uint64(50 * time.Millisecond),
			Tty: "pts/0", Comm: "sh", Args: []string{"sh", "-c", "sleep 1000 & sleep 1000 & wait"},
			Threads: 1, VszBytes: 1662976, RssBytes: 200 * page},
		{Pid: 101, Ppid: 100, ContainerPid: 2, ContainerPpid: 1, Uid: 1000, Gid: 1000, User: "user", State: "R",
			StartTimeUnixNano: testNow.Add(-4 * time.Second).UnixNano(), CpuTimeNanos: uint64(3 * time.Second),
			Tty: "pts/0", Comm: "my (odd) cmd", Args: []string{"sleep", "1000"}, Threads: 2, VszBytes: 4096000, RssBytes: 512 * page},
		// An exec (its parent is the agent), in a sub-cgroup: a zombie
		// without a command line, of a user /etc/passwd does not name.
		// 103, listed in the sub-cgroup, is gone.
		{Pid: 102, Ppid: 1, ContainerPid: 5, Uid: 65534, Gid: 65534, State: "Z",
			StartTimeUnixNano: testNow.Add(-3 * time.Second).UnixNano(), Comm: "true", Threads: 1},
	}}
	if !proto.Equal(got, want) {
		t.Errorf("Processes =\n%v\nwant\n%v", got, want)
	}
}

func TestProcessesWithoutInit(t *testing.T) {
	src := testSource()
	src.InitPid = 0
	got, err := Processes(src)
	if err != nil {
		t.Fatal(err)
	}
	// The container's namespace is the outermost one its processes are
	// in; without the init's root there are no names.
	for i, wantPid := range []uint32{1, 2, 5} {
		if p := got.Processes[i]; p.ContainerPid != wantPid || p.User != "" {
			t.Errorf("process %d: container pid %d, user %q; want %d and none", p.Pid, p.ContainerPid, p.User, wantPid)
		}
	}
}

func TestProcessesOfAGoneCgroup(t *testing.T) {
	src := testSource()
	src.Cgroup = filepath.Join(t.TempDir(), "gone")
	if _, err := Processes(src); err == nil {
		t.Error("Processes of a cgroup that is not there succeeded")
	}
}

// writeProc writes a minimal /proc/PID of a process in the guest's root
// pid namespace.
func writeProc(t *testing.T, proc string, pid int, cmdline string) {
	t.Helper()
	dir := filepath.Join(proc, strconv.Itoa(pid))
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "stat"), fmt.Appendf(nil, "%d (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 10 0 0 0\n", pid), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "status"), fmt.Appendf(nil, "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t%d\n", pid), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A container with more processes than the contract lets one answer
// carry: the lowest pids are listed, whatever order cgroup.procs has.
func TestProcessesAreBounded(t *testing.T) {
	dir := t.TempDir()
	proc, cg := filepath.Join(dir, "proc"), filepath.Join(dir, "cg")
	must(t, os.MkdirAll(cg, 0o755))
	n := contract.MaxListedProcesses + 5
	var procs strings.Builder
	for pid := n; pid >= 1; pid-- {
		fmt.Fprintf(&procs, "%d\n", pid)
	}
	must(t, os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(procs.String()), 0o644))
	for _, pid := range []int{1, 2, n - 4, n} {
		writeProc(t, proc, pid, "x\x00")
	}
	got, err := Processes(Source{Cgroup: cg, Proc: proc})
	if err != nil {
		t.Fatal(err)
	}
	var pids []uint32
	for _, p := range got.Processes {
		pids = append(pids, p.Pid)
	}
	if len(pids) != 2 || pids[0] != 1 || pids[1] != 2 {
		t.Errorf("listed pids %v, want [1 2]: the lowest %d of %d", pids, contract.MaxListedProcesses, n)
	}
}

func TestSplitArgs(t *testing.T) {
	long := strings.Repeat("a", contract.MaxProcessArgsBytes+10)
	many := strings.Repeat("x\x00", contract.MaxProcessArgs+10)
	tests := []struct {
		name, cmdline string
		want          []string
	}{
		{"empty", "", nil},
		{"plain", "ls\x00-l\x00/tmp\x00", []string{"ls", "-l", "/tmp"}},
		{"no final NUL (setproctitle)", "nginx: worker", []string{"nginx: worker"}},
		{"empty argument", "echo\x00\x00x\x00", []string{"echo", "", "x"}},
		{"invalid UTF-8", "a\xffb\x00", []string{"a\uFFFDb"}},
		{"one long argument", long, []string{long[:contract.MaxProcessArgsBytes]}},
		{"long after short", "ab\x00" + long, []string{"ab", long[:contract.MaxProcessArgsBytes-2]}},
		{"cut on a character", "é" + long, []string{"é" + long[:contract.MaxProcessArgsBytes-2]}},
	}
	for _, tt := range tests {
		got := splitArgs([]byte(tt.cmdline))
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("%s: splitArgs = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := splitArgs([]byte(many)); len(got) != contract.MaxProcessArgs {
		t.Errorf("splitArgs of %d arguments kept %d, want %d", contract.MaxProcessArgs+10, len(got), contract.MaxProcessArgs)
	}
	odd := "\xe2\x82" + strings.Repeat("b", contract.MaxProcessArgsBytes)
	for _, a := range splitArgs([]byte(odd)) {
		if !utf8.ValidString(a) {
			t.Errorf("splitArgs gave invalid UTF-8 %q", a)
		}
	}
}

func TestParsePidStat(t *testing.T) {
	p, err := parsePidStat([]byte("7 (a) b) c) T 3 7 7 34817 7 0 0 0 0 0 12 8 0 0 20 0 4 0 99 1000 10 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.comm != "a) b) c" || p.state != 'T' || p.ppid != 3 || p.cpuTicks != 20 || p.threads != 4 || p.startTicks != 99 ||
		p.vsz != 1000 || p.rssPages != 10 || ttyName(p.ttyNr) != "pts/1" {
		t.Errorf("parsePidStat = %+v", p)
	}
	for _, bad := range []string{
		"", "7 a S 1", "7 (a) S 1 2 3", "7 (a) SS 1 7 7 0 7 0 0 0 0 0 1 1 0 0 20 0 1 0 9 1 1 0",
		"7 (a) S x 7 7 0 7 0 0 0 0 0 1 1 0 0 20 0 1 0 9 1 1 0", "7 (a S 1 7 7 0 7 0 0 0 0 0 1 1 0 0 20 0 1 0 9 1 1 0",
	} {
		if _, err := parsePidStat([]byte(bad)); err == nil {
			t.Errorf("parsePidStat(%q) succeeded", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	var p procInfo
	p.pid = 9
	if err := parseStatus([]byte("Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n"), &p); err != nil {
		t.Fatal(err)
	}
	if p.uid != 2 || p.gid != 6 || len(p.nspid) != 1 || p.nspid[0] != 9 {
		t.Errorf("parseStatus = %+v: want the effective ids, and the pid as the only NSpid", p)
	}
	for _, bad := range []string{"", "Uid:\t1\n", "Uid:\t1\t2\nGid:\tx\ty\n", "Uid:\t1\t2\nGid:\t1\t2\nNSpid:\t9\t-1\n"} {
		if err := parseStatus([]byte(bad), &procInfo{}); err == nil {
			t.Errorf("parseStatus(%q) succeeded", bad)
		}
	}
}

func TestTTYName(t *testing.T) {
	tests := []struct {
		major, minor uint32
		want         string
	}{
		{136, 0, "pts/0"}, {136, 255, "pts/255"}, {137, 3, "pts/259"}, {136, 300, "pts/300"},
		{4, 1, "tty1"}, {4, 64, "ttyS0"}, {5, 1, "console"}, {229, 0, "hvc0"}, {8, 0, "?"},
	}
	for _, tt := range tests {
		if got := ttyName(unix.Mkdev(tt.major, tt.minor)); got != tt.want {
			t.Errorf("ttyName(%d:%d) = %q, want %q", tt.major, tt.minor, got, tt.want)
		}
	}
	if got := ttyName(0); got != "" {
		t.Errorf("ttyName(0) = %q, want none", got)
	}
}

// The container's /etc/passwd is read inside its root: a symlink out of
// it, a FIFO or a huge file gives no names rather than another file's,
// a hang or an allocation.
func TestUserNamesStayInTheContainer(t *testing.T) {
	newRoot := func(t *testing.T) (Source, string) {
		dir := t.TempDir()
		proc := filepath.Join(dir, "proc")
		etc := filepath.Join(proc, "7", "root", "etc")
		must(t, os.MkdirAll(etc, 0o755))
		// What a symlink resolved outside the root would reach.
		must(t, os.WriteFile(filepath.Join(dir, "passwd"), []byte("guest:x:0:0::/:/bin/sh\n"), 0o644))
		return Source{InitPid: 7, Proc: proc}, etc
	}
	t.Run("symlink", func(t *testing.T) {
		src, etc := newRoot(t)
		must(t, os.Symlink("/../../../../passwd", filepath.Join(etc, "passwd")))
		if names := userNames(src); len(names) != 0 {
			t.Errorf("names through a symlink out of the root: %v", names)
		}
	})
	t.Run("relative symlink", func(t *testing.T) {
		src, etc := newRoot(t)
		must(t, os.Symlink("../../../../passwd", filepath.Join(etc, "passwd")))
		if names := userNames(src); len(names) != 0 {
			t.Errorf("names through a symlink out of the root: %v", names)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		src, etc := newRoot(t)
		must(t, unix.Mkfifo(filepath.Join(etc, "passwd"), 0o644))
		done := make(chan map[uint32]string, 1)
		go func() { done <- userNames(src) }()
		select {
		case names := <-done:
			if len(names) != 0 {
				t.Errorf("names from a FIFO: %v", names)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("userNames blocked on a FIFO")
		}
	})
	t.Run("huge", func(t *testing.T) {
		src, etc := newRoot(t)
		f, err := os.Create(filepath.Join(etc, "passwd"))
		must(t, err)
		f.WriteString("root:x:0:0::/:/bin/sh\n")
		must(t, f.Truncate(1<<30))
		f.Close()
		if names := userNames(src); len(names) != 0 {
			t.Errorf("names from a 1 GiB file: %v", names)
		}
	})
	t.Run("long name", func(t *testing.T) {
		src, etc := newRoot(t)
		long := strings.Repeat("n", contract.MaxProcessNameLen+1)
		must(t, os.WriteFile(filepath.Join(etc, "passwd"), []byte(long+":x:5:5::/:/bin/sh\nok:x:6:6::/:/bin/sh\n"), 0o644))
		if names := userNames(src); len(names) != 1 || names[6] != "ok" {
			t.Errorf("names = %v, want only ok (6)", names)
		}
	})
}
