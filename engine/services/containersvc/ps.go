package containersvc

// docker top renders a container's processes as ps would. dockerd runs the
// host's ps; a container here runs in a VM whose processes the host has no
// /proc for, so the table is rendered from the guest agent's process list
// instead, for the ps options people give docker top:
//
//	(none), -ef, -e -f, -f     UID PID PPID C STIME TTY TIME CMD
//	-e, -A                     PID TTY TIME CMD
//	aux, -aux, au, ux, u       USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND
//	ax, a, x                   PID TTY STAT TIME COMMAND
//	-o FORMAT, -eo FORMAT, o FORMAT, --format FORMAT
//	                           the keywords of FORMAT (comma separated,
//	                           keyword=HEADER renames one), as ps -o
//
// Selection options (-e, -A, -a, -d, a, x) change nothing: every process
// of the container is listed, as dockerd lists them all. Pids are the
// container's own (what ps shows inside it and what docker exec kill
// takes), not the guest's. Anything else is refused in one line.

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/errs"
)

// psColumn is one column of a ps table: a keyword and its header.
type psColumn struct {
	keyword, header string
}

// psField renders one keyword's value for a process at now, on a machine
// of memTotal bytes.
type psField func(p agent.ProcessInfo, now time.Time, memTotal uint64) string

// psKeywords are the keywords ps -o takes that the process list can
// answer, with procps's headers.
var psKeywords = map[string]struct {
	header string
	field  psField
}{
	"pid":        {"PID", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.Itoa(p.ContainerPid) }},
	"ppid":       {"PPID", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.Itoa(p.ContainerPPid) }},
	"uid":        {"UID", psUID},
	"euid":       {"EUID", psUID},
	"user":       {"USER", psUser},
	"euser":      {"EUSER", psUser},
	"uname":      {"USER", psUser},
	"gid":        {"GID", psGID},
	"egid":       {"EGID", psGID},
	"group":      {"GROUP", psGID},
	"comm":       {"COMMAND", psComm},
	"ucmd":       {"CMD", psComm},
	"ucomm":      {"COMMAND", psComm},
	"args":       {"COMMAND", psArgs},
	"cmd":        {"CMD", psArgs},
	"command":    {"COMMAND", psArgs},
	"etime":      {"ELAPSED", func(p agent.ProcessInfo, now time.Time, _ uint64) string { return psElapsed(now.Sub(p.StartTime)) }},
	"etimes":     {"ELAPSED", func(p agent.ProcessInfo, now time.Time, _ uint64) string { return seconds(now.Sub(p.StartTime)) }},
	"time":       {"TIME", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return psCPUTime(p.CPUTime) }},
	"cputime":    {"TIME", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return psCPUTime(p.CPUTime) }},
	"cputimes":   {"TIME", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return seconds(p.CPUTime) }},
	"stime":      {"STIME", psSTime},
	"start_time": {"START", psSTime},
	"start":      {"STARTED", psStart},
	"tty":        {"TT", psTTY},
	"tt":         {"TT", psTTY},
	"tname":      {"TTY", psTTY},
	"stat":       {"STAT", psStat},
	"s":          {"S", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return string(p.State) }},
	"state":      {"S", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return string(p.State) }},
	"vsz":        {"VSZ", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.FormatUint(p.VSZ>>10, 10) }},
	"vsize":      {"VSZ", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.FormatUint(p.VSZ>>10, 10) }},
	"rss":        {"RSS", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.FormatUint(p.RSS>>10, 10) }},
	"rssize":     {"RSS", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.FormatUint(p.RSS>>10, 10) }},
	"rsz":        {"RSZ", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.FormatUint(p.RSS>>10, 10) }},
	"pcpu":       {"%CPU", psPercentCPU},
	"%cpu":       {"%CPU", psPercentCPU},
	"c":          {"C", psC},
	"pmem":       {"%MEM", psPercentMem},
	"%mem":       {"%MEM", psPercentMem},
	"nlwp":       {"NLWP", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.Itoa(p.Threads) }},
	"thcount":    {"THCNT", func(p agent.ProcessInfo, _ time.Time, _ uint64) string { return strconv.Itoa(p.Threads) }},
}

// The formats of ps's own options.
var (
	psDefaultFormat = []psColumn{{"pid", "PID"}, {"tname", "TTY"}, {"time", "TIME"}, {"ucmd", "CMD"}}
	// -f: UID is the user's name, as ps -f shows it.
	psFullFormat = []psColumn{{"user", "UID"}, {"pid", "PID"}, {"ppid", "PPID"}, {"c", "C"}, {"stime", "STIME"},
		{"tname", "TTY"}, {"time", "TIME"}, {"args", "CMD"}}
	psBSDFormat  = []psColumn{{"pid", "PID"}, {"tname", "TTY"}, {"stat", "STAT"}, {"time", "TIME"}, {"args", "COMMAND"}}
	psUserFormat = []psColumn{{"user", "USER"}, {"pid", "PID"}, {"pcpu", "%CPU"}, {"pmem", "%MEM"}, {"vsz", "VSZ"},
		{"rss", "RSS"}, {"tname", "TTY"}, {"stat", "STAT"}, {"start_time", "START"}, {"time", "TIME"}, {"args", "COMMAND"}}
)

