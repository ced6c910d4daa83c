package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	agent "github.com/vmctl/vmctl/api/agent/v1"
)

// Bounds of what Processes reads of a cgroup tree: a container may make
// sub-cgroups (a privileged one), and each holds its processes.
const (
	maxCgroupDirs = 1024
	maxCgroupPids = 1 << 16
)

// Processes lists the processes of src's cgroup and its sub-cgroups, in
// pid order: at most contract.MaxListedProcesses, with the lowest pids. A
// process that exits while it is read is left out.
func Processes(src Source) (*agent.ListProcessesResponse, error) {
	pids, err := cgroupPids(src.Cgroup)
	if err != nil {
		return nil, err
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	if len(pids) > contract.MaxListedProcesses {
		pids = pids[:contract.MaxListedProcesses]
	}
	now, up := src.now(), src.uptime()
	procs := make([]procInfo, 0, len(pids))
	for _, pid := range pids {
		p, err := readProcess(src, pid)
		if err != nil {
			// Gone meanwhile, or a reused pid's half-read files: either
			// way not a process of the container any more.
			continue
		}
		procs = append(procs, p)
	}
	// The container's pid namespace is its init's, the innermost one the
	// init is in: its NSpid's last level. Without the init, the
	// outermost level any process has (a process in a namespace the
	// container made has more).
	level := -1
	for _, p := range procs {
		if p.pid == src.InitPid {
			level = len(p.nspid) - 1
		}
	}
	if level < 0 {
		for _, p := range procs {
			if level < 0 || len(p.nspid)-1 < level {
				level = len(p.nspid) - 1
			}
		}
	}
	inContainer := func(p procInfo) uint32 {
		if level >= 0 && level < len(p.nspid) {
			return uint32(p.nspid[level])
		}
		return 0
	}
	byPid := make(map[int]procInfo, len(procs))
	for _, p := range procs {
		byPid[p.pid] = p
	}
	users := userNames(src)
	resp := &agent.ListProcessesResponse{TimeUnixNano: now.UnixNano(), Processes: make([]*agent.ProcessInfo, 0, len(procs))}
	for _, p := range procs {
		info := &agent.ProcessInfo{
			Pid: uint32(p.pid), Ppid: uint32(p.ppid), ContainerPid: inContainer(p),
			Uid: p.uid, Gid: p.gid, User: users[p.uid], State: string(p.state),
			// Started this long before now: uptime is on the clock
			// of the start times.
			StartTimeUnixNano: now.Add(-(up - ticks(p.startTicks))).UnixNano(),
			CpuTimeNanos:      uint64(ticks(p.cpuTicks)),
			Tty:               ttyName(p.ttyNr),
			Comm:              p.comm,
			Args:              p.args,
			Threads:           p.threads,
			VszBytes:          p.vsz,
			RssBytes:          p.rssPages * uint64(os.Getpagesize()),
		}
		if parent, ok := byPid[p.ppid]; ok {
			info.ContainerPpid = inContainer(parent)
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// cgroupPids lists the pids of dir's cgroup.procs and of its
// sub-cgroups', within maxCgroupDirs and maxCgroupPids.
func cgroupPids(dir string) ([]int, error) {
	var pids []int
	queue := []string{dir}
	for seen := 0; len(queue) > 0 && seen < maxCgroupDirs; seen++ {
		d := queue[0]
		queue = queue[1:]
		b, err := readLimited(filepath.Join(d, "cgroup.procs"), smallFile)
		if err != nil {
			if d == dir {
				return nil, fmt.Errorf("read the container's processes: %w", err)
			}
			continue // removed meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 && len(pids) < maxCgroupPids {
				pids = append(pids, pid)
			}
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				queue = append(queue, filepath.Join(d, e.Name()))
			}
		}
	}
	return pids, nil
}

// procInfo is what Processes reads of one process.
type procInfo struct {
	pid, ppid  int
	state      byte
	comm       string
	args       []string
	uid, gid   uint32
	nspid      []int
	ttyNr      uint64
	startTicks uint64
	cpuTicks   uint64
	threads    uint32
	vsz        uint64
	rssPages   uint64
}

func readProcess(src Source, pid int) (procInfo, error) {
	dir := src.proc(strconv.Itoa(pid))
	b, err := readLimited(filepath.Join(dir, "stat"), 4096)
	if err != nil {
		return procInfo{}, err
	}
	p, err := parsePidStat(b)
	if err != nil {
		return procInfo{}, err
	}
	p.pid = pid
	if b, err = readLimited(filepath.Join(dir, "status"), smallFile); err != nil {
		return procInfo{}, err
	}
	if err := parseStatus(b, &p); err != nil {
		return procInfo{}, err
	}
	// Enough for the bounded argv and its separators, and no more: a
	// command line may be megabytes.
	if b, err = readLimited(filepath.Join(dir, "cmdline"), contract.MaxProcessArgsBytes+contract.MaxProcessArgs+1); err != nil {
		return procInfo{}, err
	}
	p.args = splitArgs(b)
	return p, nil
}

// parsePidStat reads /proc/PID/stat (proc(5)): the command name is
// between the first '(' and the last ')', as it may hold both.
func parsePidStat(b []byte) (procInfo, error) {
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return procInfo{}, errors.New("stat: no command name")
	}
	p := procInfo{comm: cut(text(string(b[open+1:closing])), contract.MaxProcessNameLen)}
	// Fields from the 3rd (state) on.
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 22 {
		return procInfo{}, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	if len(f[0]) != 1 {
		return procInfo{}, fmt.Errorf("stat: state %q", cut(f[0], 8))
	}
	p.state = f[0][0]
	var n [24]uint64
	// 1-based field numbers of proc(5) that are read.
	for _, i := range []int{4, 7, 14, 15, 20, 22, 23, 24} {
		v, err := strconv.ParseUint(f[i-3], 10, 64)
		if err != nil {
			return procInfo{}, fmt.Errorf("stat: field %d: %q", i, cut(f[i-3], 24))
		}
		n[i-1] = v
	}
	p.ppid = int(n[3])
	p.ttyNr = n[6]
	p.cpuTicks = n[13] + n[14]
	p.threads = uint32(min(n[19], 1<<31))
	p.startTicks = n[21]
	p.vsz = n[22]
	p.rssPages = n[23]
	return p, nil
}

// parseStatus reads the effective uid and gid and the pids in each pid
// namespace (NSpid, outermost first) of /proc/PID/status.
func parseStatus(b []byte, p *procInfo) error {
	var haveUID, haveGID bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			if len(f) < 2 {
				return fmt.Errorf("status: %s: %q", key, cut(val, 64))
			}
			id, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				return fmt.Errorf("status: %s: %q", key, cut(val, 64))
			}
			if key == "Uid" {
				p.uid, haveUID = uint32(id), true
			} else {
				p.gid, haveGID = uint32(id), true
			}
		case "NSpid":
			p.nspid = p.nspid[:0]
			for _, s := range f {
				n, err := strconv.Atoi(s)
				if err != nil || n <= 0 {
					return fmt.Errorf("status: NSpid: %q", cut(val, 64))
				}
				p.nspid = append(p.nspid, n)
			}
		}
	}
	if !haveUID || !haveGID {
		return errors.New("status: no Uid or Gid")
	}
	if len(p.nspid) == 0 {
		// A kernel without NSpid (before 4.1): one namespace.
		p.nspid = []int{p.pid}
	}
	return nil
}

