package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vmctl/vmctl/api/agent/contract"
	agent "github.com/vmctl/vmctl/api/agent/v1"
)

// Stats reads src's cgroup statistics, the guest's CPU time and the
// counters of the container's network namespace. A controller the guest
// does not enable leaves its part zero; without the io controller (a
// kernel without CONFIG_BLK_CGROUP) the block devices' own counters are
// given instead, with io_whole_guest set.
func Stats(src Source) (*agent.StatsResponse, error) {
	if _, err := os.Stat(src.Cgroup); err != nil {
		return nil, fmt.Errorf("the container's cgroup: %w", err)
	}
	resp := &agent.StatsResponse{
		TimeUnixNano: src.now().UnixNano(),
		Cpu:          &agent.CPUStats{}, Memory: &agent.MemoryStats{}, Pids: &agent.PidsStats{},
	}
	var memTotal, swapTotal uint64
	if b, err := readLimited(src.proc("meminfo"), smallFile); err == nil {
		memTotal, swapTotal = parseMeminfo(b)
	}
	resp.GuestMemoryBytes = memTotal
	if b, err := readLimited(src.proc("stat"), 4<<20); err == nil {
		total, cpus := parseProcStat(b)
		resp.SystemCpuNanos, resp.OnlineCpus = uint64(ticks(total)), cpus
	}

	cg := func(name string) string { return filepath.Join(src.Cgroup, name) }
	var errs []error
	keyed := func(name string) map[string]uint64 {
		b, err := optional(cg(name))
		if err != nil {
			errs = append(errs, err)
		}
		return parseKeyed(b, contract.MaxMemoryStatKeys)
	}
	number := func(name string, ifMax uint64) uint64 {
		b, err := optional(cg(name))
		if err != nil {
			errs = append(errs, err)
			return 0
		}
		if b == nil {
			return 0
		}
		n, err := parseLimit(b, ifMax)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return n
	}

	cpu := keyed("cpu.stat")
	resp.Cpu = &agent.CPUStats{
		UsageUsec: cpu["usage_usec"], UserUsec: cpu["user_usec"], SystemUsec: cpu["system_usec"],
		NrPeriods: cpu["nr_periods"], NrThrottled: cpu["nr_throttled"], ThrottledUsec: cpu["throttled_usec"],
	}
	m := resp.Memory
	m.Usage = number("memory.current", 0)
	m.Limit = number("memory.max", memTotal)
	m.Peak = number("memory.peak", 0)
	m.SwapUsage = number("memory.swap.current", 0)
	m.SwapLimit = number("memory.swap.max", swapTotal)
	m.Stat = keyed("memory.stat")
	m.Events = keyed("memory.events")
	resp.Pids.Current = number("pids.current", 0)
	resp.Pids.Limit = number("pids.max", 0)

	switch b, err := optional(cg("io.stat")); {
	case err != nil:
		errs = append(errs, err)
	case b == nil:
		resp.Io, resp.IoWholeGuest = guestDisks(src), true
	default:
		resp.Io = parseIOStat(b)
	}
	resp.Networks = networks(src)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return resp, nil
}

// optional reads a cgroup file that a controller the guest does not
// enable leaves out: nil, without an error, when it is not there.
func optional(path string) ([]byte, error) {
	b, err := readLimited(path, smallFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// parseLimit reads a cgroup file of one number or "max", which is ifMax.
func parseLimit(b []byte, ifMax uint64) (uint64, error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return ifMax, nil
	}
	return parseUint(s)
}

// validKey reports whether k can be a key of a cgroup's flat keyed file
// (lower case, digits and underscores), as the host will check it.
func validKey(k string) bool {
	if k == "" || len(k) > contract.MaxStatKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// parseKeyed reads a flat keyed file ("key value" lines: cpu.stat,
// memory.stat, memory.events): its first max valid keys. Lines that are
// not such a pair are skipped.
func parseKeyed(b []byte, max int) map[string]uint64 {
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && len(out) < max {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || !validKey(f[0]) {
			continue
		}
		if n, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			out[f[0]] = n
		}
	}
	return out
}

// parseMeminfo reads MemTotal and SwapTotal of /proc/meminfo, in bytes.
func parseMeminfo(b []byte) (memTotal, swapTotal uint64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		if len(f) == 3 && f[2] == "kB" {
			n <<= 10
		}
		switch f[0] {
		case "MemTotal:":
			memTotal = n
		case "SwapTotal:":
			swapTotal = n
		}
	}
	return memTotal, swapTotal
}