const psSupported = "-e, -A, -a, -d, -f, -w, -o FORMAT, --format FORMAT and BSD a, u, x, w, o FORMAT (such as -ef, aux, -o pid,comm)"

func psUnsupported(format string, args ...any) error {
	return errs.New(errdefs.ErrInvalidArgument, "%s: vmctl renders ps's table itself and supports %s", fmt.Sprintf(format, args...), psSupported)
}

// parsePsArgs reads docker top's ps_args (empty: -ef, as dockerd) into the
// columns to render.
func parsePsArgs(psArgs string) ([]psColumn, error) {
	tokens := strings.Fields(psArgs)
	if len(tokens) == 0 {
		return psFullFormat, nil
	}
	var custom []psColumn
	var full, user, bsd bool
	addFormat := func(list string) error {
		cols, err := parsePsFormat(list)
		custom = append(custom, cols...)
		return err
	}
	for i := 0; i < len(tokens); i++ {
		tok := tokens[i]
		next := func(opt string) (string, error) {
			if i+1 == len(tokens) {
				return "", psUnsupported("ps option %s needs a format list", opt)
			}
			i++
			return tokens[i], nil
		}
		switch {
		case strings.HasPrefix(tok, "--"):
			name, value, hasValue := strings.Cut(tok, "=")
			if name != "--format" {
				return nil, psUnsupported("ps option %q is not supported", tok)
			}
			if !hasValue {
				var err error
				if value, err = next(name); err != nil {
					return nil, err
				}
			}
			if err := addFormat(value); err != nil {
				return nil, err
			}
		case strings.HasPrefix(tok, "-"):
			letters := tok[1:]
			if letters == "aux" || letters == "ax" || letters == "au" {
				// procps reads -aux as BSD aux (with a warning).
				bsd, user = true, strings.Contains(letters, "u")
				continue
			}
			if letters == "" {
				return nil, psUnsupported("ps option %q is not supported", tok)
			}
			for j := 0; j < len(letters); j++ {
				switch letters[j] {
				case 'e', 'A', 'a', 'd', 'w':
				case 'f':
					full = true
				case 'o':
					list := letters[j+1:]
					if list == "" {
						var err error
						if list, err = next("-o"); err != nil {
							return nil, err
						}
					}
					if err := addFormat(list); err != nil {
						return nil, err
					}
					j = len(letters)
				default:
					return nil, psUnsupported("ps option -%c (in %q) is not supported", letters[j], tok)
				}
			}
		default:
			bsd = true
			for j := 0; j < len(tok); j++ {
				switch tok[j] {
				case 'a', 'x', 'w':
				case 'u':
					user = true
				case 'o':
					list := tok[j+1:]
					if list == "" {
						var err error
						if list, err = next("o"); err != nil {
							return nil, err
						}
					}
					if err := addFormat(list); err != nil {
						return nil, err
					}
					j = len(tok)
				default:
					return nil, psUnsupported("ps option %c (in %q) is not supported", tok[j], tok)
				}
			}
		}
	}
	switch {
	case custom != nil:
		return custom, nil
	case user:
		return psUserFormat, nil
	case full:
		return psFullFormat, nil
	case bsd:
		return psBSDFormat, nil
	}
	return psDefaultFormat, nil
}

// parsePsFormat reads one -o list: keywords separated by commas; a
// keyword=HEADER takes the rest of the list as its header, as
// in procps.
func parsePsFormat(list string) ([]psColumn, error) {
	var cols []psColumn
	for list != "" {
		var kw string
		kw, list, _ = strings.Cut(list, ",")
		if kw == "" {
			continue
		}
		name, header, renamed := strings.Cut(kw, "=")
		if renamed && list != "" {
			header += "," + list
			list = ""
		}
		k, ok := psKeywords[strings.ToLower(name)]
		if !ok {
			return nil, psUnsupported("ps format keyword %q is not supported (known: %s)", name, strings.Join(psKeywordNames(), ", "))
		}
		if !renamed {
			header = k.header
		}
		cols = append(cols, psColumn{keyword: strings.ToLower(name), header: header})
	}
	if len(cols) == 0 {
		return nil, psUnsupported("an empty ps format list")
	}
	return cols, nil
}

