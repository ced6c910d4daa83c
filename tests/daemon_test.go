package tests

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// daemon is one vmctld started by a test on a temp socket, data root and
// (short) exec root, with busybox loaded.
type daemon struct {
	root, dataRoot, execRoot, sock string
	// netns is the network namespace vmctld runs in, one per daemon, so
	// that two daemons' bridges, addresses and rules never meet (vmctl
	// clients reach it through its unix socket from anywhere).
	netns  string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	bin    string
	// args are more flags for vmctld, set before a launch.
	args []string
}

// launch starts the vmctld binary bin on d's roots and socket and waits
// until it listens.
func (d *daemon) launch(t *testing.T, bin string) {
	t.Helper()
	d.bin = bin
	d.stderr = &bytes.Buffer{}
	if d.netns == "" {
		d.netns = newNetns(t, "vmctl-d")
		must(t, relayLoopbackInto(d.netns))
	}
	// ip netns exec execs vmctld: the process is vmctld's, for signals.
	args := append([]string{"netns", "exec", d.netns, bin, "--data-root", d.dataRoot, "--exec-root", d.execRoot, "-H", "unix://" + d.sock,
		"--kernel", filepath.Join(d.root, "bin/guest/vmlinuz"), "--initrd", filepath.Join(d.root, "bin/guest/initramfs.img")}, d.args...)
	d.cmd = exec.Command("ip", args...)
	d.cmd.Stderr = d.stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, d.cmd.Start())
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vmctld did not listen on %s: %s", d.sock, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// crash kills vmctld with SIGKILL, as a crash would; its VMs run in
// sessions of their own and survive. d.launch(t, d.bin) restarts it on the
// same roots.
func (d *daemon) crash(t *testing.T) {
	t.Helper()
	must(t, d.cmd.Process.Kill())
	d.cmd.Wait() // the status is SIGKILL by construction
}

// startDaemon builds vmctld into a temp dir and starts it (startDaemonWith).
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	e := e2e(t) // checks the artifacts, root and QEMU; busybox.tar is built
	bin := filepath.Join(t.TempDir(), "vmctld")
	build := exec.Command("go", "build", "-o", bin, "./cmd/vmctld")
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vmctld: %v\n%s", err, out)
	}
	return startDaemonWith(t, bin, args...)
}

// startDaemonWith starts the vmctld binary bin on its own socket, data root
// (with busybox loaded) and short exec root. Cleanup stops it with SIGTERM
// and checks that it left no VMM process, socket or container directory.
// args are more vmctld flags.
func startDaemonWith(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	e := e2e(t)
	dataRoot, err := os.MkdirTemp("", "vmctld-data-")
	must(t, err)
	execRoot, err := os.MkdirTemp("", "vd")
	must(t, err)
	d := &daemon{root: e.root, dataRoot: dataRoot, execRoot: execRoot, sock: filepath.Join(execRoot, "api.sock"), stderr: &bytes.Buffer{}, args: args}
	load := exec.Command(e.vmctl, "--data-root", dataRoot, "--exec-root", execRoot, "load", "-i", filepath.Join(e.root, "build/busybox.tar"))
	if out, err := load.CombinedOutput(); err != nil {
		os.RemoveAll(dataRoot)
		os.RemoveAll(execRoot)
		t.Fatalf("load busybox: %v\n%s", err, out)
	}
	t.Cleanup(func() { d.stop(t) })
	d.launch(t, bin)
	return d
}