// parseProcStat reads /proc/stat: the CPU time of all CPUs (the "cpu"
// line's user, nice, system, idle, iowait, irq, softirq and steal, as
// dockerd adds them; guest time is in user already), in ticks, and the
// number of online CPUs (the "cpuN" lines).
func parseProcStat(b []byte) (total uint64, cpus uint32) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cpu") {
			continue
		}
		f := strings.Fields(line)
		if f[0] != "cpu" {
			if _, err := strconv.Atoi(f[0][3:]); err == nil {
				cpus++
			}
			continue
		}
		for i := 1; i < len(f) && i <= 8; i++ {
			if n, err := strconv.ParseUint(f[i], 10, 64); err == nil {
				total += n
			}
		}
	}
	return total, cpus
}

// parseIOStat reads io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N
// ..." per device, the first contract.MaxIODevices of them.
func parseIOStat(b []byte) []*agent.IODeviceStats {
	var out []*agent.IODeviceStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && len(out) < contract.MaxIODevices {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		major, minor, ok := parseDev(f[0])
		if !ok {
			continue
		}
		d := &agent.IODeviceStats{Major: major, Minor: minor}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.ReadIos = n
			case "wios":
				d.WriteIos = n
			}
		}
		out = append(out, d)
	}
	return out
}

func parseDev(s string) (major, minor uint32, ok bool) {
	a, b, found := strings.Cut(strings.TrimSpace(s), ":")
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	return uint32(ma), uint32(mi), found && err1 == nil && err2 == nil
}

// sectorSize is the unit of /sys/block/*/stat's sector counts.
const sectorSize = 512

// guestDisks reads the counters of the guest's block devices that are
// devices (/sys/block/*/device: the VM's disks, not loop or ram devices):
// /sys/block/NAME/stat (Documentation/block/stat.rst) and /dev.
func guestDisks(src Source) []*agent.IODeviceStats {
	entries, err := os.ReadDir(src.sys("block"))
	if err != nil {
		return nil
	}
	var out []*agent.IODeviceStats
	for _, e := range entries {
		if len(out) == contract.MaxIODevices {
			break
		}
		dir := src.sys("block", e.Name())
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		devB, err1 := readLimited(filepath.Join(dir, "dev"), 64)
		statB, err2 := readLimited(filepath.Join(dir, "stat"), 4096)
		if err1 != nil || err2 != nil {
			continue
		}
		major, minor, ok := parseDev(string(devB))
		f := strings.Fields(string(statB))
		if !ok || len(f) < 7 {
			continue
		}
		var n [7]uint64
		for _, i := range []int{0, 2, 4, 6} {
			n[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		out = append(out, &agent.IODeviceStats{
			Major: major, Minor: minor,
			ReadIos: n[0], ReadBytes: n[2] * sectorSize, WriteIos: n[4], WriteBytes: n[6] * sectorSize,
		})
	}
	return out
}

// networks reads the interfaces of the container's network namespace
// (its init's, or another process's of its cgroup once the init is gone),
// lo left out. None when no process is left.
func networks(src Source) []*agent.NetworkStats {
	pids := []int{src.InitPid}
	if more, err := cgroupPids(src.Cgroup); err == nil {
		pids = append(pids, more...)
	}
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		b, err := readLimited(src.proc(strconv.Itoa(pid), "net", "dev"), smallFile)
		if err == nil {
			return parseNetDev(b)
		}
	}
	return nil
}

// maxInterfaceName is the longest interface name (IFNAMSIZ less its NUL).
const maxInterfaceName = 15

// parseNetDev reads /proc/net/dev: two header lines, then "NAME: " and
// 8 receive and 8 transmit counters per interface; lo is left out.
func parseNetDev(b []byte) []*agent.NetworkStats {
	var out []*agent.NetworkStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && len(out) < contract.MaxNetworkInterfaces {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		name = strings.TrimSpace(name)
		// A name the host would refuse (a container with CAP_NET_ADMIN
		// names its own interfaces) is left out, not the whole answer.
		if !ok || name == "lo" || name == "" || len(name) > maxInterfaceName || !utf8.ValidString(name) ||
			strings.ContainsFunc(name, unicode.IsControl) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			continue
		}
		var n [16]uint64
		valid := true
		for i := range n {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				valid = false
				break
			}
			n[i] = v
		}
		if !valid {
			continue
		}
		out = append(out, &agent.NetworkStats{
			Name:    name,
			RxBytes: n[0], RxPackets: n[1], RxErrors: n[2], RxDropped: n[3],
			TxBytes: n[8], TxPackets: n[9], TxErrors: n[10], TxDropped: n[11],
		})
	}
	return out
}
