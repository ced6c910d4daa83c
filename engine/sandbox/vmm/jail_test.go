package vmm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
	"golang.org/x/sys/unix"
)

// buildVMM builds vmctl-vmm as the Makefile does (no cgo: the jail changes
// every thread's credentials, which a cgo binary cannot).
func buildVMM(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), Binary)
	build := exec.Command("go", "build", "-o", bin, "github.com/vmctl/vmctl/cmd/vmctl-vmm")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vmctl-vmm: %v\n%s", err, out)
	}
	return bin
}

// jailedDriver is the driver as vmctld runs it: as root, jailing its VMMs.
func jailedDriver(t *testing.T) *Driver {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the jail needs root (CI runs as root)")
	}
	d, err := New(Options{Binary: buildVMM(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !d.jail {
		t.Fatal("a driver running as root does not jail its VMMs")
	}
	return d
}

// probe starts vmctl-vmm exactly as Start does (namespaces, jail flags,
// descriptors) but to make one system call from a thread of a kind, and
// returns how it ended as the driver describes it.
func probe(t *testing.T, d *Driver, spec string, extra ...string) (out string, how string, code int) {
	t.Helper()
	state := t.TempDir()
	cmd, err := d.command(state, "probe-"+spec, append([]string{"-seccomp-probe", spec}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Start()
	closeExtraFiles(cmd)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ents, _ := os.ReadDir(filepath.Join(state, "jail")); len(ents) > 0 {
		t.Errorf("%s: the jail directory on the host is not empty: %v", spec, ents)
	}
	return buf.String(), describeExit(cmd.ProcessState), cmd.ProcessState.ExitCode()
}

// Every call a VMM never needs kills it with SIGSYS, from either kind of
// thread, and the driver's account of the exit says so; the calls it does
// need come back.
func TestJailedVMMSeccomp(t *testing.T) {
	d := jailedDriver(t)
	forbidden := []string{
		"vmm:execve", "vmm:ptrace", "vmm:mount", "vmm:kill", "vmm:setuid", "vmm:socket-inet",
		"vmm:openat", "vmm:ioctl-kvm-create-vm", "vmm:ioctl-tiocsti",
		"vcpu:openat", "vcpu:socket-unix", "vcpu:accept4", "vcpu:pread64", "vcpu:unlinkat",
		"vcpu:execve", "vcpu:ioctl-kvm-create-vm",
	}
	for _, spec := range forbidden {
		out, how, _ := probe(t, d, spec)
		if !strings.Contains(how, "killed by SIGSYS") || !strings.Contains(how, "seccomp filter forbids") {
			t.Errorf("%s: ended %q (output %q); want a SIGSYS kill the exit reason names", spec, how, out)
		}
	}
	allowed := []string{"vmm:pread64", "vmm:socket-unix", "vmm:accept4", "vmm:unlinkat", "vmm:ioctl-kvm-run", "vcpu:ioctl-kvm-run"}
	for _, spec := range allowed {
		if out, how, code := probe(t, d, spec); code != 0 || !strings.Contains(out, "allowed") {
			t.Errorf("%s: ended %q, exit %d (output %q); want it allowed", spec, how, code, out)
		}
	}
	// A VM that serves host directories: its 9P server opens files.
	if out, how, code := probe(t, d, "vmm:openat", "-share", t.TempDir()+",tag=t"); code != 0 {
		t.Errorf("openat with a share: ended %q, exit %d (output %q); want it allowed", how, code, out)
	}
	if out, how, _ := probe(t, d, "vcpu:openat", "-share", t.TempDir()+",tag=t"); !strings.Contains(how, "SIGSYS") {
		t.Errorf("openat on a vCPU thread with a share: ended %q (output %q); want a SIGSYS kill", how, out)
	}
}

// The confined VMM seen from the host: its own uid and gid, no
// capabilities, no_new_privs, a filter on every thread and two on a vCPU
// thread, an empty root, pid 1 of its own pid namespace.
func TestJailedVMMIdentity(t *testing.T) {
	d := jailedDriver(t)
	state := t.TempDir()
	id := "identity"
	cmd, err := d.command(state, id, []string{"-seccomp-probe", "vcpu:stdin-wait"})
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Start()
	closeExtraFiles(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	// Wait until a thread carries the stacked vCPU filter.
	var statuses []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		statuses = threadStatuses(pid)
		if slices.ContainsFunc(statuses, func(s string) bool { return field(s, "Seccomp_filters") == "2" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no thread with the vCPU filter; output %q, statuses %q", out.String(), statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
	uid := strconv.Itoa(sandbox.UnprivilegedID(id))
	for _, s := range statuses {
		for name, want := range map[string]string{
			"Uid": uid + "\t" + uid + "\t" + uid + "\t" + uid, "Gid": uid + "\t" + uid + "\t" + uid + "\t" + uid,
			"Groups": "", "CapInh": "0000000000000000", "CapPrm": "0000000000000000",
			"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
			"NoNewPrivs": "1", "Seccomp": "2",
		} {
			if got := field(s, name); got != want {
				t.Errorf("thread %s: %s = %q, want %q", field(s, "Pid"), name, got, want)
			}
		}
		if f := field(s, "Seccomp_filters"); f != "1" && f != "2" {
			t.Errorf("thread %s: Seccomp_filters = %q", field(s, "Pid"), f)
		}
	}
	main, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if got := field(string(main), "NSpid"); got != strconv.Itoa(pid)+"\t1" {
		t.Errorf("NSpid = %q: not pid 1 of a pid namespace of its own", got)
	}
	if ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/root"); err != nil || len(ents) != 0 {
		t.Errorf("the VMM's root holds %v (%v); want nothing", ents, err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("probe after stdin closed: %v; output %q", err, out.String())
	}
}

func threadStatuses(pid int) []string {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status")); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

func field(status, name string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// A VMM that is not detached dies with the engine thread that started it
// (Pdeathsig), also once confined: the kernel forgets the signal when the
// jail changes the VMM's user, so the jail sets it again.
func TestJailedVMMDiesWithEngine(t *testing.T) {
	d := jailedDriver(t)
	id := "orphan"
	cmd, err := d.command(t.TempDir(), id, []string{"-seccomp-probe", "vmm:stdin-wait"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	// The parent-death signal fires when the thread that forked the VMM
	// ends: fork from a thread that ends once the VMM is confined.
	started, confined := make(chan error), make(chan struct{})
	var tid int
	onEndingThread(func() {
		tid = unix.Gettid()
		err := cmd.Start()
		started <- err
		if err == nil {
			<-confined
		}
	})
	err = <-started
	closeExtraFiles(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	uid := strconv.Itoa(sandbox.UnprivilegedID(id))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
		if strings.HasPrefix(field(string(st), "Uid"), uid+"\t") && field(string(st), "Seccomp") == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the VMM was not confined within 20 s: %q", st)
		}
	}
	close(confined)
	select {
	case <-exited:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the VMM ended with %v, want SIGKILL (its parent-death signal)", cmd.ProcessState)
		}
	case <-time.After(10 * time.Second):
		_, terr := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
		t.Fatalf("the confined VMM outlived the thread that started it (thread %d: %v) %s", tid, terr, st)
	}
}

// onEndingThread runs fn in a goroutine locked to a thread that ends with
// it. The runtime parks the main thread instead of ending it, so fn never
// runs there.
func onEndingThread(fn func()) {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		// On the main thread, which is kept locked meanwhile, so the
		// goroutine below runs elsewhere.
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			fn()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
}
