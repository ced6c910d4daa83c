package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The detach keys end an attachment to a container with a terminal, as
// dockerd's do: the bytes before them reach the container, the attach
// connection ends, the container runs on with its stdin open for the next
// client. Through the raw API, so the daemon's handling is what is tested
// (the docker CLI also watches for the keys itself).
func TestDetachKeys(t *testing.T) {
	d := startDaemon(t)
	d.mustDocker(t, 0, "", "run", "-dit", "--name", "dk", "busybox", "sh")
	t.Cleanup(func() { d.vmctl(t, "", "rm", "-f", "dk") })

	attach := func(query, input string) {
		t.Helper()
		c, err := net.Dial("unix", d.sock)
		must(t, err)
		defer c.Close()
		_, err = io.WriteString(c, "POST /v1.41/containers/dk/attach?stream=1&stdin=1&stdout=1"+query+" HTTP/1.1\r\nHost: vmctld\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		must(t, err)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		must(t, err)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("attach: %s", resp.Status)
		}
		_, err = io.WriteString(c, input)
		must(t, err)
		// The daemon ends the stream once it read the keys.
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Fatalf("after the detach keys the attach stream did not end: %v", err)
		}
	}
	attach("", "echo one > /tmp/one\n\x10\x11")
	waitFor(t, func() bool { return d.vmctl(t, "", "exec", "dk", "cat", "/tmp/one").stdout == "one\n" }, "the input before the keys")
	// Still running, stdin still open: the next client's input arrives.
	attach("&detachKeys=ctrl-x,x", "echo two > /tmp/two\n\x18x")
	waitFor(t, func() bool { return d.vmctl(t, "", "exec", "dk", "cat", "/tmp/two").stdout == "two\n" }, "the second client's input")
	// vmctl attach watches for the keys too: it ends at once, the
	// container runs on with its stdin open.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm, err := filepath.Abs(filepath.Join(d.root, "bin/vmctl"))
	must(t, err)
	c := exec.CommandContext(ctx, "script", "-qec", vm+" -H "+d.host()+" attach dk", "/dev/null")
	// The keys go once vmctl has its terminal in raw mode: before, the
	// line discipline would take ctrl-q for flow control.
	pr, pw := io.Pipe()
	c.Stdin = pr
	go func() {
		io.WriteString(pw, "echo three > /tmp/three\n")
		time.Sleep(3 * time.Second)
		io.WriteString(pw, "\x10\x11")
		// Then EOF: a vmctl that did not detach would wait on for the
		// container, until the deadline kills it.
		time.Sleep(2 * time.Second)
		pw.Close()
	}()
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("vmctl attach, detached: %v\n%s", err, out)
	}
	waitFor(t, func() bool { return d.vmctl(t, "", "exec", "dk", "cat", "/tmp/three").stdout == "three\n" }, "vmctl attach's input")
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}}", "dk"); r.stdout != "running\n" {
		t.Errorf("after three detaches: %q", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "ps", "--format", "{{.Names}}"); !strings.Contains(r.stdout, "dk") {
		t.Errorf("ps: %q", r.stdout)
	}

	// An exec with a terminal: the keys (the exec's own, given at create)
	// end the session and the process runs on.
	resp, err := d.http().Post("http://d/v1.41/containers/dk/exec", "application/json", strings.NewReader(
		`{"Cmd":["sh"],"Tty":true,"AttachStdin":true,"AttachStdout":true,"DetachKeys":"ctrl-x,y"}`))
	must(t, err)
	var created struct{ Id string }
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if created.Id == "" {
		t.Fatalf("exec create: %s", resp.Status)
	}
	ec, err := net.Dial("unix", d.sock)
	must(t, err)
	defer ec.Close()
	body := `{"Detach":false,"Tty":true}`
	_, err = io.WriteString(ec, "POST /v1.41/exec/"+created.Id+"/start HTTP/1.1\r\nHost: vmctld\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"+
		"Content-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	must(t, err)
	br := bufio.NewReader(ec)
	eresp, err := http.ReadResponse(br, nil)
	must(t, err)
	if eresp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("exec start: %s", eresp.Status)
	}
	_, err = io.WriteString(ec, "echo four > /tmp/four\n\x18y")
	must(t, err)
	ec.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("after the exec's detach keys the stream did not end: %v", err)
	}
	waitFor(t, func() bool { return d.vmctl(t, "", "exec", "dk", "cat", "/tmp/four").stdout == "four\n" }, "the exec's input before the keys")
	ins, err := d.http().Get("http://d/v1.41/exec/" + created.Id + "/json")
	must(t, err)
	var info struct{ Running bool }
	json.NewDecoder(ins.Body).Decode(&info)
	ins.Body.Close()
	if !info.Running {
		t.Error("exec inspect after the detach: not running")
	}
	// vmctl exec -it: the default keys end vmctl at once; the shell it
	// started runs on.
	c = exec.CommandContext(ctx, "script", "-qec", vm+" -H "+d.host()+" exec -it dk sh", "/dev/null")
	pr, pw = io.Pipe()
	c.Stdin = pr
	go func() {
		io.WriteString(pw, "echo five > /tmp/five\n")
		time.Sleep(3 * time.Second)
		io.WriteString(pw, "\x10\x11")
		time.Sleep(2 * time.Second)
		pw.Close()
	}()
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("vmctl exec -it, detached: %v\n%s", err, out)
	}
	waitFor(t, func() bool { return d.vmctl(t, "", "exec", "dk", "cat", "/tmp/five").stdout == "five\n" }, "vmctl exec's input")
	// Bad keys are refused at create.
	resp, err = d.http().Post("http://d/v1.41/containers/dk/exec", "application/json", strings.NewReader(`{"Cmd":["sh"],"DetachKeys":"ctrl-"}`))
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("exec create with bad detach keys = %s, want 400", resp.Status)
	}
}
