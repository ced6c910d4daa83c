package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docker exec runs extra processes inside a running container's VM, in
// the container's namespaces, through vmctld.
func TestDockerExec(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("the docker CLI is not installed: `make deps` installs it")
	}
	d := startDaemon(t)
	// The trailing echo keeps sh as pid 1: busybox sh execs a last simple
	// command in place of itself.
	d.mustDocker(t, 0, "", "run", "-d", "--name", "x", "busybox", "sh", "-c", "echo hello > /f; sleep 300; echo done")
	t.Cleanup(func() { d.docker(t, "", "rm", "-f", "x") })
	waitFor(t, func() bool { return d.docker(t, "", "exec", "x", "cat", "/f").stdout == "hello\n" }, "docker exec x cat /f to print hello")

	t.Run("exit code", func(t *testing.T) {
		d.mustDocker(t, 5, "", "exec", "x", "sh", "-c", "exit 5")
	})
	t.Run("stdout and stderr", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "exec", "x", "sh", "-c", "echo out; echo err >&2")
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("stdout %q stderr %q, want out and err on their own streams", r.stdout, r.stderr)
		}
	})
	t.Run("user names", func(t *testing.T) {
		// Names resolve in the container's /etc/passwd and /etc/group, as
		// runc resolves them; HOME is the user's.
		if r := d.mustDocker(t, 0, "", "exec", "-u", "nobody", "x", "sh", "-c", "id -u; id -g; echo $HOME"); r.stdout != "65534\n65534\n/home\n" {
			t.Errorf("exec -u nobody: %q", r.stdout)
		}
		if r := d.mustDocker(t, 0, "", "exec", "-u", "nobody:root", "x", "id", "-g"); r.stdout != "0\n" {
			t.Errorf("exec -u nobody:root: %q", r.stdout)
		}
		if r := d.mustDocker(t, 126, "", "exec", "-u", "nosuch", "x", "id"); !strings.Contains(r.stdout+r.stderr, "unable to find user nosuch") {
			t.Errorf("exec -u nosuch: %q %q", r.stdout, r.stderr)
		}
		if r := d.mustDocker(t, 0, "", "run", "--rm", "-u", "nobody", "busybox", "id", "-un"); r.stdout != "nobody\n" {
			t.Errorf("run -u nobody: %q", r.stdout)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		r := d.mustDocker(t, 0, "hi\n", "exec", "-i", "x", "cat")
		if r.stdout != "hi\n" {
			t.Errorf("stdout = %q, want \"hi\\n\"", r.stdout)
		}
	})
	t.Run("no stdin", func(t *testing.T) {
		// Without -i the process reads EOF at once rather than hanging.
		r := d.mustDocker(t, 0, "", "exec", "x", "cat")
		if r.stdout != "" {
			t.Errorf("stdout = %q, want nothing", r.stdout)
		}
	})
	t.Run("hostname", func(t *testing.T) {
		want := strings.TrimSpace(d.mustDocker(t, 0, "", "inspect", "-f", "{{.Config.Hostname}}", "x").stdout)
		got := strings.TrimSpace(d.mustDocker(t, 0, "", "exec", "x", "hostname").stdout)
		if got == "" || got != want {
			t.Errorf("hostname in exec = %q, want the container's %q", got, want)
		}
	})
	t.Run("pid namespace", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "exec", "x", "ps", "-o", "pid,comm")
		var pid1 string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) != 2 {
				t.Fatalf("ps line %q: want PID COMMAND", line)
			}
			if f[0] == "1" {
				pid1 = f[1]
			}
			// Only the container's processes: its shell, its sleep and ps
			// itself; never the guest agent or kernel threads.
			switch f[1] {
			case "sh", "sleep", "ps":
			default:
				t.Errorf("ps shows %q, which is not one of the container's processes:\n%s", line, r.stdout)
			}
		}
		if pid1 != "sh" || !strings.Contains(r.stdout, " sleep") {
			t.Errorf("pid 1 is %q, want sh, with its sleep beside it:\n%s", pid1, r.stdout)
		}
	})
	t.Run("env user workdir", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000", "x", "sh", "-c", `echo "$FOO $(pwd) $(id -u):$(id -g) $PATH"`)
		want := "bar /tmp 1000:1000 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
		if r.stdout != want {
			t.Errorf("stdout = %q, want %q", r.stdout, want)
		}
	})
	t.Run("tty", func(t *testing.T) {
		r := d.mustDocker(t, 0, "", "exec", "-t", "x", "sh", "-c", `tty; echo "$TERM"`)
		if !strings.Contains(r.stdout, "/dev/pts/") || !strings.Contains(r.stdout, "xterm") {
			t.Errorf("stdout = %q, want a pty name and TERM=xterm", r.stdout)
		}
	})
	t.Run("interactive tty", func(t *testing.T) {
		// docker exec -it needs a terminal on the client side: script(1)
		// gives it one of 33 rows. The CLI sends that size, which must
		// reach the process's pty.
		if _, err := exec.LookPath("script"); err != nil {
			t.Fatalf("script(1) is not installed (util-linux)")
		}
		cmdline := "stty rows 33 cols 91; docker exec -it x stty size"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null")
		c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
		out, err := c.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "33 91") {
			t.Errorf("docker exec -it x stty size = %q, %v; want \"33 91\"", out, err)
		}
	})
	t.Run("raw API", func(t *testing.T) {
		c := d.http()
		call := func(method, path, body string) (int, string) {
			req, err := http.NewRequest(method, "http://vmctld/v1.41"+path, strings.NewReader(body))
			must(t, err)
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			must(t, err)
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		code, body := call("POST", "/containers/x/exec", `{"Cmd":["sh","-c","exit 7"],"AttachStdout":true}`)
		var created struct{ Id string }
		if code != 201 || json.Unmarshal([]byte(body), &created) != nil || created.Id == "" {
			t.Fatalf("exec create = %d %q, want 201 with an Id", code, body)
		}
		if code, body := call("GET", "/exec/"+created.Id+"/json", ""); code != 200 || !strings.Contains(body, `"ExitCode":null`) || !strings.Contains(body, `"Running":false`) || !strings.Contains(body, `"entrypoint":"sh"`) {
			t.Errorf("inspect before start = %d %q", code, body)
		}
		if code, body := call("POST", "/exec/"+created.Id+"/start", `{"Detach":true}`); code != 200 {
			t.Errorf("detached start = %d %q, want 200", code, body)
		}
		waitFor(t, func() bool {
			_, body := call("GET", "/exec/"+created.Id+"/json", "")
			return strings.Contains(body, `"ExitCode":7`) && strings.Contains(body, `"Running":false`)
		}, "the detached exec's exit code 7 in inspect")
		if code, body := call("POST", "/exec/"+created.Id+"/start", `{"Detach":true}`); code != 409 {
			t.Errorf("second start = %d %q, want 409", code, body)
		}
		// The stream's framing follows the start request's Tty, not the
		// create's, as dockerd's does (docker-py starts with Tty false).
		for _, tc := range []struct {
			createTty, startTty bool
			want                string
		}{
			{true, false, "\x01\x00\x00\x00\x00\x00\x00\x04hi\r\n"},
			{false, true, "hi\n"},
		} {
			_, body := call("POST", "/containers/x/exec", fmt.Sprintf(`{"Cmd":["echo","hi"],"AttachStdout":true,"Tty":%v}`, tc.createTty))
			var ex struct{ Id string }
			must(t, json.Unmarshal([]byte(body), &ex))
			if code, body := call("POST", "/exec/"+ex.Id+"/start", fmt.Sprintf(`{"Detach":false,"Tty":%v}`, tc.startTty)); code != 200 || body != tc.want {
				t.Errorf("exec created with Tty %v, started with Tty %v: %d %q, want %q", tc.createTty, tc.startTty, code, body, tc.want)
			}
		}
		bad := []struct {
			method, path, body string
			code               int
			want               string
		}{
			{"POST", "/containers/x/exec", `{"Cmd":[]}`, 400, "no exec command"},
			{"POST", "/containers/x/exec", `{"Cmd":`, 400, "invalid JSON"},
			{"POST", "/containers/nope/exec", `{"Cmd":["true"]}`, 404, "no such container"},
			{"POST", "/containers/x/exec", `{"Cmd":["true"],"User":"a:b:c"}`, 400, "invalid user"},
			{"GET", "/exec/nope/json", "", 404, "No such exec instance"},
			{"POST", "/exec/nope/start", `{}`, 404, "No such exec instance"},
			{"POST", "/exec/" + created.Id + "/resize?h=x&w=1", "", 400, "invalid terminal size"},
		}
		for _, b := range bad {
			if code, body := call(b.method, b.path, b.body); code != b.code || !strings.Contains(body, b.want) {
				t.Errorf("%s %s = %d %q, want %d containing %q", b.method, b.path, code, body, b.code, b.want)
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		const n = 6
		outs := make(chan string, n)
		for i := 0; i < n; i++ {
			go func() {
				r := d.docker(t, "", "exec", "x", "sh", "-c", "echo $0; sleep 0.3; echo $0", strconv.Itoa(i))
				outs <- fmt.Sprintf("%d %q", r.code, r.stdout)
			}()
		}
		got := map[string]bool{}
		for i := 0; i < n; i++ {
			got[<-outs] = true
		}
		for i := 0; i < n; i++ {
			if want := fmt.Sprintf("0 %q", fmt.Sprintf("%d\n%d\n", i, i)); !got[want] {
				t.Errorf("concurrent execs returned %v, missing %s", got, want)
			}
		}
	})
	t.Run("client gone", func(t *testing.T) {
		// dockerd kills an attached exec whose client went away; so does vmctld.
		c := exec.Command("docker", "exec", "x", "sh", "-c", "while :; do echo tick; sleep 0.2; done")
		c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_CONTEXT=")
		out, err := c.StdoutPipe()
		must(t, err)
		must(t, c.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "tick\n" {
			t.Errorf("first output %q, %v; want tick", line, err)
		}
		c.Process.Kill()
		c.Wait()
		waitFor(t, func() bool {
			return !strings.Contains(d.mustDocker(t, 0, "", "exec", "x", "ps", "-o", "args").stdout, "tick")
		}, "the exec of a killed client to end")
	})
	t.Run("detach", func(t *testing.T) {
		d.mustDocker(t, 0, "", "exec", "-d", "x", "sh", "-c", "echo bg > /g")
		waitFor(t, func() bool { return d.docker(t, "", "exec", "x", "cat", "/g").stdout == "bg\n" }, "the detached exec to write /g")
	})
	t.Run("not found", func(t *testing.T) {
		r := d.docker(t, "", "exec", "x", "nosuch")
		if r.code != 127 {
			t.Errorf("exit %d, want 127; stderr %q", r.code, r.stderr)
		}
		oneLine(t, r, "nosuch")
	})
	t.Run("not executable", func(t *testing.T) {
		r := d.docker(t, "", "exec", "x", "/f")
		if r.code != 126 {
			t.Errorf("exit %d, want 126; stderr %q", r.code, r.stderr)
		}
		oneLine(t, r, "/f")
	})
	t.Run("stopped container", func(t *testing.T) {
		d.mustDocker(t, 0, "", "run", "--name", "y", "busybox", "true")
		defer d.docker(t, "", "rm", "-f", "y")
		r := d.docker(t, "", "exec", "y", "true")
		if r.code == 0 {
			t.Errorf("docker exec into a stopped container succeeded")
		}
		oneLine(t, r, "not running")
	})

	// rm -f ends an attached exec with its container.
	attached := make(chan result, 1)
	go func() { attached <- d.docker(t, "", "exec", "x", "sleep", "301") }()
	waitFor(t, func() bool {
		return strings.Contains(d.mustDocker(t, 0, "", "exec", "x", "ps", "-o", "args").stdout, "sleep 301")
	}, "the attached exec to run")
	d.mustDocker(t, 0, "", "rm", "-f", "x")
	select {
	case r := <-attached:
		if r.code == 0 {
			t.Errorf("docker exec of a removed container exited 0")
		}
	case <-time.After(30 * time.Second):
		t.Errorf("docker exec still attached 30 s after rm -f of its container")
	}
	if r := d.mustDocker(t, 0, "", "ps", "-a", "-q"); r.stdout != "" {
		t.Errorf("docker ps -a -q = %q after rm -f, want nothing", r.stdout)
	}
	// The daemon's cleanup checks that no VMM, socket or container
	// directory is left behind.
}
