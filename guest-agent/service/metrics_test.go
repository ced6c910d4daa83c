package service

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"

	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

// A running container's processes, its exec's included, and its
// statistics, read from the real /proc and cgroup of the machine.
func TestProcessesAndStatsOfARunningContainer(t *testing.T) {
	testenv.RequireRoot(t)
	image := testenv.Loop(t, testenv.Ext4Image(t, testenv.BusyboxRoot(t, ""), "16M"))
	writable := testenv.Loop(t, testenv.Ext4Image(t, "", "16M"))
	sys := testenv.FakeSysBlock(t, map[string]string{
		strings.TrimPrefix(image, "/dev/"): "img", strings.TrimPrefix(writable, "/dev/"): "rw",
	})
	cgroups := testenv.CgroupRoot(t)
	s := newTestService(t, sys, cgroups)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec, _ := json.Marshal(specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"sh", "-c", "sleep 1000 & sleep 1000 & wait"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts:  []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
		}},
	})
	if _, err := s.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: "m1", OciSpec: spec, Storages: disks}); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	defer s.Shutdown(context.Background(), &agent.ShutdownRequest{})
	if _, err := s.StartContainer(ctx, &agent.ContainerRequest{ContainerId: "m1"}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	proc, _ := json.Marshal(specs.Process{Args: []string{"sleep", "999"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if _, err := s.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: "m1", ExecId: "e1", OciProcess: proc}); err != nil {
		t.Fatalf("ExecProcess: %v", err)
	}

	var list *agent.ListProcessesResponse
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if list, err = s.ListProcesses(ctx, &agent.ContainerRequest{ContainerId: "m1"}); err != nil {
			t.Fatalf("ListProcesses: %v", err)
		}
		if len(list.Processes) == 4 && list.Processes[1].Comm == "sleep" && list.Processes[2].Comm == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ListProcesses = %v, want sh, two sleeps and the exec", list.Processes)
		}
	}
	byArgs := map[string]*agent.ProcessInfo{}
	for _, p := range list.Processes {
		byArgs[strings.Join(p.Args, " ")] = p
	}
	init, exec := byArgs["sh -c sleep 1000 & sleep 1000 & wait"], byArgs["sleep 999"]
	if init == nil || exec == nil || byArgs["sleep 1000"] == nil {
		t.Fatalf("processes by argv: %v", byArgs)
	}
	if init.ContainerPid != 1 || init.Pid == 1 || init.ContainerPpid != 0 || init.Ppid != uint32(os.Getpid()) {
		t.Errorf("init: %v; want pid 1 in the container, its parent the agent (%d) outside it", init, os.Getpid())
	}
	if exec.ContainerPid <= 1 || exec.ContainerPpid != 0 || exec.State == "" {
		t.Errorf("exec: %v; want a pid of the container's, its parent outside it", exec)
	}
	var sleeps []uint32
	for _, p := range list.Processes {
		if p.Comm == "sleep" && p.ContainerPpid == 1 {
			sleeps = append(sleeps, p.ContainerPid)
		}
		if started := time.Unix(0, p.StartTimeUnixNano); time.Since(started) < 0 || time.Since(started) > time.Minute {
			t.Errorf("process %d started at %s, not within the last minute", p.Pid, started)
		}
	}
	if len(sleeps) != 2 || slices.Contains(sleeps, 1) {
		t.Errorf("children of the init: %v, want the two sleeps", sleeps)
	}

	st, err := s.Stats(ctx, &agent.ContainerRequest{ContainerId: "m1"})
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Cpu.UsageUsec == 0 || st.SystemCpuNanos == 0 || st.OnlineCpus == 0 || st.GuestMemoryBytes == 0 {
		t.Errorf("Stats: %v; want CPU time of the container and of the machine, its CPUs and RAM", st)
	}
	// Its own network namespace has lo alone, which is left out.
	if len(st.Networks) != 0 {
		t.Errorf("networks of a container with only lo: %v", st.Networks)
	}
	// What the cgroup hierarchy of this machine enables is counted.
	if _, err := os.Stat(filepath.Join(cgroups, "m1", "pids.current")); err == nil && st.Pids.Current != 4 {
		t.Errorf("pids.current = %d, want 4", st.Pids.Current)
	}
	if _, err := os.Stat(filepath.Join(cgroups, "m1", "memory.current")); err == nil && st.Memory.Usage == 0 {
		t.Errorf("memory.current = 0 for a running container")
	}

	if _, err := s.ListProcesses(ctx, &agent.ContainerRequest{ContainerId: "nope"}); code(err) != codes.NotFound {
		t.Errorf("ListProcesses of an unknown container = %v, want NotFound", err)
	}
	if _, err := s.Stats(ctx, &agent.ContainerRequest{ContainerId: "../x"}); code(err) != codes.InvalidArgument {
		t.Errorf("Stats of a bad id = %v, want InvalidArgument", err)
	}
}
