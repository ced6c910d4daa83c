package agent

import (
	"context"
	"math"
	"strings"
	"time"
	"unicode"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

// queryTimeout bounds ListProcesses and Stats: the agent answers them
// from a few small files, so a guest that takes longer is not answering.
// The caller's own deadline applies when it is sooner. A variable for the
// tests.
var queryTimeout = 10 * time.Second

// ProcessInfo is one process of a running container, as its guest's /proc
// shows it: enough for ps's columns (docker top) and containerd's task
// Pids.
type ProcessInfo struct {
	// Pid and PPid are the process's and its parent's pids in the
	// guest's root pid namespace.
	Pid, PPid int
	// ContainerPid is its pid in the container's pid namespace, what the
	// container's own processes see (1 for its init); ContainerPPid its
	// parent's there, 0 when the parent is not a process of the
	// container (the guest agent is the parent of the init and of each
	// exec).
	ContainerPid, ContainerPPid int
	// UID and GID are the effective ones; User is UID's name in the
	// container's /etc/passwd, empty when it has none.
	UID, GID uint32
	User     string
	// State is ps's one-letter state: R running, S sleeping, D disk
	// sleep, Z zombie, T stopped, t traced, I idle, X dead, and the
	// older W, P, K.
	State byte
	// StartTime is when the process started, on the host's clock (the
	// guest's age of the process taken from the host's now).
	StartTime time.Time
	// CPUTime is the user and system CPU time it used.
	CPUTime time.Duration
	// TTY is its controlling terminal's name under /dev ("pts/0"), empty
	// for none, "?" for a device that is none of the guest's terminals.
	TTY string
	// Command is its command name (at most 15 bytes, as the kernel keeps
	// it); Args its command line, empty for a zombie, at most
	// contract.MaxProcessArgs arguments of contract.MaxProcessArgsBytes
	// bytes together (the guest cuts longer ones).
	Command string
	Args    []string
	// Threads is its number of threads.
	Threads int
	// VSZ and RSS are its virtual and resident memory sizes in bytes.
	VSZ, RSS uint64
}

// ListProcesses lists the processes of a running container in pid order:
// its init, their descendants and every exec's, at most
// contract.MaxListedProcesses of them (those with the lowest pids). Texts
// are as the guest reported them with control characters made '?' (as ps
// shows them). An answer beyond the contract's bounds fails with
// ErrBadAnswer. The call has a deadline of its own (queryTimeout).
func (c *Client) ListProcesses(ctx context.Context, containerID string) ([]ProcessInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	resp, err := c.api.ListProcesses(ctx, &agentapi.ContainerRequest{ContainerId: containerID})
	if err != nil {
		return nil, c.convert(err)
	}
	received := time.Now()
	procs := resp.GetProcesses()
	if len(procs) > contract.MaxListedProcesses {
		return nil, badAnswer("ListProcesses", "%d processes, more than the %d the contract allows", len(procs), contract.MaxListedProcesses)
	}
	guestNow := resp.GetTimeUnixNano()
	if guestNow < 0 {
		return nil, badAnswer("ListProcesses", "a time of %d ns before 1970", guestNow)
	}
	out := make([]ProcessInfo, 0, len(procs))
	seen := make(map[uint32]bool, len(procs))
	for _, p := range procs {
		info, err := processInfo(p, guestNow, received)
		if err != nil {
			return nil, err
		}
		if seen[p.GetPid()] {
			return nil, badAnswer("ListProcesses", "pid %d twice", p.GetPid())
		}
		seen[p.GetPid()] = true
		out = append(out, info)
	}
	return out, nil
}

// processStates are the states /proc/PID/stat has had (fs/proc/array.c).
const processStates = "RSDZTtXxKWPI"

// processInfo checks one process of a ListProcesses answer read at
// guestNow, received at hostNow.
func processInfo(p *agentapi.ProcessInfo, guestNow int64, hostNow time.Time) (ProcessInfo, error) {
	bad := func(format string, args ...any) (ProcessInfo, error) {
		return ProcessInfo{}, badAnswer("ListProcesses", format, args...)
	}
	pid := p.GetPid()
	switch {
	case pid == 0 || pid > math.MaxInt32:
		return bad("a process with pid %d", pid)
	case p.GetPpid() > math.MaxInt32 || p.GetContainerPid() > math.MaxInt32 || p.GetContainerPpid() > math.MaxInt32:
		return bad("process %d with a parent or container pid beyond the pids a kernel has", pid)
	case len(p.GetState()) != 1 || !strings.Contains(processStates, p.GetState()):
		return bad("process %d in the state %.16q", pid, p.GetState())
	case len(p.GetComm()) > contract.MaxProcessNameLen || len(p.GetUser()) > contract.MaxProcessNameLen || len(p.GetTty()) > contract.MaxProcessNameLen:
		return bad("process %d with a name of more than %d bytes", pid, contract.MaxProcessNameLen)
	case len(p.GetArgs()) > contract.MaxProcessArgs:
		return bad("process %d with %d arguments, more than the %d the contract allows", pid, len(p.GetArgs()), contract.MaxProcessArgs)
	case p.GetStartTimeUnixNano() < 0:
		return bad("process %d started %d ns before 1970", pid, p.GetStartTimeUnixNano())
	case p.GetCpuTimeNanos() > math.MaxInt64:
		return bad("process %d with %d ns of CPU time", pid, p.GetCpuTimeNanos())
	}
	argBytes := 0
	args := make([]string, 0, len(p.GetArgs()))
	for _, a := range p.GetArgs() {
		argBytes += len(a)
		args = append(args, printable(a))
	}
	if argBytes > contract.MaxProcessArgsBytes {
		return bad("process %d with %d bytes of arguments, more than the %d the contract allows", pid, argBytes, contract.MaxProcessArgsBytes)
	}
	// The process's age by the guest's clock, from the host's now: the
	// two clocks need not agree. A start after the guest's now is a
	// start now (the two were read a tick apart).
	age := time.Duration(max(guestNow-p.GetStartTimeUnixNano(), 0))
	return ProcessInfo{
		Pid: int(pid), PPid: int(p.GetPpid()), ContainerPid: int(p.GetContainerPid()), ContainerPPid: int(p.GetContainerPpid()),
		UID: p.GetUid(), GID: p.GetGid(), User: printable(p.GetUser()),
		State: p.GetState()[0], StartTime: hostNow.Add(-age), CPUTime: time.Duration(p.GetCpuTimeNanos()),
		TTY: printable(p.GetTty()), Command: printable(p.GetComm()), Args: args,
		Threads: int(p.GetThreads()), VSZ: p.GetVszBytes(), RSS: p.GetRssBytes(),
	}, nil
}

// printable is a text from the guest with control characters (newlines,
// escape sequences) and U+FFFD made '?', as ps shows what it cannot
// print: the engine puts these texts in tables.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
}
