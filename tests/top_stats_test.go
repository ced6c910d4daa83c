package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
)

// docker top and docker stats against vmctld, through the docker CLI and
// vmctl: the processes of a container's VM as ps shows them, its memory
// limit and use, its PIDs, its block I/O, its CPU use under a busy loop
// and its network traffic, one record or a stream; a stopped container as dockerd shows
// it. One daemon and one running container serve every check.
func TestTopAndStats(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "st", "stopped") })
	d.mustDocker(t, 0, "", "run", "-d", "--name", "st", "--memory", "64m", "busybox", "sh", "-c", "sleep 1000 & sleep 1000 & wait")
	d.mustDocker(t, 0, "", "create", "--name", "stopped", "busybox", "true")
	// The two sleeps are forked by the time top lists them.
	waitFor(t, func() bool {
		return strings.Count(d.mustDocker(t, 0, "", "top", "st").stdout, "sleep 1000\n") == 2
	}, "the container's two sleeps")

	t.Run("top", func(t *testing.T) {
		for _, client := range []string{"docker", "vmctl"} {
			run := d.mustDocker
			if client == "vmctl" {
				run = d.mustVmctl
			}
			rows := table(run(t, 0, "", "top", "st").stdout)
			if len(rows) < 4 || strings.Join(rows[0], " ") != "UID PID PPID C STIME TTY TIME CMD" {
				t.Fatalf("%s top st: %q, want ps -ef's columns and 3 processes", client, rows)
			}
			var cmds []string
			for _, r := range rows[1:] {
				if r[0] != "root" || r[5] != "?" {
					t.Errorf("%s top: %q, want root's processes without a terminal", client, r)
				}
				cmds = append(cmds, strings.Join(r[7:], " "))
			}
			if want := "sh -c sleep 1000 & sleep 1000 & wait|sleep 1000|sleep 1000"; strings.Join(cmds, "|") != want {
				t.Errorf("%s top commands = %q, want %q", client, cmds, want)
			}
			// The container's own pids: its init is 1, the sleeps its children.
			if rows[1][1] != "1" || rows[2][2] != "1" || rows[3][2] != "1" {
				t.Errorf("%s top pids: %q, want the init as 1 and the sleeps its children", client, rows)
			}
			rows = table(run(t, 0, "", "top", "st", "-o", "pid,comm").stdout)
			if len(rows) != 4 || strings.Join(rows[0], " ") != "PID COMMAND" || rows[1][1] != "sh" || rows[2][1] != "sleep" || rows[3][1] != "sleep" {
				t.Errorf("%s top -o pid,comm: %q", client, rows)
			}
			rows = table(run(t, 0, "", "top", "st", "aux").stdout)
			if len(rows) != 4 || strings.Join(rows[0], " ") != "USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND" {
				t.Errorf("%s top aux: %q", client, rows)
			}
			if r := run(t, 1, "", "top", "stopped"); !strings.Contains(r.stderr, "is not running") {
				t.Errorf("%s top of a stopped container: %q", client, r.stderr)
			}
			if r := run(t, 1, "", "top", "st", "-l"); !strings.Contains(r.stderr, "not supported") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("%s top -l: %q, want one line saying it is not supported", client, r.stderr)
			}
		}
		// An exec's processes are the container's too.
		d.mustDocker(t, 0, "", "exec", "-d", "st", "sleep", "999")
		waitFor(t, func() bool { return strings.Contains(d.mustDocker(t, 0, "", "top", "st").stdout, "sleep 999") }, "the exec in top")
	})

	const format = "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}|{{.NetIO}}"
	t.Run("stats", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "stats", "--no-stream", "st")
		if !strings.Contains(r.stdout, "CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT") || !strings.Contains(r.stdout, " st ") {
			t.Errorf("docker stats --no-stream st:\n%s", r.stdout)
		}
		for _, client := range []string{"docker", "vmctl"} {
			run := d.mustDocker
			if client == "vmctl" {
				run = d.mustVmctl
			}
			f := statsFields(t, run(t, 0, "", "stats", "--no-stream", "--format", format, "st").stdout)
			if f.name != "st" || f.memLimit != 64<<20 || f.pids < 4 {
				t.Errorf("%s stats: %+v, want a 64MiB limit and 4 PIDs (sh, two sleeps, the exec)", client, f)
			}
			// All running containers: st, not the stopped one.
			all := run(t, 0, "", "stats", "--no-stream", "--format", "{{.Name}}").stdout
			if strings.TrimSpace(all) != "st" {
				t.Errorf("%s stats --no-stream of all: %q, want st alone", client, all)
			}
			// A stopped container's record is empty, as dockerd's.
			if f := statsFields(t, run(t, 0, "", "stats", "--no-stream", "--format", format, "stopped").stdout); f.memLimit != 0 || f.pids != 0 || f.name != "stopped" {
				t.Errorf("%s stats of a stopped container: %+v", client, f)
			}
		}
		if r := d.docker(t, "", "stats", "--no-stream", "nosuch"); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "no such container") {
			t.Errorf("docker stats of an unknown container: %d %q", r.code, r.stderr)
		}

		// 20 MiB in the container's tmpfs is charged to it.
		before := statsFields(t, d.mustDocker(t, 0, "", "stats", "--no-stream", "--format", format, "st").stdout)
		d.mustDocker(t, 0, "", "exec", "st", "dd", "if=/dev/zero", "of=/dev/shm/x", "bs=1M", "count=20")
		after := statsFields(t, d.mustDocker(t, 0, "", "stats", "--no-stream", "--format", format, "st").stdout)
		if after.mem < 20<<20 || after.mem < before.mem+18<<20 {
			t.Errorf("memory use after 20 MiB in /dev/shm: %s, before %s", units.BytesSize(float64(after.mem)), units.BytesSize(float64(before.mem)))
		}

		// 10 MiB written to its writable disk are its block I/O (its
		// cgroup's io.stat).
		written := func() (n uint64) {
			for _, e := range d.statsRecord(t, "st").BlkioStats.IoServiceBytesRecursive {
				if e.Op == "write" {
					n += e.Value
				}
			}
			return n
		}
		w0 := written()
		d.mustDocker(t, 0, "", "exec", "st", "sh", "-c", "dd if=/dev/zero of=/f bs=1M count=10 2>/dev/null && sync")
		if w1 := written(); w1 < w0+10<<20 {
			t.Errorf("block I/O written after 10 MiB and a sync: %d -> %d bytes", w0, w1)
		}
	})

	t.Run("network", func(t *testing.T) {
		gw := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.NetworkSettings.Gateway}}", "st").stdout)
		if gw == "" {
			t.Fatalf("st has no gateway: the daemon gives containers a network")
		}
		rx0, tx0 := d.netIO(t, "st")
		d.mustDocker(t, 0, "", "exec", "st", "ping", "-c", "5", "-i", "0.2", "-s", "1000", gw)
		rx1, tx1 := d.netIO(t, "st")
		if rx1 < rx0+5000 || tx1 < tx0+5000 {
			t.Errorf("eth0 after 5 pings of 1000 bytes: rx %d -> %d, tx %d -> %d bytes", rx0, rx1, tx0, tx1)
		}
		if f := statsFields(t, d.mustDocker(t, 0, "", "stats", "--no-stream", "--format", format, "st").stdout); f.netIO == "0B / 0B" {
			t.Errorf("docker stats NET I/O after traffic: %q", f.netIO)
		}
	})

	t.Run("stream", func(t *testing.T) {
		for _, client := range []string{"docker", "vmctl"} {
			out := d.streamFor(t, client, 4*time.Second, "stats", "st")
			if frames := strings.Count(out, "MEM USAGE / LIMIT"); frames < 3 || !strings.Contains(out, " st ") {
				t.Errorf("%s stats st for 4s: %d frames, want several:\n%s", client, frames, out)
			}
		}
	})

	t.Run("cpu", func(t *testing.T) {
		// A busy loop takes the VM's one CPU.
		d.mustDocker(t, 0, "", "exec", "-d", "st", "timeout", "60", "sh", "-c", "while :; do :; done")
		waitFor(t, func() bool {
			f := statsFields(t, d.mustDocker(t, 0, "", "stats", "--no-stream", "--format", format, "st").stdout)
			return f.cpu > 50
		}, "CPU use above 50% under a busy loop")
	})
}