// splitArgs is the argv of a /proc/PID/cmdline read, made UTF-8 and cut
// to contract.MaxProcessArgs arguments of contract.MaxProcessArgsBytes
// bytes together.
func splitArgs(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	var args []string
	left := contract.MaxProcessArgsBytes
	for _, a := range strings.Split(string(b), "\x00") {
		if len(args) == contract.MaxProcessArgs || left == 0 {
			break
		}
		a = cut(text(a), left)
		left -= len(a)
		args = append(args, a)
	}
	return args
}

// ttyName is the name under /dev of a tty_nr of /proc/PID/stat (a device
// number, major in bits 8-19 and minor in bits 0-7 and 20-31): "" for
// none, "?" for a device that is none of the guest's terminals.
func ttyName(nr uint64) string {
	if nr == 0 {
		return ""
	}
	major, minor := unix.Major(nr), unix.Minor(nr)
	switch {
	case major >= 136 && major <= 143: // UNIX98_PTY_SLAVE_MAJOR
		return "pts/" + strconv.FormatUint(uint64(minor)+uint64(major-136)*256, 10)
	case major == 4 && minor < 64:
		return "tty" + strconv.FormatUint(uint64(minor), 10)
	case major == 4:
		return "ttyS" + strconv.FormatUint(uint64(minor-64), 10)
	case major == 5 && minor == 1:
		return "console"
	case major == 229:
		return "hvc" + strconv.FormatUint(uint64(minor), 10)
	}
	return "?"
}

// userNames maps uids to names by the container's /etc/passwd, opened
// inside the container's root (its init's /proc/PID/root) so that no
// symlink of the container's leads elsewhere; only a regular file, of at
// most 1 MiB, is read. Nothing when the init is gone or the file is not
// there: the host then shows numbers.
func userNames(src Source) map[uint32]string {
	names := map[uint32]string{}
	if src.InitPid <= 0 {
		return names
	}
	b, err := readInRoot(src.proc(strconv.Itoa(src.InitPid), "root"), "etc/passwd", 1<<20)
	if err != nil {
		return names
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 || f[0] == "" || len(f[0]) > contract.MaxProcessNameLen || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := names[uint32(uid)]; !dup {
			names[uint32(uid)] = cut(text(f[0]), contract.MaxProcessNameLen)
		}
	}
	return names
}

// readInRoot reads the regular file name, resolved inside root as if root
// were "/", without blocking on it (a FIFO the container put there) and
// refusing anything but a regular file of at most max bytes.
func readInRoot(root, name string, max int64) ([]byte, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rfd)
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(rfd, name, how)
	// A rename or mount anywhere during the lookup makes the kernel give
	// up on it with EAGAIN (openat2(2)); a few more tries get past one.
	for try := 0; err == unix.EAGAIN && try < 3; try++ {
		fd, err = unix.Openat2(rfd, name, how)
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > max {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes", name, max)
	}
	return readAll(f, max)
}
