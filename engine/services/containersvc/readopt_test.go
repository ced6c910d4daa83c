package containersvc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// plainDriver cannot reattach.
type plainDriver struct{}

func (plainDriver) Name() string { return "plain" }
func (plainDriver) Start(context.Context, sandbox.Config) (sandbox.Sandbox, error) {
	return nil, errors.New("not used")
}

// refusingDriver can reattach but refuses every VM, as for a recycled pid.
type refusingDriver struct {
	plainDriver
	calls *int
}

func (d refusingDriver) Reattach(ctx context.Context, cfg sandbox.Config, pid int) (sandbox.Sandbox, error) {
	*d.calls++
	return nil, errors.New("process is not the QEMU of this VM")
}

// The decisions Readopt takes without a VM: which records it leaves alone,
// and how it records the ones it cannot adopt.
func TestReadoptDecisions(t *testing.T) {
	alive := os.Getppid() // a process that outlives the test, not a VMM
	const vmm = -1        // replaced by a live process naming the VM's state dir
	tests := []struct {
		name       string
		state      containers.State
		autoRemove bool
		releaseErr error // of the network's Release
		driver     sandbox.Driver
		wantStatus containers.Status // "" means the record is gone
		wantError  string
		wantCalls  int
	}{
		{
			name:       "VM gone while no daemon ran",
			state:      containers.State{Status: containers.StatusRunning, VMMPid: 0, OwnerPid: 0, Driver: "qemu"},
			wantStatus: containers.StatusExited, wantError: "the VM ended while no daemon was running",
		},
		{
			name:  "VM gone, --rm container is removed",
			state: containers.State{Status: containers.StatusRunning, Driver: "qemu"}, autoRemove: true,
		},
		{
			name:  "VM gone, --rm container whose addresses cannot be released stays",
			state: containers.State{Status: containers.StatusRunning, Driver: "qemu"}, autoRemove: true,
			releaseErr: errors.New("store locked"),
			wantStatus: containers.StatusExited, wantError: "the VM ended while no daemon was running",
		},
		{
			name:       "owner still alive: not ours to adopt",
			state:      containers.State{Status: containers.StatusRunning, VMMPid: alive, OwnerPid: alive, Driver: "qemu"},
			wantStatus: containers.StatusRunning,
		},
		{
			name:       "exited record untouched",
			state:      containers.State{Status: containers.StatusExited, ExitCode: 7},
			wantStatus: containers.StatusExited,
		},
		{
			name:       "recycled VMM pid counts as gone",
			state:      containers.State{Status: containers.StatusRunning, VMMPid: alive, Driver: "qemu"},
			wantStatus: containers.StatusExited, wantError: "the VM ended while no daemon was running",
		},
		{
			name:   "driver cannot reattach",
			state:  containers.State{Status: containers.StatusRunning, VMMPid: vmm, Driver: "plain"},
			driver: plainDriver{}, wantStatus: containers.StatusExited, wantError: "cannot reattach to a running VM",
		},
		{
			name:   "driver refuses the process",
			state:  containers.State{Status: containers.StatusRunning, VMMPid: vmm, Driver: "qemu", Accel: "tcg"},
			driver: refusingDriver{}, wantStatus: containers.StatusExited, wantError: "not the QEMU of this VM", wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			store, err := containers.OpenStore(filepath.Join(dir, "containers"))
			if err != nil {
				t.Fatal(err)
			}
			execRoot := filepath.Join(dir, "run")
			c := &containers.Container{ID: containers.NewID(), Name: "box", State: tt.state,
				Config: containers.Config{AutoRemove: tt.autoRemove}}
			stateDir := filepath.Join(execRoot, c.ShortID())
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if c.State.VMMPid == vmm {
				// A stand-in VMM: its command line names the state dir, as
				// QEMU's names its sockets there.
				p := exec.Command("sh", "-c", "sleep 60; :", filepath.Join(stateDir, "agent.sock"))
				p.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
				// The group goes too: the shell's sleep would outlive it.
				t.Cleanup(func() { syscall.Kill(-p.Process.Pid, syscall.SIGKILL); p.Wait() })
				c.State.VMMPid = p.Process.Pid
			}
			if err := store.Create(c); err != nil {
				t.Fatal(err)
			}
			calls := 0
			drv := tt.driver
			if r, ok := drv.(refusingDriver); ok {
				r.calls = &calls
				drv = r
			}
			if drv == nil {
				drv = plainDriver{}
			}
			nw := &fakeNetwork{releaseErr: tt.releaseErr}
			s := New(Config{Store: store, ExecRoot: execRoot, Network: nw, OpenDriver: func(ch sandbox.Choice) (sandbox.Driver, error) {
				// The driver of the running VM, as its start recorded it.
				if ch.Driver != tt.state.Driver || ch.Accel != tt.state.Accel {
					t.Errorf("OpenDriver(%+v), want the recorded %s/%s", ch, tt.state.Driver, tt.state.Accel)
				}
				return drv, nil
			}})
			adopted, err := s.Readopt(context.Background())
			if err != nil || len(adopted) != 0 {
				t.Fatalf("Readopt() = %v, %v; want nothing adopted, no error", adopted, err)
			}
			got, err := store.Get(c.ID)
			if tt.wantStatus == "" {
				if !errdefs.IsNotFound(err) {
					t.Fatalf("record after Readopt: %+v, %v; want it removed", got, err)
				}
				if !slices.Contains(nw.released, c.ID) {
					t.Errorf("a removed --rm container's endpoints were not released (released %v)", nw.released)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.State.Status != tt.wantStatus || !strings.Contains(got.State.Error, tt.wantError) {
				t.Errorf("state after Readopt = %s %q, want %s %q", got.State.Status, got.State.Error, tt.wantStatus, tt.wantError)
			}
			if tt.wantError != "" && (got.State.ExitCode != 255 || got.State.VMMPid != 0 || got.State.FinishedAt.IsZero()) {
				t.Errorf("lost run recorded as %+v, want exit 255, no VMM pid, a finish time", got.State)
			}
			if calls != tt.wantCalls {
				t.Errorf("Reattach called %d times, want %d", calls, tt.wantCalls)
			}
			if tt.state.Status == containers.StatusRunning && tt.state.VMMPid != vmm && tt.state.OwnerPid != alive {
				if _, err := os.Stat(stateDir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("runtime state of the dead VM left in the exec root (stat: %v)", err)
				}
			}
		})
	}
}

// A start cut short by its process's death leaves a VMM that init
// inherited: the next Readopt ends it and removes its state directory. A
// VMM whose starter lives, a running container's directory and what is
// not a container's are left alone.
func TestReadoptSweepsOrphans(t *testing.T) {
	dir := t.TempDir()
	store, err := containers.OpenStore(filepath.Join(dir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	execRoot := filepath.Join(dir, "run")
	mk := func(name string) string {
		d := filepath.Join(execRoot, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return d
	}
	orphanDir, startingDir, staleDir, otherDir := mk("0123456789ab"), mk("bbbbbbbbbbbb"), mk("cccccccccccc"), mk("not-a-vm")
	// The orphan: a stand-in VMM naming its state dir, whose parent (the
	// outer shell) exits at once, so that init inherits it.
	out, err := exec.Command("sh", "-c", `sh -c 'sleep 60; :' `+orphanDir+`/agent.sock >/dev/null 2>&1 & echo $!`).Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(orphan, syscall.SIGKILL) })
	for deadline := time.Now().Add(5 * time.Second); parentOf(orphan) != 1; {
		if time.Now().After(deadline) {
			t.Skipf("the stand-in's parent is %d, not init (a subreaper runs the tests)", parentOf(orphan))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The stand-in's shell forks its sleep: until that child has exec'd,
	// it is a copy naming the state dir with a live parent, as a starter
	// would be. A real VMM does not fork; wait for the fork (a child of
	// the stand-in exists) and then for the exec (only the stand-in names
	// the dir): one process naming it before the fork is not enough.
	for deadline := time.Now().Add(10 * time.Second); !hasChild(orphan) || len(processesNaming(orphanDir+"/")) != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("processes naming the orphan's dir: %v", processesNaming(orphanDir+"/"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A start under way in this (live) process.
	starting := exec.Command("sh", "-c", "sleep 60; :", startingDir+"/agent.sock")
	if err := starting.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { starting.Process.Kill(); starting.Wait() })

	s := New(Config{Store: store, ExecRoot: execRoot, OpenDriver: func(sandbox.Choice) (sandbox.Driver, error) { return plainDriver{}, nil }})
	if _, err := s.Readopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphanDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the orphan's state dir is left (stat: %v)", err)
	}
	if syscall.Kill(orphan, 0) == nil && parentOf(orphan) != 0 {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(orphan) + "/stat"); !strings.Contains(string(b), ") Z ") {
			t.Errorf("the orphan VMM %d still runs", orphan)
		}
	}
	if _, err := os.Stat(staleDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a state dir without a VMM is left (stat: %v)", err)
	}
	if _, err := os.Stat(startingDir); err != nil || syscall.Kill(starting.Process.Pid, 0) != nil {
		t.Errorf("a start under way lost its state dir (%v) or its VMM", err)
	}
	if _, err := os.Stat(otherDir); err != nil {
		t.Errorf("a directory that is no VM's was removed: %v", err)
	}
}

// hasChild reports whether a process whose parent is pid exists.
func hasChild(pid int) bool {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, p := range procs {
		if child, err := strconv.Atoi(p.Name()); err == nil && parentOf(child) == pid {
			return true
		}
	}
	return false
}
