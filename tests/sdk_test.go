package tests

import (
	"os/exec"
	"strings"
	"testing"
)

// sdkScript drives vmctld as a user of Docker's Python SDK would, with the
// calls that depend on dockerd's exact answers: containers.run returning the
// output (it reads logs only from a json-file log driver), container.ports
// (NetworkSettings), exec with and without a terminal and with demux (the
// stream's framing follows the start request's Tty).
const sdkScript = `
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1], version="1.41")
out = c.containers.run("busybox", ["echo", "hi"], remove=True)
assert out == b"hi\n", out
ct = c.containers.run("busybox", ["sleep", "600"], detach=True, ports={"80/tcp": None}, name="sdk")
try:
    ct.reload()
    assert ct.status == "running", ct.status
    port = ct.ports.get("80/tcp")
    assert port and port[0]["HostPort"].isdigit(), ct.ports
    r = ct.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
    assert r.exit_code == 3 and r.output == (b"out\n", b"err\n"), r
    r = ct.exec_run(["echo", "tty"], tty=True)
    assert r.exit_code == 0 and r.output == b"tty\r\n", r
    r = ct.exec_run(["echo", "plain"])
    assert r.output == b"plain\n", r
    assert ct.attrs["HostConfig"]["LogConfig"]["Type"] == "json-file", ct.attrs["HostConfig"]["LogConfig"]
finally:
    ct.remove(force=True)
print("ok")
`

func TestPythonSDK(t *testing.T) {
	// Debian's interpreter, which Debian's python3-docker (make deps)
	// installs into, whatever python3 comes first on PATH.
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import docker").CombinedOutput(); err != nil {
		t.Fatalf("Docker's Python SDK is not installed (python3-docker, `make deps`): %v: %s", err, out)
	}
	d := startDaemon(t)
	out, err := exec.Command(python, "-c", sdkScript, d.host()).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("the SDK script: %v\n%s", err, out)
	}
}
