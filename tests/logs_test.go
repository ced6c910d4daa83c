package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmRSS is a process's resident set in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			must(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// A container's log is compact (a chunk of output costs a few bytes, not
// 16 per line), `logs --tail` reads it from the end (vmctld's memory does
// not grow with the log), and --log-opt max-size/max-file bound it as
// docker's json-file driver does.
func TestLogsBounded(t *testing.T) {
	d := startDaemon(t)
	// 20 MB of two-byte lines, the log unbounded.
	d.mustDocker(t, 0, "", "run", "--name", "flood", "--log-opt", "max-size=-1", "busybox", "sh", "-c", "yes | head -c 20000000; echo last")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "flood", "capped") })
	id := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.Id}}", "flood").stdout)
	logPath := filepath.Join(d.dataRoot, "containers", id, "stdio.log")
	fi, err := os.Stat(logPath)
	must(t, err)
	if fi.Size() < 20_000_000 || fi.Size() > 21_000_000 {
		t.Errorf("20 MB of output took %d bytes of log, want at most 5%% more", fi.Size())
	}
	// Grown to 200 MB by repeating its entries (each stands alone), with
	// the last line at its end.
	b, err := os.ReadFile(logPath)
	must(t, err)
	const magicLen = 8
	body := b[magicLen:]
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	for i := 0; i < 9; i++ {
		_, err = f.Write(body)
		must(t, err)
	}
	must(t, f.Close())

	pid := d.cmd.Process.Pid
	before := vmRSS(t, pid)
	start := time.Now()
	r := d.mustDocker(t, 0, "", "logs", "--tail", "1", "flood")
	took := time.Since(start)
	grew := vmRSS(t, pid) - before
	if r.stdout != "last\n" {
		t.Errorf("logs --tail 1 of a 200 MB log printed %q", r.stdout)
	}
	if grew > 16<<20 {
		t.Errorf("vmctld's RSS grew by %d MiB reading the last line of a 200 MB log (limit 16 MiB)", grew>>20)
	}
	t.Logf("logs --tail 1 of a 200 MB log: %v, vmctld RSS %+d KiB", took.Round(time.Millisecond), grew>>10)
	r = d.mustDocker(t, 0, "", "logs", "--tail", "3", "flood")
	if r.stdout != "y\ny\nlast\n" {
		t.Errorf("logs --tail 3 printed %q", r.stdout)
	}

	// Capped: 3 MB of output into files of at most 1 MB, two kept.
	d.mustDocker(t, 0, "", "run", "--name", "capped", "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "busybox", "sh", "-c",
		"yes | head -c 3000000; echo end")
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{json .HostConfig.LogConfig}}", "capped"); !strings.Contains(r.stdout, `"max-file":"2"`) {
		t.Errorf("inspect LogConfig = %s", r.stdout)
	}
	id = strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.Id}}", "capped").stdout)
	files, _ := filepath.Glob(filepath.Join(d.dataRoot, "containers", id, "stdio.log*"))
	var total int64
	for _, p := range files {
		fi, err := os.Stat(p)
		must(t, err)
		total += fi.Size()
	}
	if len(files) != 2 || total > 2_000_000 {
		t.Errorf("capped log: %d files, %d bytes; want 2 files of at most 1 MB", len(files), total)
	}
	r = d.mustDocker(t, 0, "", "logs", "capped")
	if !strings.HasSuffix(r.stdout, "y\nend\n") || bytes.Count([]byte(r.stdout), []byte("y\n")) > 1_000_000 {
		t.Errorf("logs of the capped container: %d bytes ending %q", len(r.stdout), r.stdout[max(0, len(r.stdout)-10):])
	}
	// A bad option is refused at create.
	r = d.docker(t, "", "run", "--rm", "--log-opt", "max-size=lots", "busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, `invalid log option max-size "lots"`) {
		t.Errorf("bad --log-opt: exit %d, stderr %q", r.code, r.stderr)
	}
}
