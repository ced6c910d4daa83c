package tests

import (
	"os/exec"
	"strings"
	"testing"
)

// The container runs the project's guest kernel, not the host's.
func TestRunPrintsGuestKernelRelease(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	r := e.mustRun(t, 0, "run", "--rm", "busybox", "uname", "-r")
	got := strings.TrimSpace(r.stdout)
	if got != e.release {
		t.Errorf("uname -r = %q, want the guest kernel's %q", got, e.release)
	}
	host, _ := exec.Command("uname", "-r").Output()
	if got == strings.TrimSpace(string(host)) {
		t.Errorf("uname -r printed the host's release %q", got)
	}
	e.checkClean(t, before)
}

func TestExitStatusIsPropagated(t *testing.T) {
	e := e2e(t)
	before := e.containerCount(t)
	tests := []struct {
		name   string
		script string
		want   int
	}{
		{"exit 0", "exit 0", 0},
		{"exit 7", "exit 7", 7},
		// The init of a PID namespace cannot kill itself (the kernel drops
		// signals it sends itself without a handler), so these kill a child
		// shell and pass on its status, as a shell does.
		{"child killed by SIGKILL", `sh -c 'kill -9 $$'; exit $?`, 137},
		{"child killed by SIGTERM", `sh -c 'kill -TERM $$'; exit $?`, 143},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run(t, "run", "--rm", "busybox", "sh", "-c", tt.script)
			if r.code != tt.want {
				t.Errorf("sh -c %q: exit %d, want %d (stderr %q)", tt.script, r.code, tt.want, r.stderr)
			}
		})
	}
	e.checkClean(t, before)
}

func TestStdinIsStreamed(t *testing.T) {
	e := e2e(t)
	r := e.runWith(t, []byte("hi\n"), nil, "run", "-i", "--rm", "busybox", "cat")
	if r.code != 0 || r.stdout != "hi\n" {
		t.Errorf("echo hi | vmctl run -i cat: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// Without -i the container's stdin is closed: cat ends at once.
	r = e.runWith(t, []byte("ignored\n"), nil, "run", "--rm", "busybox", "cat")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("vmctl run cat (no -i): exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestStdoutAndStderrStaySeparate(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 3, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("stdout %q stderr %q, want \"out\\n\" and \"err\\n\"", r.stdout, r.stderr)
	}
}

// The command is PID 1 of its container, under the hostname given, and the
// guest agent's processes are not visible from inside.
func TestContainerIsolation(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 0, "run", "--rm", "--hostname", "web-1", "busybox", "sh", "-c", "echo $$; hostname; ps -o pid,comm")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 3 {
		t.Fatalf("output %q", r.stdout)
	}
	if lines[0] != "1" {
		t.Errorf("echo $$ = %q, want 1", lines[0])
	}
	if lines[1] != "web-1" {
		t.Errorf("hostname = %q, want web-1", lines[1])
	}
	procs := lines[3:] // after the ps header
	for _, p := range procs {
		f := strings.Fields(p)
		if len(f) != 2 || (f[1] != "sh" && f[1] != "ps") {
			t.Errorf("unexpected process visible in the container: %q (all: %q)", p, procs)
		}
	}
}

func TestEnvWorkdirUser(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 0, "run", "--rm", "-e", "GREETING=hello world", "-w", "/tmp", "-u", "1000:1001",
		"busybox", "sh", "-c", `echo "$GREETING"; pwd; id -u; id -g; echo $PATH`)
	want := "hello world\n/tmp\n1000\n1001\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
	if r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
}

// Without a command, the image's Cmd (sh) runs; with stdin closed it ends at once.
func TestImageDefaultCommand(t *testing.T) {
	e := e2e(t)
	r := e.runWith(t, []byte("echo from-image-cmd\n"), nil, "run", "-i", "--rm", "busybox")
	if r.code != 0 || r.stdout != "from-image-cmd\n" {
		t.Errorf("default cmd: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestCPUsSizeTheVM(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 0, "run", "--rm", "--cpus", "2", "busybox", "nproc")
	if strings.TrimSpace(r.stdout) != "2" {
		t.Errorf("nproc with --cpus 2 = %q", r.stdout)
	}
}