// stop ends the daemon gracefully and checks what it left behind.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vmctld exited with %v: %s", err, d.stderr)
		}
	case <-time.After(20 * time.Second):
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Errorf("vmctld did not stop within 20s of SIGTERM")
	}
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		left = left[:0]
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			cmdline := strings.ReplaceAll(string(b), "\x00", " ")
			if strings.Contains(cmdline, d.execRoot+"/") || strings.Contains(cmdline, d.dataRoot+"/") {
				left = append(left, "process: "+cmdline)
			}
		}
		entries, _ := os.ReadDir(d.execRoot)
		for _, en := range entries {
			left = append(left, "exec root: "+en.Name())
		}
		cs, _ := os.ReadDir(filepath.Join(d.dataRoot, "containers"))
		for _, en := range cs {
			if en.IsDir() {
				left = append(left, "container: "+en.Name())
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(left, "\n  "))
	}
	os.RemoveAll(d.dataRoot)
	os.RemoveAll(d.execRoot)
	if d.netns != "" {
		closeLoopbackIn(d.netns)
		exec.Command("ip", "netns", "del", d.netns).Run()
	}
}

// netnsSeq numbers the namespaces the tests make.
var netnsSeq atomic.Int32

// newNetns makes a named network namespace with lo up; the caller deletes
// it (ip netns del), or the tests' own namespace's end does.
func newNetns(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return name
}

// http returns a client of the daemon's socket.
func (d *daemon) http() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.sock)
		},
	}, Timeout: 30 * time.Second}
}

// The raw API: bad input gets a 4xx JSON error and the daemon stays up.
func TestDaemonBadInput(t *testing.T) {
	d := startDaemon(t)
	c := d.http()
	tests := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"ping", "GET", "/_ping", "", 200, "OK"},
		{"versioned ping", "GET", "/v1.41/_ping", "", 200, "OK"},
		{"newer client", "GET", "/v1.50/version", "", 200, `"ApiVersion":"1.41"`},
		{"too old client", "GET", "/v1.10/version", "", 400, "minimum supported API version"},
		{"too new client", "GET", "/v1.99/version", "", 400, "client version 1.99 is too new. Maximum supported API version is 1.56"},
		{"unknown endpoint", "GET", "/v1.41/nope", "", 404, `"message"`},
		{"malformed JSON", "POST", "/v1.41/containers/create", `{"Image":`, 400, "invalid JSON"},
		{"wrong type", "POST", "/v1.41/containers/create", `{"Image":5}`, 400, "invalid JSON"},
		{"empty body", "POST", "/v1.41/containers/create", "", 400, "request body is empty"},
		{"no image", "POST", "/v1.41/containers/create", `{"Cmd":["true"]}`, 400, "Config.Image is required"},
		{"unknown image", "POST", "/v1.41/containers/create", `{"Image":"no-such-image"}`, 404, "No such image"},
		{"bad name", "POST", "/v1.41/containers/create?name=a/b", `{"Image":"busybox"}`, 400, "invalid container name"},
		{"file bind", "POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Binds":["/etc/hostname:/b"]}}`, 400, "bind mounts of files are not supported"},
		{"missing bind source", "POST", "/v1.41/containers/create", `{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"bind","Source":"/no/such/dir","Target":"/b"}]}}`, 400, "bind source path does not exist: /no/such/dir"},
		{"huge body", "POST", "/v1.41/containers/create", `{"Image":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "larger than"},
		{"unknown container", "GET", "/v1.41/containers/nope/json", "", 404, "no such container"},
		{"bad bool", "GET", "/v1.41/containers/json?all=maybe", "", 400, "want a boolean"},
		{"bad signal", "POST", "/v1.41/containers/nope/kill?signal=SIGNOPE", "", 400, "invalid signal"},
		{"bad wait", "POST", "/v1.41/containers/nope/wait?condition=later", "", 400, "invalid wait condition"},
		{"unknown image inspect", "GET", "/v1.41/images/no/such/json", "", 404, "No such image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://vmctld"+tt.path, strings.NewReader(tt.body))
			must(t, err)
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			must(t, err)
			defer resp.Body.Close()
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			if resp.StatusCode != tt.code || !strings.Contains(b.String(), tt.want) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, resp.StatusCode, b.String(), tt.code, tt.want)
			}
			if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("error reply Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
			}
		})
	}
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("vmctld died: %s", d.stderr)
	}
}