// table splits a docker top output into rows of fields.
func table(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

type statsLine struct {
	name          string
	mem, memLimit int64
	pids          int
	cpu           float64
	netIO         string
}

// statsFields reads one line of docker stats in the tests' format.
func statsFields(t *testing.T, out string) statsLine {
	t.Helper()
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 5 {
		t.Fatalf("stats line %q: want 5 fields", out)
	}
	use, limit, _ := strings.Cut(f[1], " / ")
	var l statsLine
	var err error
	l.name, l.netIO = f[0], f[4]
	if l.mem, err = units.RAMInBytes(use); err != nil {
		t.Fatalf("memory use %q: %v", use, err)
	}
	if l.memLimit, err = units.RAMInBytes(limit); err != nil {
		t.Fatalf("memory limit %q: %v", limit, err)
	}
	if l.pids, err = strconv.Atoi(f[2]); err != nil {
		t.Fatalf("PIDs %q: %v", f[2], err)
	}
	if l.cpu, err = strconv.ParseFloat(strings.TrimSuffix(f[3], "%"), 64); err != nil {
		t.Fatalf("CPU %q: %v", f[3], err)
	}
	return l
}

// statsRecord is the API's one-shot stats record of a container.
func (d *daemon) statsRecord(t *testing.T, name string) container.StatsResponse {
	t.Helper()
	resp, err := d.http().Get("http://vmctld/v1.41/containers/" + name + "/stats?stream=false&one-shot=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rec container.StatsResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&rec) != nil {
		t.Fatalf("stats of %s: %s", name, resp.Status)
	}
	return rec
}

// netIO is what the API's one-shot record says the container's eth0
// received and sent.
func (d *daemon) netIO(t *testing.T, name string) (rx, tx uint64) {
	t.Helper()
	rec := d.statsRecord(t, name)
	eth0, ok := rec.Networks["eth0"]
	if !ok {
		t.Fatalf("stats of %s: networks %v, want eth0", name, rec.Networks)
	}
	return eth0.RxBytes, eth0.TxBytes
}

// streamFor runs a streaming client command (docker or vmctl against d)
// for a while, then interrupts it as a user's ctrl-c would, and returns
// what it printed. vmctl must end at the first SIGINT; the docker CLI
// (28) goes on drawing after its first and ends at its third.
func (d *daemon) streamFor(t *testing.T, client string, dur time.Duration, args ...string) string {
	t.Helper()
	var c *exec.Cmd
	if client == "docker" {
		c = exec.Command("docker", args...)
		c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
	} else {
		c = clientCmd(context.Background(), e2e(t), nil, append([]string{"-H", d.host()}, args...)...)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	time.Sleep(dur)
	interrupts := 1
	if client == "docker" {
		interrupts = 3
	}
	for i := range interrupts {
		c.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
			return out.String()
		case <-time.After(5 * time.Second):
			if i == interrupts-1 {
				c.Process.Kill()
				<-done
				t.Fatalf("%s %s did not end after %d SIGINTs: %s", client, strings.Join(args, " "), interrupts, errb.String())
			}
		}
	}
	return out.String()
}