func psKeywordNames() []string {
	names := make([]string, 0, len(psKeywords))
	for k := range psKeywords {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// renderPs is the ps table of procs in cols at now, sorted by the
// container's pids.
func renderPs(cols []psColumn, procs []agent.ProcessInfo, now time.Time, memTotal uint64) TopResult {
	res := TopResult{Titles: make([]string, len(cols)), Processes: [][]string{}}
	for i, c := range cols {
		res.Titles[i] = c.header
	}
	procs = append([]agent.ProcessInfo(nil), procs...)
	sort.SliceStable(procs, func(i, j int) bool { return procs[i].ContainerPid < procs[j].ContainerPid })
	for _, p := range procs {
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = psKeywords[c.keyword].field(p, now, memTotal)
		}
		res.Processes = append(res.Processes, row)
	}
	return res
}

// psNeedsMemory reports whether cols show a share of the machine's memory.
func psNeedsMemory(cols []psColumn) bool {
	for _, c := range cols {
		if c.keyword == "pmem" || c.keyword == "%mem" {
			return true
		}
	}
	return false
}

func psUID(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	return strconv.FormatUint(uint64(p.UID), 10)
}
func psGID(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	return strconv.FormatUint(uint64(p.GID), 10)
}

// psUser is the user's name in the container, or the uid where it has
// none.
func psUser(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	if p.User != "" {
		return p.User
	}
	return strconv.FormatUint(uint64(p.UID), 10)
}

func psComm(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	if p.State == 'Z' {
		return p.Command + " <defunct>"
	}
	return p.Command
}

// psArgs is the command line, or the command name in brackets where there
// is none (a zombie, a process that cleared it).
func psArgs(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	s := strings.Join(p.Args, " ")
	if strings.TrimSpace(s) == "" {
		s = "[" + p.Command + "]"
	}
	if p.State == 'Z' {
		s += " <defunct>"
	}
	return s
}

func psTTY(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	if p.TTY == "" {
		return "?"
	}
	return p.TTY
}

// psStat is ps's STAT: the state, and l for a multi-threaded process.
func psStat(p agent.ProcessInfo, _ time.Time, _ uint64) string {
	s := string(p.State)
	if p.Threads > 1 {
		s += "l"
	}
	return s
}

// psCPUShare is the process's CPU time over its life, in percent.
func psCPUShare(p agent.ProcessInfo, now time.Time) float64 {
	life := now.Sub(p.StartTime)
	if life <= 0 {
		return 0
	}
	return 100 * float64(p.CPUTime) / float64(life)
}

func psPercentCPU(p agent.ProcessInfo, now time.Time, _ uint64) string {
	return strconv.FormatFloat(psCPUShare(p, now), 'f', 1, 64)
}

// psC is ps -f's C: the CPU share as a whole percent, at most 99.
func psC(p agent.ProcessInfo, now time.Time, _ uint64) string {
	return strconv.Itoa(min(int(psCPUShare(p, now)), 99))
}

func psPercentMem(p agent.ProcessInfo, _ time.Time, memTotal uint64) string {
	if memTotal == 0 {
		return "0.0"
	}
	return strconv.FormatFloat(100*float64(p.RSS)/float64(memTotal), 'f', 1, 64)
}

// psSTime is ps's STIME (and START of ps u): the start's time of day if
// today, else its month and day if this year, else its year, in the
// host's time zone as dockerd's ps shows it.
func psSTime(p agent.ProcessInfo, now time.Time, _ uint64) string {
	st, n := p.StartTime.Local(), now.Local()
	switch {
	case st.Year() != n.Year():
		return st.Format("2006")
	case st.YearDay() != n.YearDay():
		return st.Format("Jan02")
	}
	return st.Format("15:04")
}

// psStart is ps's STARTED: the time of day within a day, else the date.
func psStart(p agent.ProcessInfo, now time.Time, _ uint64) string {
	st := p.StartTime.Local()
	if now.Sub(st) < 24*time.Hour {
		return st.Format("15:04:05")
	}
	return st.Format("Jan 02")
}

// psCPUTime is ps's TIME: [DD-]HH:MM:SS.
func psCPUTime(d time.Duration) string {
	s := int64(max(d, 0) / time.Second)
	days, h, m := s/86400, s/3600%24, s/60%60
	if days > 0 {
		return fmt.Sprintf("%d-%02d:%02d:%02d", days, h, m, s%60)
	}
	return fmt.Sprintf("%02d:%02d:%02d", h, m, s%60)
}

// psElapsed is ps's ELAPSED: [[DD-]hh:]mm:ss.
func psElapsed(d time.Duration) string {
	s := int64(max(d, 0) / time.Second)
	days, h, m := s/86400, s/3600%24, s/60%60
	switch {
	case days > 0:
		return fmt.Sprintf("%d-%02d:%02d:%02d", days, h, m, s%60)
	case h > 0:
		return fmt.Sprintf("%02d:%02d:%02d", h, m, s%60)
	}
	return fmt.Sprintf("%02d:%02d", m, s%60)
}

func seconds(d time.Duration) string { return strconv.FormatInt(int64(max(d, 0)/time.Second), 10) }
