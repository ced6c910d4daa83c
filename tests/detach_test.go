package tests

import (
	"bufio"
	"io"
	"net"
	"net/http"
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
	if r := d.mustDocker(t, 0, "", "inspect", "-f", "{{.State.Status}}", "dk"); r.stdout != "running\n" {
		t.Errorf("after two detaches: %q", r.stdout)
	}
	if r := d.mustDocker(t, 0, "", "ps", "--format", "{{.Names}}"); !strings.Contains(r.stdout, "dk") {
		t.Errorf("ps: %q", r.stdout)
	}
}
